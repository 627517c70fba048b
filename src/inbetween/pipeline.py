"""The SVD family's pipeline under its historical import path (``from inbetween.pipeline import
InbetweenPipeline``); the code lives in :mod:`inbetween.families.svd` and :mod:`inbetween.families.base`."""

from .families.base import InbetweenPipelineOutput, with_frames
from .families.svd import (
    ADAPTER_FILE,
    ASPECT_TOLERANCE,
    DEFAULT_LONG_SIDE,
    OUTPUT_TYPES,
    SIZE_MULTIPLE,
    CLIPImageProcessor,
    InbetweenPipeline,
    KeyframeConditioning,
    center_crop_to_aspect,
    clip_image_embeddings,
    size_rules,
)

__all__ = [
    "ADAPTER_FILE",
    "ASPECT_TOLERANCE",
    "CLIPImageProcessor",
    "DEFAULT_LONG_SIDE",
    "InbetweenPipeline",
    "InbetweenPipelineOutput",
    "KeyframeConditioning",
    "OUTPUT_TYPES",
    "SIZE_MULTIPLE",
    "center_crop_to_aspect",
    "clip_image_embeddings",
    "size_rules",
    "with_frames",
]
