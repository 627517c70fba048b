"""inbetween: the video between keyframes with image-to-video models, Stable Video Diffusion and Wan 2.1 / 2.2
(Generative Inbetweening, ICLR 2025).

The public API is ``__all__``: the pipeline and its configs, sequences, the backward adapter, training, evaluation
and batch rendering, the names the front ends (``cli``, ``app``, ``comfyui``, ``batch``) use to do their work. The
front ends also use the support modules ``options``, ``errors``, ``files``, ``hub``, ``loading``, ``dtypes``,
``video_io``, ``memory``, ``toyworld``, ``families`` (the model families: which pipeline a folder needs, each
family's size rules and defaults), ``model_config`` and ``progress`` directly (``tests/test_public_api.py`` holds
both to this).

The public names are imported on first use, so that ``inbetween --help`` (and anything else that needs no model)
starts without loading torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Where each name of __all__ is defined, for the lazy imports below (tests/test_public_api.py keeps the two equal).
_PUBLIC = {
    "BackwardAdapter": "adapter",
    "convert_full_unet_checkpoint": "adapter",
    "RotatedTemporalAttnProcessor": "attention",
    "dual_mode": "attention",
    "install_rotation": "attention",
    "remove_rotation": "attention",
    "BatchConfig": "batch",
    "render_batch": "batch",
    "DTYPE_NAMES": "config",
    "PRESETS": "config",
    "SamplingConfig": "config",
    "EvalConfig": "evaluation.harness",
    "ModelConfig": "model_config",
    "WanInbetweenPipeline": "families.wan",
    "evaluate": "evaluation.harness",
    "DEFAULT_LONG_SIDE": "pipeline",
    "InbetweenPipeline": "pipeline",
    "InbetweenPipelineOutput": "pipeline",
    "SIZE_MULTIPLE": "pipeline",
    "size_rules": "pipeline",
    "interpolate_sequence": "sequence",
    "keyframe_positions": "sequence",
    "plan_chunks": "sequence",
    "same_image": "sequence",
    "TrainConfig": "training",
    "train_backward": "training",
}
__all__ = [
    "BackwardAdapter",
    "BatchConfig",
    "convert_full_unet_checkpoint",
    "DEFAULT_LONG_SIDE",
    "DTYPE_NAMES",
    "dual_mode",
    "EvalConfig",
    "evaluate",
    "InbetweenPipeline",
    "InbetweenPipelineOutput",
    "install_rotation",
    "ModelConfig",
    "interpolate_sequence",
    "keyframe_positions",
    "plan_chunks",
    "PRESETS",
    "remove_rotation",
    "render_batch",
    "RotatedTemporalAttnProcessor",
    "same_image",
    "SamplingConfig",
    "SIZE_MULTIPLE",
    "size_rules",
    "train_backward",
    "TrainConfig",
    "WanInbetweenPipeline",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports them
    from .adapter import BackwardAdapter, convert_full_unet_checkpoint
    from .attention import RotatedTemporalAttnProcessor, dual_mode, install_rotation, remove_rotation
    from .batch import BatchConfig, render_batch
    from .config import DTYPE_NAMES, PRESETS, SamplingConfig
    from .evaluation.harness import EvalConfig, evaluate
    from .families.wan import WanInbetweenPipeline
    from .model_config import ModelConfig
    from .pipeline import DEFAULT_LONG_SIDE, SIZE_MULTIPLE, InbetweenPipeline, InbetweenPipelineOutput, size_rules
    from .sequence import interpolate_sequence, keyframe_positions, plan_chunks, same_image
    from .training import TrainConfig, train_backward


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
