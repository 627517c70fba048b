"""inbetween: the video between two keyframes with Stable Video Diffusion (Generative Inbetweening, ICLR 2025).

The public names are imported on first use, so that ``inbetween --help`` (and anything else that needs no model)
starts without loading torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_PUBLIC = {
    "BackwardAdapter": "adapter",
    "convert_full_unet_checkpoint": "adapter",
    "RotatedTemporalAttnProcessor": "attention",
    "dual_mode": "attention",
    "install_rotation": "attention",
    "remove_rotation": "attention",
    "InbetweenPipeline": "pipeline",
    "InbetweenPipelineOutput": "pipeline",
    "SamplingConfig": "config",
}
__all__ = [
    "BackwardAdapter",
    "InbetweenPipeline",
    "InbetweenPipelineOutput",
    "RotatedTemporalAttnProcessor",
    "SamplingConfig",
    "convert_full_unet_checkpoint",
    "dual_mode",
    "install_rotation",
    "remove_rotation",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports them
    from .adapter import BackwardAdapter, convert_full_unet_checkpoint
    from .attention import RotatedTemporalAttnProcessor, dual_mode, install_rotation, remove_rotation
    from .config import SamplingConfig
    from .pipeline import InbetweenPipeline, InbetweenPipelineOutput


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
