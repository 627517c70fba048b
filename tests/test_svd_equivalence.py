"""The forward-only pipeline IS Stable Video Diffusion: diffusers' own `StableVideoDiffusionPipeline` as the oracle.

The naive reference (tests/reference.py) shares the project's encoders, so it cannot catch a conditioning that
differs from SVD's; these tests run diffusers' pipeline itself on the same tiny components and initial noise.
"""

import PIL.Image
import pytest
import torch
from conftest import random_keyframe
from diffusers import StableVideoDiffusionPipeline
from tiny import tiny_components

from inbetween import InbetweenPipeline
from inbetween.pipeline import center_crop_to_aspect

STEPS = 4
SIZE = 64  # output; the keyframes are 96x96, so both pipelines must resize them


def both_pipelines(num_frames: int) -> tuple[InbetweenPipeline, StableVideoDiffusionPipeline]:
    # SVD's pipeline resizes for CLIP to a hard-coded 224x224: the tiny encoder takes that size.
    components = tiny_components(num_frames, clip_image_size=224)
    ours, svd = InbetweenPipeline(**components), StableVideoDiffusionPipeline(**components)
    for pipe in (ours, svd):
        pipe.set_progress_bar_config(disable=True)
    return ours, svd


def run_both(ours, svd, first: PIL.Image.Image, num_frames: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    latents = torch.randn((1, num_frames, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(5))
    common = dict(height=SIZE, width=SIZE, num_frames=num_frames, num_inference_steps=STEPS, latents=latents)
    common.update(kwargs)
    mine = ours(
        first,
        random_keyframe(1, (96, 96)),  # the last keyframe: unused by the forward branch
        fusion="forward",
        noise_injection_steps=0,
        generator=torch.Generator().manual_seed(1),
        **common,
    ).frames
    theirs = svd(first, generator=torch.Generator().manual_seed(1), **common).frames
    return mine, theirs


@pytest.mark.parametrize(
    "num_frames, max_guidance_scale, noise_aug_strength",
    [(8, 3.0, 0.0), (8, 1.0, 0.0), (14, 3.0, 0.0), (14, 1.0, 0.0), (8, 3.0, 0.02), (14, 1.0, 0.02)],
    ids=["8-cfg", "8-no-cfg", "14-cfg", "14-no-cfg", "8-cfg-aug", "14-no-cfg-aug"],
)
def test_forward_only_equals_diffusers_svd(num_frames, max_guidance_scale, noise_aug_strength):
    ours, svd = both_pipelines(num_frames)
    mine, theirs = run_both(
        ours,
        svd,
        random_keyframe(0, (96, 96)),
        num_frames,
        min_guidance_scale=1.0,
        max_guidance_scale=max_guidance_scale,
        noise_aug_strength=noise_aug_strength,
        output_type="latent",
    )
    assert mine.shape == theirs.shape == (1, num_frames, 4, SIZE // 8, SIZE // 8)
    assert theirs.abs().max() > 1.0  # a real video latent, not a degenerate one
    assert (mine - theirs).abs().max().item() <= 1e-4


def test_decoded_frames_equal_diffusers_svd():
    ours, svd = both_pipelines(8)
    mine, theirs = run_both(ours, svd, random_keyframe(0, (96, 96)), 8, decode_chunk_size=3, output_type="pt")
    assert mine.shape == theirs.shape == (1, 8, 3, SIZE, SIZE)
    assert (mine - theirs).abs().max().item() <= 1e-4


def test_clip_input_is_the_keyframe_at_its_own_resolution():
    """A 128x96 keyframe for a square video: CLIP sees the centre 96x96 crop of the keyframe itself, resized by
    SVD's anti-aliased resize, not the 64x64 VAE input."""
    ours, svd = both_pipelines(8)
    wide = random_keyframe(3, (128, 96))
    clip_first, clip_last = ours.clip_keyframes([wide, wide], SIZE, SIZE)
    assert clip_first.shape == (1, 3, 96, 96)
    crop = wide.crop((16, 0, 112, 96))
    expected = svd._encode_image(crop, "cpu", 1, False)  # diffusers' SVD embedding of that crop
    torch.testing.assert_close(ours.encode_image_embeddings([clip_first]), expected, rtol=0, atol=1e-6)
    from_vae_input = ours.encode_image_embeddings(ours.preprocess_keyframes(wide, SIZE, SIZE))
    assert (from_vae_input - expected).abs().max() > 1e-3  # the old path (resize of the resized) differs


def test_center_crop_to_aspect_keeps_the_middle():
    image = torch.arange(4 * 6, dtype=torch.float32).view(1, 1, 4, 6)
    assert center_crop_to_aspect(image, 1.0).equal(image[..., :, 1:5])
    assert center_crop_to_aspect(image, 3.0).equal(image[..., 1:3, :])
    assert center_crop_to_aspect(image, 1.5).equal(image)


def test_clip_embedding_is_differentiable_and_batched():
    ours, _ = both_pipelines(8)
    images = torch.rand(2, 3, 40, 56, requires_grad=True)
    embeddings = ours.encode_image_embeddings(images * 2 - 1)
    assert embeddings.shape == (2, 1, ours.image_encoder.config.projection_dim)
    embeddings.square().sum().backward()
    assert images.grad.abs().sum() > 0
    assert all(p.grad is not None for p in ours.image_encoder.parameters() if p.requires_grad)
