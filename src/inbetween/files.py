"""Writing outputs safely: never a partial file or folder, never an unasked overwrite."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_sibling(target: Path, tag: str = "tmp") -> Path:
    """A hidden name beside ``target``: same folder so the final rename stays on one filesystem, the real
    name last so encoders that pick a format from the suffix still work."""
    return target.with_name(f".{tag}-{secrets.token_hex(6)}.{target.name}")


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"`{path}` already exists; pass --overwrite (overwrite=True) to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder `{path.parent}` for `{path}` does not exist; create it first")


@contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success it is renamed onto ``path``.

    On error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    _check_target(path, overwrite)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it takes the place of ``path``.

    ``rename`` cannot replace a non-empty folder, so an existing one is moved aside, the new one
    moved in, then the old one deleted; on error the old folder is put back.
    """
    path = Path(path)
    _check_target(path, overwrite)
    tmp = temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
            return
        old = temporary_sibling(path, "old")
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        old.unlink() if old.is_symlink() else shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, document: object) -> None:
    """Write ``document`` as indented JSON, atomically (:func:`atomic_output`, replacing ``path``), creating the
    folder: a reader never sees half a file, so its presence can mark work as done."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
