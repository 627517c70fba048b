"""Finding evaluation-network weights: a local file, the inbetween cache, or a download; stored as safetensors.

Resolution order for a network's weight file (`load_weights`):

1. an explicit local path (the ``weights=`` argument of ``load_<network>``; LPIPS has two);
2. the cache folder (``$INBETWEEN_CACHE``, default ``~/.cache/inbetween``): ``<stem>.safetensors``, or the original
   pickle ``<stem>.pth`` that a user copied there by hand;
3. a download from the standard URL with ``torch.hub.download_url_to_file``, unless offline (``HF_HUB_OFFLINE=1``).

Pickles (``.pth``, ``.pt``, ``.bin``) are read only with ``torch.load(..., weights_only=True)``, which refuses
arbitrary Python objects, and are converted once to a ``.safetensors`` file in the cache; later loads read only that.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load_file, save_file

Net = TypeVar("Net", bound=torch.nn.Module)
CACHE_ENV = "INBETWEEN_CACHE"
DEFAULT_CACHE = "~/.cache/inbetween"
_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class MissingWeightsError(FileNotFoundError):
    """A network's weights are neither at the given path, nor cached, nor downloadable here."""


@dataclass(frozen=True)
class WeightSource:
    """Where a network's weights come from.

    Attributes:
        network: human-readable network name used in messages, e.g. "FID InceptionV3".
        url: the standard public download URL of the (pickled) state dict.
        hash_prefix: leading hex digits of the file's SHA-256, checked on download when the publisher
            guarantees it (torchvision's file-name convention); None to skip the check.
        argument: the loader argument that takes a local copy of the file, named in error messages.
    """

    network: str
    url: str
    hash_prefix: str | None = None
    argument: str = "weights"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        return Path(self.filename).stem


def cache_dir() -> Path:
    """The weight cache folder: ``$INBETWEEN_CACHE`` if set, else ``~/.cache/inbetween`` (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a truthy value (the same switch huggingface_hub honours)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _tensor_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"`{path}` is not a flat state dict of tensors; save `model.state_dict()` instead.")
    # safetensors refuses shared or strided storage, which pickled state dicts may contain (tied weights, views).
    return {str(k): v.detach().contiguous().clone() for k, v in obj.items()}


def convert_to_safetensors(pickle_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Convert a pickled state dict to safetensors, loading it with ``weights_only=True`` only.

    The file is written next to ``out_path`` and renamed into place, so an interrupted run leaves no half file.
    """
    pickle_path, out_path = Path(pickle_path), Path(out_path)
    state = _tensor_dict(torch.load(pickle_path, map_location="cpu", weights_only=True), pickle_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp), metadata={"converted_from": pickle_path.name})
    os.replace(tmp, out_path)
    return out_path


def _converted_path(pickle_path: Path) -> Path:
    # Keyed by the absolute path (not the content) so the conversion is found again after the pickle is deleted.
    digest = hashlib.sha256(str(pickle_path.expanduser().absolute()).encode()).hexdigest()[:12]
    return cache_dir() / "converted" / f"{pickle_path.stem}-{digest}.safetensors"


def load_weight_file(path: str | os.PathLike, network: str = "network") -> dict[str, torch.Tensor]:
    """State dict of a local weight file: ``.safetensors`` read directly, pickles through the safetensors cache.

    A pickle is converted on first use into ``<cache>/converted/``; later calls read the conversion only, even if
    the pickle has since been deleted, and reconvert only when the pickle is newer than its conversion.

    Raises:
        MissingWeightsError: neither the file nor its cached conversion exists.
    """
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise MissingWeightsError(f"{network} weights file `{path}` not found; pass an existing file.")
        return load_file(str(path))
    converted = _converted_path(path)
    if path.is_file() and (not converted.is_file() or path.stat().st_mtime > converted.stat().st_mtime):
        convert_to_safetensors(path, converted)
    if not converted.is_file():
        raise MissingWeightsError(
            f"{network} weights file `{path}` not found (and no cached conversion); pass an existing file."
        )
    return load_file(str(converted))


def _missing_message(source: WeightSource, reason: str) -> str:
    target = cache_dir() / source.filename
    fetch = f"curl -L --create-dirs -o {shlex.quote(str(target))} {source.url}"
    return (
        f"{source.network} weights not found: not cached in `{cache_dir()}` and {reason}. "
        f"Get them with `{fetch}` on a machine with network (copy the file over if needed), "
        f"pass the file as `{source.argument}=<path>`, or point ${CACHE_ENV} at a folder that holds it."
    )


def _download(source: WeightSource, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        torch.hub.download_url_to_file(source.url, str(tmp), hash_prefix=source.hash_prefix, progress=True)
    except OSError as exc:  # URLError, HTTPError, socket errors: all mean "no network for this URL"
        tmp.unlink(missing_ok=True)
        raise MissingWeightsError(_missing_message(source, f"the download failed ({type(exc).__name__})")) from exc
    os.replace(tmp, target)


def load_weights(source: WeightSource, weights: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The state dict of ``source``: from ``weights`` if given, else the cache, else a download.

    Args:
        source: the network's standard weight file.
        weights: an explicit local file (``.safetensors`` or a pickle); skips the cache lookup and download.

    Returns:
        The state dict with the source file's own key names (CPU tensors).

    Raises:
        MissingWeightsError: offline (or the download failed) and the weights are not cached; the message names
            the network, the URL and the command that provides the file.
    """
    if weights is not None:
        return load_weight_file(weights, source.network)
    cached = cache_dir() / f"{source.stem}.safetensors"
    if cached.is_file():
        return load_file(str(cached))
    pickle_path = cache_dir() / source.filename
    if not pickle_path.is_file():
        if is_offline():
            raise MissingWeightsError(_missing_message(source, "HF_HUB_OFFLINE=1 forbids downloading"))
        _download(source, pickle_path)
    convert_to_safetensors(pickle_path, cached)
    # The safetensors copy is now the cache entry; the pickle would only be a second, unsafe copy.
    pickle_path.unlink()
    return load_file(str(cached))


def hub_file(network: str, repo_id: str, filenames: tuple[str, ...]) -> Path:
    """The first of ``filenames`` available in Hub repo ``repo_id`` (Hub cache first; downloaded unless offline).

    Raises:
        MissingWeightsError: none of the files is cached and none could be downloaded.
    """
    from huggingface_hub import hf_hub_download

    errors = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename))
        except Exception as exc:  # offline, not cached, missing file, gated, unknown repo: try the next candidate
            errors.append(f"{filename}: {type(exc).__name__}")
    raise MissingWeightsError(
        f"{network} weights not found: Hub repo `{repo_id}` is not in the local Hugging Face cache and could not be "
        f"downloaded ({'; '.join(errors)}). Get it with `hf download {repo_id} --include config.json '*.safetensors' "
        "'*.bin'` on a machine with network (then copy ~/.cache/huggingface over), or pass a local folder as "
        "`weights=<folder>`."
    )


def frozen(net: Net, state: Mapping[str, torch.Tensor] | None, device: str | torch.device) -> Net:
    """``net`` with ``state`` loaded strictly (every key must land in a parameter of the same name and shape; ``None``
    keeps its random weights, for tests), in eval mode without gradients, on ``device``: how every metric network is
    handed out."""
    if state is not None:
        net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False).to(device)
