"""What a front end (the CLI, the app) needs to get a model running: the pipeline from a Hub id or folder, the
device, and keyframe checks whose errors name the user's files."""

from __future__ import annotations

import typing

from .errors import one_line
from .hub import SVD_XT, resolve_model_folder

if typing.TYPE_CHECKING:
    import torch
    from PIL import Image

    from .adapter import BackwardAdapter
    from .pipeline import InbetweenPipeline

# Pipeline configs in diffusers' layout; `_weight_files` adds one variant's weights, so a download skips the other
# variant and the Hub repo's single-file checkpoints (several GB each).
PIPELINE_CONFIGS = ["model_index.json", "*/*.json"]


def load_pipeline(model: str, dtype: torch.dtype, variant: str | None) -> InbetweenPipeline:
    """The pipeline from a folder or Hub id (configs and one variant's weights only); a load failure is one line."""
    from .pipeline import InbetweenPipeline

    folder = resolve_model_folder(model, allow_patterns=[*PIPELINE_CONFIGS, *_weight_files(variant)])
    try:
        return InbetweenPipeline.from_pretrained(str(folder), dtype=dtype, variant=variant)
    except (OSError, ValueError, KeyError) as exc:
        wanted = f"a Stable Video Diffusion folder or Hub id like `{SVD_XT}`"
        if variant:
            wanted += f" that has the `{variant}` variant"
        raise ValueError(f"cannot load an SVD pipeline from `{model}` ({one_line(exc)}); pass {wanted}") from exc


def check_cpu_offload(cpu_offload: bool, device: str) -> None:
    if cpu_offload and device != "cuda":
        raise ValueError(f"`--cpu-offload` needs a CUDA GPU (device is {device}); drop it or use `--device cuda`")


def load_on_device(
    model: str,
    dtype: torch.dtype,
    variant: str | None,
    device: str,
    adapter: BackwardAdapter | None = None,
    cpu_offload: bool = False,
    progress: bool = True,
) -> InbetweenPipeline:
    """:func:`load_pipeline`, with ``adapter`` loaded, on ``device`` (or offloaded to the CPU between uses)."""
    check_cpu_offload(cpu_offload, device)
    pipe = load_pipeline(model, dtype=dtype, variant=variant)
    if adapter is not None:
        pipe.load_backward_adapter(adapter)
    if cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe


def _weight_files(variant: str | None) -> list[str]:
    if variant:
        return [f"*/*.{variant}.safetensors", f"*/*.{variant}-*.safetensors"]
    names = ("model", "diffusion_pytorch_model")
    return [pattern for name in names for pattern in (f"*/{name}.safetensors", f"*/{name}-*.safetensors")]


def pick_device(name: str) -> str:
    """``auto`` -> cuda, else mps, else cpu; a named device that is missing is a user error."""
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ValueError(f"`--device {name}` is not available in this torch build or machine; use `--device cpu`")
    return name


def check_keyframe_files(first_path: str, first: Image.Image, last_path: str, last: Image.Image) -> None:
    """The pipeline's keyframe check, with the file names in the error (the pipeline cannot know them)."""
    from .pipeline import InbetweenPipeline

    try:
        InbetweenPipeline.check_keyframes(first, last)
    except ValueError as exc:
        raise ValueError(
            f"keyframes `{first_path}` ({first.width}x{first.height}) and `{last_path}` "
            f"({last.width}x{last.height}): {exc}"
        ) from exc
