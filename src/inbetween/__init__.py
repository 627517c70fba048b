"""inbetween: the video between two keyframes with Stable Video Diffusion (Generative Inbetweening, ICLR 2025)."""

from .adapter import BackwardAdapter, convert_full_unet_checkpoint
from .attention import RotatedTemporalAttnProcessor, dual_mode, install_rotation, remove_rotation
from .pipeline import InbetweenPipeline, InbetweenPipelineOutput

__all__ = [
    "BackwardAdapter",
    "InbetweenPipeline",
    "InbetweenPipelineOutput",
    "RotatedTemporalAttnProcessor",
    "convert_full_unet_checkpoint",
    "dual_mode",
    "install_rotation",
    "remove_rotation",
]
__version__ = "0.1.0"
