"""Wan through the model-family seam, on tiny random Wan components (tests/tiny_wan.py; no Hub).

Forward-only and native first-last-frame sampling equal diffusers' WanImageToVideoPipeline; the dual-directional
samplers equal a naive four-calls-per-step reference with stored, rotated attention maps (tests/wan_reference.py);
sequences and loops put every keyframe at its frame.
"""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import WanImageToVideoPipeline
from tiny_wan import save_tiny_wan, tiny_wan_components
from wan_reference import naive_dual_sample

from inbetween import PRESETS, SamplingConfig
from inbetween.families import check_options_before_loading, family_of, pipeline_class
from inbetween.families.wan import WanInbetweenPipeline, flipped_frame_groups, latent_frames
from inbetween.sequence import interpolate_sequence, sequence_length

SIZE, FRAMES, STEPS = 32, 9, 3
TEXT = dict(prompt="a red ball rolls", negative_prompt="blurry")


def keyframe(seed: int) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def pipes() -> dict[str, WanInbetweenPipeline]:
    made = {}
    for kind in ("wan2.1-i2v", "wan2.1-flf2v", "wan2.2-a14b"):
        made[kind] = WanInbetweenPipeline(**tiny_wan_components(kind))
        made[kind].set_progress_bar_config(disable=True)
    return made


def diffusers_pipe(kind: str) -> WanImageToVideoPipeline:
    pipe = WanImageToVideoPipeline(**tiny_wan_components(kind))  # the same seeded weights, its own copy
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ours(pipe, first, last, guidance: float, output_type: str, latents=None, **options):
    return pipe(
        first,
        last,
        height=SIZE,
        width=SIZE,
        num_frames=FRAMES,
        num_inference_steps=STEPS,
        min_guidance_scale=guidance,
        max_guidance_scale=guidance,
        generator=torch.Generator().manual_seed(0),
        latents=latents,
        output_type=output_type,
        **TEXT,
        **options,
    ).frames


def theirs(pipe, first, last, guidance: float, output_type: str):
    return pipe(
        image=first,
        last_image=last,
        height=SIZE,
        width=SIZE,
        num_frames=FRAMES,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(0),
        output_type=output_type,
        **TEXT,
    ).frames


@pytest.mark.parametrize("guidance", [1.0, 5.0])
@pytest.mark.parametrize("kind", ["wan2.1-i2v", "wan2.2-a14b"])
def test_forward_only_equals_diffusers_wan_pipeline(pipes, kind, guidance):
    first, last = keyframe(0), keyframe(1)
    reference = diffusers_pipe(kind)
    latents = ours(pipes[kind], first, last, guidance, "latent", sampler="forward")  # (1, T', C, h, w)
    expected = theirs(reference, first, None, guidance, "latent")  # (1, C, T', h, w)
    torch.testing.assert_close(latents.transpose(1, 2), expected, rtol=0, atol=1e-5)
    frames = ours(pipes[kind], first, last, guidance, "np", sampler="forward")
    np.testing.assert_allclose(frames, theirs(reference, first, None, guidance, "np"), rtol=0, atol=1e-5)
    assert latents.std() > 0.1  # not a blank video


@pytest.mark.parametrize("guidance", [1.0, 5.0])
@pytest.mark.parametrize("kind", ["wan2.1-flf2v", "wan2.2-a14b"])
def test_native_first_last_frame_equals_diffusers_with_last_image(pipes, kind, guidance):
    first, last = keyframe(0), keyframe(1)
    reference = diffusers_pipe(kind)
    latents = ours(pipes[kind], first, last, guidance, "latent", sampler="native")
    torch.testing.assert_close(
        latents.transpose(1, 2), theirs(reference, first, last, guidance, "latent"), rtol=0, atol=1e-5
    )
    # the last keyframe is really used: another last keyframe, another video
    other = ours(pipes[kind], first, keyframe(2), guidance, "latent", sampler="native")
    assert (other - latents).abs().max() > 1e-3


def test_native_is_refused_by_an_image_to_video_only_model(pipes):
    with pytest.raises(ValueError, match="needs a model trained on first and last frames.*use gi, vibid or trf"):
        ours(pipes["wan2.1-i2v"], keyframe(0), keyframe(1), 1.0, "latent", sampler="native")


@pytest.mark.parametrize("rotation", [True, False])
@pytest.mark.parametrize("guidance", [1.0, 5.0])
@pytest.mark.parametrize("kind", ["wan2.1-i2v", "wan2.2-a14b"])
def test_dual_sampling_equals_the_naive_four_call_reference(pipes, kind, guidance, rotation):
    """Both branches (and both guidance halves) in ONE transformer call with the rotation identity, against four
    calls per step with materialised, stored and rotated attention maps, sampled in flow form."""
    first, last = keyframe(0), keyframe(1)
    config = SamplingConfig(sampler="gi", noise_injection_steps=0, rotation=rotation, fusion="average")
    latents = ours(pipes[kind], first, last, guidance, "latent", config=config)
    reference = diffusers_pipe(kind)
    expected = naive_dual_sample(
        reference,
        first,
        last,
        guidance=guidance,
        rotation=rotation,
        height=SIZE,
        width=SIZE,
        num_frames=FRAMES,
        steps=STEPS,
        generator=torch.Generator().manual_seed(0),
        **TEXT,
    )
    torch.testing.assert_close(latents.transpose(1, 2), expected, rtol=0, atol=2e-5)


def test_rotation_changes_the_backward_branch(pipes):
    first, last = keyframe(0), keyframe(1)
    rotated = ours(pipes["wan2.1-i2v"], first, last, 1.0, "latent", sampler="gi", noise_injection_steps=0)
    own = ours(pipes["wan2.1-i2v"], first, last, 1.0, "latent", sampler="trf", noise_injection_steps=0)
    assert (rotated - own).abs().max() > 1e-3


@pytest.mark.parametrize("preset", ["paper", "fast", "vibid", "vibid-adapter"])
def test_every_preset_runs_on_wan_and_a_seed_gives_one_video(pipes, preset):
    pipe = pipes["wan2.2-a14b"]
    # ViBiD's DDS step pins a latent frame that Wan's causal VAE does not hold alone: refused, and run without it
    dds = dict(keyframe_consistency=False) if PRESETS[preset].get("keyframe_consistency") else {}
    config = SamplingConfig.preset(preset, pipe.default_config(), num_inference_steps=3, height=SIZE, width=SIZE)
    if dds:
        with pytest.raises(ValueError, match="keyframe_consistency.*causal VAE.*drop it"):
            pipe(keyframe(0), keyframe(1), config, num_frames=FRAMES, **TEXT)
        config = config.with_options(**dds)

    def run(seed: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        return pipe(
            keyframe(0), keyframe(1), config, num_frames=FRAMES, generator=generator, output_type="np", **TEXT
        ).frames

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (1, FRAMES, SIZE, SIZE, 3) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_the_flip_of_the_causal_vae_is_stated_and_measured(pipes):
    """Latent frame 0 holds pixel frame 0 alone, the others four each; flipped, the backward branch's groups cover
    frames shifted by three against the forward ones (sharing one frame each), which the fusion accepts."""
    own, backward = flipped_frame_groups(9)
    assert [list(g) for g in own] == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert [list(g) for g in backward] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    for count in (5, 9, 13, 81):
        own, backward = flipped_frame_groups(count)
        assert len(own) == len(backward) == latent_frames(count, 4)
        assert sorted(f for g in own for f in g) == sorted(f for g in backward for f in g) == list(range(count))
    # The VAE: the first latent frame of a video is its first frame encoded alone (what keyframe_latents uses), and
    # the latents of the reversed video are not the flipped latents of the video (the flip is an approximation).
    vae = pipes["wan2.1-i2v"].vae
    video = torch.rand(1, 3, 9, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = vae.encode(video).latent_dist.mode()
    alone = vae.encode(video[:, :, :1]).latent_dist.mode()
    torch.testing.assert_close(latents[:, :, :1], alone, rtol=0, atol=1e-5)
    reversed_latents = vae.encode(video.flip(2)).latent_dist.mode()
    assert (reversed_latents - latents.flip(2)).abs().max() > 1e-3


def test_a_three_keyframe_sequence_and_a_loop_put_each_keyframe_at_its_frame(pipes):
    pipe = pipes["wan2.1-i2v"]
    keyframes = [keyframe(0), keyframe(1), keyframe(2)]
    config = SamplingConfig.preset("fast", pipe.default_config(), exact_ends=True, num_inference_steps=3)
    for loop in (False, True):
        frames = interpolate_sequence(
            pipe,
            keyframes,
            config,
            loop=loop,
            num_frames=FRAMES,
            height=SIZE,
            width=SIZE,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
            **TEXT,
        )
        assert frames.shape == (sequence_length(3, FRAMES, loop), SIZE, SIZE, 3)
        for index, image in enumerate(keyframes):
            np.testing.assert_allclose(frames[index * (FRAMES - 1)], np.asarray(image) / 255.0, atol=1e-6)


def test_sizes_and_frame_counts_follow_the_models_rules(pipes):
    pipe = pipes["wan2.1-i2v"]
    with pytest.raises(ValueError, match=r"`num_frames` must be 4k \+ 1 .* got 10; try 9 or 13"):
        pipe(keyframe(0), keyframe(1), num_frames=10, height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match=r"`height` must be a positive multiple of 16, got 50; try 48"):
        pipe(keyframe(0), keyframe(1), num_frames=FRAMES, height=50, width=SIZE)
    with pytest.raises(ValueError, match="takes no text prompt"):
        check_options_before_loading("tiny-world", SamplingConfig(prompt="a cat"))
    with pytest.raises(ValueError, match="needs a model trained on first and last frames"):
        check_options_before_loading("tiny-world", SamplingConfig(sampler="native"))


def test_a_saved_tiny_wan_folder_is_recognised_and_loads_through_its_family(tmp_path, pipes):
    folder = save_tiny_wan(tmp_path / "wan", "wan2.2-a14b")
    assert family_of(folder) == "wan"
    loaded = pipeline_class(family_of(folder)).from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded, WanInbetweenPipeline) and loaded.config.boundary_ratio is not None
    a = ours(loaded, keyframe(0), keyframe(1), 5.0, "latent", sampler="gi")
    b = ours(pipes["wan2.2-a14b"], keyframe(0), keyframe(1), 5.0, "latent", sampler="gi")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # memory-mapped weights take other CPU kernels


def test_a_call_that_cannot_fit_is_refused_before_it_allocates(pipes, monkeypatch):
    import inbetween.memory.available as available

    monkeypatch.setattr(available, "available_memory", lambda device=None: 1024)
    pipe = pipes["wan2.1-i2v"]
    with pytest.raises(ValueError, match=r"needs about .* rows x .* tokens.*split_guidance_batch.*allow_oversize"):
        ours(pipe, keyframe(0), keyframe(1), 5.0, "latent", sampler="gi")
    assert ours(pipe, keyframe(0), keyframe(1), 5.0, "latent", sampler="gi", allow_oversize=True).shape[1] == 3


def test_the_memory_estimate_grows_with_rows_and_size_and_shrinks_with_offload(pipes):
    from dataclasses import replace as with_

    config = SamplingConfig(sampler="gi", height=SIZE, width=SIZE, num_frames=FRAMES, min_guidance_scale=5.0)
    shape = pipes["wan2.2-a14b"].memory_shape(config, batch_size=1)
    assert shape.rows == 4 and shape.tokens == 3 * 2 * 2
    split = pipes["wan2.2-a14b"].memory_shape(config.with_options(split_guidance_batch=True), batch_size=1)
    assert split.rows == 2
    activations = shape.estimate().transformer_bytes
    assert with_(shape, rows=8).estimate().transformer_bytes == 2 * activations
    assert with_(shape, height=4 * SIZE, width=4 * SIZE).estimate().transformer_bytes > 16 * activations
    assert with_(shape, height=4 * SIZE).estimate().decode_bytes > shape.estimate().decode_bytes
    none, model, group = (with_(shape, offload=o).estimate().weight_bytes for o in ("none", "model", "group"))
    assert none == sum(shape.weights.values()) > model == max(shape.weights.values()) >= group  # 2 blocks: all


def test_several_pairs_in_one_call_equal_each_pair_alone(pipes):
    """B pairs in one call: each pair's conditioning (the FLF2V image tokens come in pairs per row) and noise are
    its own."""
    pipe = pipes["wan2.1-flf2v"]
    noise = torch.randn(2, *pipe.latent_shape(SamplingConfig(num_frames=FRAMES, height=SIZE, width=SIZE), 1)[1:])
    firsts, lasts = [keyframe(0), keyframe(2)], [keyframe(1), keyframe(3)]
    for sampler in ("native", "gi"):
        options = dict(sampler=sampler, noise_injection_steps=0)
        together = ours(pipe, firsts, lasts, 5.0, "latent", latents=noise, **options)
        for index in range(2):
            alone = ours(pipe, firsts[index], lasts[index], 5.0, "latent", latents=noise[index : index + 1], **options)
            torch.testing.assert_close(together[index : index + 1], alone, rtol=0, atol=1e-5)


def test_the_estimate_knows_group_offload():
    pipe = WanInbetweenPipeline(**tiny_wan_components("wan2.1-i2v"))
    config = SamplingConfig(sampler="gi", height=SIZE, width=SIZE, num_frames=FRAMES)
    assert pipe.memory_shape(config, 1).offload == "none"
    pipe.enable_group_offload(torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1)
    assert pipe.memory_shape(config, 1).offload == "group"
