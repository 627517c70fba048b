"""What a front end (the CLI, the app, batch, evaluation, ComfyUI) needs to get a model running: the device it asked
for, the pipeline of a :class:`~inbetween.model_config.ModelConfig` on it, and keyframe checks whose errors name the
user's files. Every front end loads through :func:`load_pipeline`."""

from __future__ import annotations

import typing
from pathlib import Path

from .errors import one_line
from .hub import SVD_XT, WAN_I2V_480P, pipeline_allow_patterns, resolve_model_folder
from .model_config import ModelConfig, check_cpu_offload

if typing.TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from PIL import Image

    from .adapter import BackwardAdapter
    from .pipeline import InbetweenPipeline


def pipeline_class_for(folder: Path) -> type[InbetweenPipeline]:
    """The pipeline class that runs the model in ``folder`` (its local folder, whose ``model_index.json`` names what
    it is, :func:`inbetween.families.family_of`): the one place a model family is chosen."""
    from .families import family_of, pipeline_class

    return pipeline_class(family_of(folder))


def pick_device(name: str, accelerator: Accelerator | None = None) -> str:
    """The device ``name`` (a :class:`ModelConfig` ``device``) stands for on this machine: ``auto`` -> cuda (a
    launched process: its own GPU, ``accelerator.device``), else mps, else cpu; a named device this machine or torch
    build lacks is a user error."""
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        if cuda:
            return str(accelerator.device) if accelerator is not None else "cuda"
        return "mps" if mps else "cpu"
    kind, _, index = name.partition(":")
    missing = (kind == "cuda" and not (cuda and int(index or 0) < torch.cuda.device_count())) or (
        kind == "mps" and not mps
    )
    if missing:
        raise ValueError(f"`device` {name} is not available in this torch build or machine; pass `device` auto or cpu")
    return name


def model_device(config: ModelConfig, accelerator: Accelerator | None = None) -> str:
    """:func:`pick_device` of ``config``, checked against its CPU offload: what every front end asks before any
    work, so a machine without the device fails at once, in one line."""
    device = pick_device(config.device, accelerator)
    check_cpu_offload(config.cpu_offload or config.group_offload, device)
    return device


def job_accelerator(config: ModelConfig) -> Accelerator:
    """The accelerate state of a job that may be launched over processes (batch, evaluate): on CUDA when the model
    runs there (each process its own GPU), else CPU processes, whose barriers claim no accelerator."""
    import torch
    from accelerate import Accelerator

    on_cuda = config.device == "auto" or config.device.startswith("cuda")
    return Accelerator(cpu=not (on_cuda and torch.cuda.is_available()))


def load_pipeline(
    config: ModelConfig,
    device: str | torch.device | None = None,
    adapter: BackwardAdapter | None = None,
    progress: bool = True,
) -> InbetweenPipeline:
    """The pipeline of ``config`` on its device (``device``: already picked by :func:`model_device`), or offloaded
    to the CPU between uses, with its adapter loaded (``adapter``: ``config.adapter`` already read); the Hub
    download takes the configs and one variant's weights only. A missing folder, adapter or weights is one line
    saying how to get them."""
    import torch

    from .adapter import BackwardAdapter
    from .dtypes import model_dtype

    device = model_device(config) if device is None else device
    if adapter is None and config.adapter:
        adapter = BackwardAdapter.load(config.adapter)
    dtype = model_dtype(config.dtype, device)
    pipe = _from_pretrained(config.model, dtype, config.variant)
    if adapter is not None:
        pipe.load_backward_adapter(adapter)
    if config.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    elif config.group_offload:  # one block of each model on the GPU at a time
        pipe.enable_group_offload(torch.device(device), offload_type="block_level", num_blocks_per_group=1)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=not progress)
    return pipe


def _from_pretrained(model: str, dtype: torch.dtype, variant: str | None) -> InbetweenPipeline:
    folder = resolve_model_folder(model, allow_patterns=pipeline_allow_patterns(variant))
    cls = pipeline_class_for(folder)
    try:
        return cls.from_pretrained(str(folder), dtype=dtype, variant=variant)
    except (OSError, ValueError, KeyError) as exc:
        if cls.family == "wan":
            raise ValueError(
                f"cannot load a Wan pipeline from `{model}` ({one_line(exc)}); pass a Wan image-to-video folder in "
                f"diffusers' layout or a Hub id like `{WAN_I2V_480P}`"
                + (f" with the `{variant}` variant" if variant else "")
            ) from exc
        wanted = f"a Stable Video Diffusion folder or Hub id like `{SVD_XT}`"
        if variant:
            wanted += f" that has the `{variant}` variant"
        raise ValueError(f"cannot load an SVD pipeline from `{model}` ({one_line(exc)}); pass {wanted}") from exc


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
