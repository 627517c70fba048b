"""Tiny random SVD components, seeded, built from configs the way diffusers' own tests do."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from inbetween.hub import SVD_SCHEDULER_CONFIG
from inbetween.pipeline import CLIPImageProcessor


def tiny_unet(num_frames: int = 8, block_out_channels: tuple[int, int] = (32, 64)) -> UNetSpatioTemporalConditionModel:
    torch.manual_seed(0)
    return UNetSpatioTemporalConditionModel(
        block_out_channels=block_out_channels,
        layers_per_block=2,
        sample_size=32,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=(2, 4),
        projection_class_embeddings_input_dim=96,
        addition_time_embed_dim=32,
        num_frames=num_frames,
    )


def tiny_components(num_frames: int = 8, clip_image_size: int = 32) -> dict:
    """``clip_image_size=224`` gives an encoder of SVD's input size, which diffusers' own SVD pipeline needs."""
    unet = tiny_unet(num_frames)
    torch.manual_seed(0)
    # Four blocks give SVD's 8x downsampling, so 64x64 keyframes make 8x8 latents.
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        latent_channels=4,
    )
    torch.manual_seed(0)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=clip_image_size,
            intermediate_size=37,
            patch_size=clip_image_size // 8,
        )
    )
    feature_extractor = CLIPImageProcessor(crop_size=32, size=32)
    return dict(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG),
        feature_extractor=feature_extractor,
    )


def save_tiny_svd(folder: Path, num_frames: int = 8) -> Path:
    """Save tiny components in SVD's folder layout, as diffusers' StableVideoDiffusionPipeline writes it."""
    StableVideoDiffusionPipeline(**tiny_components(num_frames)).save_pretrained(folder)
    return folder


# CLI flags for tiny models: 64x64 keyframes, 3-frame segments, 2 steps, about a second a run on one CPU core.
FAST_CLI = ["--height", "64", "--width", "64", "--num-frames", "3", "--steps", "2", "--noise-injection-steps", "1"]
