"""Writing outputs safely: never a partial file, never an unasked overwrite."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The temporary name keeps the real suffix last so encoders that pick a format from the
    name still work. On error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"`{path}` already exists; pass --overwrite (overwrite=True) to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder `{path.parent}` for `{path}` does not exist; create it first")
    tmp = path.with_name(f".tmp-{secrets.token_hex(4)}.{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
