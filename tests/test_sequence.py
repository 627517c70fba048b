"""Keyframe sequences and loops (inbetween.sequence): shared boundary frames, frame counts, chunks, bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import random_keyframe

from inbetween import memory
from inbetween.config import SamplingConfig
from inbetween.sampling import BranchEstimates, gaussian_noise, sample
from inbetween.sequence import (
    interpolate_sequence,
    join_segments,
    keyframe_positions,
    plan_chunks,
    sample_segment_latents,
    segment_joins,
    sequence_length,
    shared_frame_coupling,
)

# 64x64 keyframes (8x8 latents), 5-frame segments, 3 steps with one re-injection on the first: fast on one core.
FAST = dict(height=64, width=64, num_frames=5, num_inference_steps=3, noise_injection_steps=1)


@pytest.fixture(scope="module")
def frames() -> list:
    return [random_keyframe(seed) for seed in range(4)]


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the coupling, with every sampler, on a denoiser whose estimates differ per segment --------------------------


class RecordingDenoiser:
    """A branch denoiser ``(S, N, C, h, w)`` whose estimates depend on the whole segment and differ per segment and
    branch (so unshared copies of a frame drift apart); records every ``x`` it is asked about."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        segments, frames = shape[:2]
        self.weights = {
            (branch, conditional): (
                torch.rand(segments, frames, 1, 1, 1, generator=g) + 0.5,
                torch.randn(shape[:3] + (1, 1), generator=g),
            )
            for branch in ("forward", "backward")
            for conditional in (True, False)
        }
        self.seen: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, branches: tuple[str, ...]) -> BranchEstimates:
        self.seen.append(x.clone())
        scaled = x / (sigma**2 + 1) ** 0.5

        def estimate(branch: str, conditional: bool) -> torch.Tensor:
            a, c = self.weights[branch, conditional]
            return torch.tanh(a * scaled + 0.5 * scaled.mean(dim=1, keepdim=True) + c)

        return BranchEstimates(
            cond={b: estimate(b, True) for b in branches}, uncond={b: estimate(b, False) for b in branches}
        )


SAMPLERS = {
    "gi": SamplingConfig(),
    "gi dpmpp-2m, guided": SamplingConfig(solver="dpmpp-2m", min_guidance_scale=1.5, max_guidance_scale=2.5),
    "gi linear": SamplingConfig(fusion="linear"),
    "poe": SamplingConfig(fusion="poe"),
    "vibid preset (CFG++, DDS)": SamplingConfig.preset("vibid"),
    "vibid plain": SamplingConfig(sampler="vibid"),
    "forward": SamplingConfig(sampler="forward"),
}
SIGMAS = torch.tensor([20.0, 6.0, 2.0, 0.6, 0.15, 0.0])


def run_sampler(config: SamplingConfig, coupling, loop: bool, seed: int = 0):
    """Sample 3 segments of 4 frames with the fake denoiser; returns the denoiser (what it saw) and the result."""
    config = replace(config, noise_injection_steps=2, noise_injection_ratio=0.5)
    shape = (3, 4, 2, 3, 3)
    model = RecordingDenoiser(shape, seed)
    noise = gaussian_noise(generator(seed), coupling)
    x = noise(torch.empty(shape)) * SIGMAS[0]
    keyframes = torch.randn(4, *shape[2:], generator=generator(seed + 1))
    ends = torch.cat([keyframes[1:3], keyframes[:1]]) if loop else keyframes[1:]
    keyframe_latents = torch.stack([keyframes[:3], ends], 1)  # (S, 2, C, h, w): the same latent at both copies
    share = coupling.share if coupling is not None else (lambda d: d)
    result = sample(config, model, x, SIGMAS, noise=noise, share=share, keyframe_latents=keyframe_latents)
    return model, result


@pytest.mark.parametrize("loop", [False, True], ids=["chain", "loop"])
@pytest.mark.parametrize("config", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_boundary_copies_are_bit_equal_at_every_evaluation(config: SamplingConfig, loop: bool) -> None:
    joins = segment_joins(3, loop)
    model, result = run_sampler(config, shared_frame_coupling(joins), loop)
    assert len(model.seen) >= len(SIGMAS) - 1
    for x in [*model.seen, result]:  # every noise level the sampler visits, re-injections and half-steps included
        for a, b in joins:
            assert torch.equal(x[a, -1], x[b, 0])
    # The control: without the coupling the same sampler's copies drift apart, so the check above can fail.
    _, independent = run_sampler(config, None, loop)
    assert min((independent[a, -1] - independent[b, 0]).abs().max() for a, b in joins) > 1e-2


@pytest.mark.parametrize("config", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_a_pinned_frame_lands_on_its_latent_at_the_sampler_noise_levels(config: SamplingConfig) -> None:
    latent = torch.randn(2, 3, 3, generator=generator(5))
    coupling = shared_frame_coupling(segment_joins(3, False), pins=[(0, 0, latent)])
    model, result = run_sampler(config, coupling, loop=False)
    torch.testing.assert_close(result[0, 0], latent, atol=1e-5, rtol=0)
    # Its x keeps the sampler's noise level: at the first evaluation as noisy as the free frames, not clean.
    first = model.seen[0]
    assert (first[0, 0] - latent).std() > 0.3 * first[1, 1:].std()


# --- the pieces -------------------------------------------------------------------------------------------------


def test_frame_count_rule() -> None:
    assert sequence_length(2, 25) == 25
    assert sequence_length(4, 8) == 22
    assert sequence_length(3, 5, loop=True) == 12
    assert keyframe_positions(4, 8) == [0, 7, 14, 21]
    segments = torch.arange(3 * 4).view(3, 4)  # frame labels: segment s, frame f -> 4 s + f
    assert join_segments(segments).tolist() == [0, 1, 2, 3, 5, 6, 7, 9, 10, 11]
    assert join_segments(segments, loop=True).tolist() == [0, 1, 2, 3, 5, 6, 7, 9, 10]
    assert segment_joins(3, loop=True) == [(0, 1), (1, 2), (2, 0)]
    assert plan_chunks(5, 2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert plan_chunks(5, None) == [range(0, 5)]


# --- the pipeline -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "loop"), [(3, False), (4, False), (2, True), (3, True)])
def test_frame_counts_and_shared_boundaries_through_the_pipeline(tiny_pipe, frames, count: int, loop: bool) -> None:
    keyframes = frames[:count]
    config = tiny_pipe.sampling_config(keyframes[0], **FAST)
    segments = sample_segment_latents(tiny_pipe, keyframes, config, loop=loop, generator=generator())
    assert segments.shape[:2] == (count if loop else count - 1, 5)
    for a, b in segment_joins(len(segments), loop):
        assert torch.equal(segments[a, -1], segments[b, 0])
    video = interpolate_sequence(tiny_pipe, keyframes, loop=loop, generator=generator(), output_type="np", **FAST)
    assert video.shape == (sequence_length(count, 5, loop), 64, 64, 3)
    latents = interpolate_sequence(
        tiny_pipe, keyframes, loop=loop, generator=generator(), output_type="latent", **FAST
    )
    torch.testing.assert_close(latents, join_segments(segments, loop), atol=0, rtol=0)
    # Decoded as one video: each frame once, in the pipeline's chunks of `decode_chunk_size` across the joins.
    with torch.no_grad():
        decoded = tiny_pipe.decode_latents(latents.unsqueeze(0), config.decode_chunk_size)
    expected = tiny_pipe.video_processor.postprocess_video(video=decoded, output_type="np")[0]
    np.testing.assert_allclose(video, expected, atol=1e-6, rtol=0)


def test_joint_sampling_is_the_independent_batch_tied_at_the_joins(tiny_pipe, frames) -> None:
    """Same seed, same draws: without the coupling the boundary copies differ; with it every step keeps them equal."""
    config = tiny_pipe.sampling_config(frames[0], **FAST)
    firsts, lasts = frames[:3], frames[1:4]
    steps: list[torch.Tensor] = []

    def record(pipe, step, sigma, tensors):
        steps.append(tensors["latents"].clone())
        return None

    coupling = shared_frame_coupling(segment_joins(3, False))
    joint = tiny_pipe.sample_latents(
        firsts, lasts, config, generator=generator(), coupling=coupling, callback_on_step_end=record
    )
    independent = tiny_pipe.sample_latents(firsts, lasts, config, generator=generator())
    assert len(steps) == FAST["num_inference_steps"]
    for x in [*steps, joint]:
        assert torch.equal(x[0, -1], x[1, 0]) and torch.equal(x[1, -1], x[2, 0])
    assert (independent[0, -1] - independent[1, 0]).abs().mean() > 0.05
    # Away from the joins the two runs start from the same noise: the middle frames differ only through the join.
    assert not torch.equal(joint, independent)


def test_two_keyframes_are_the_pipeline_call(tiny_pipe, frames) -> None:
    video = interpolate_sequence(tiny_pipe, frames[:2], generator=generator(3), output_type="np", **FAST)
    expected = tiny_pipe(frames[0], frames[1], generator=generator(3), output_type="np", **FAST).frames[0]
    np.testing.assert_array_equal(video, expected)


@pytest.mark.parametrize("loop", [False, True], ids=["chain", "loop"])
def test_chunks_continue_from_the_previous_chunk(tiny_pipe, frames, loop: bool) -> None:
    config = tiny_pipe.sampling_config(frames[0], **FAST)
    whole = sample_segment_latents(tiny_pipe, frames, config, loop=loop, generator=generator())
    one_chunk = sample_segment_latents(tiny_pipe, frames, config, loop=loop, generator=generator(), segment_batch=9)
    torch.testing.assert_close(one_chunk, whole, atol=0, rtol=0)
    chunked = sample_segment_latents(tiny_pipe, frames, config, loop=loop, generator=generator(), segment_batch=1)
    for a, b in segment_joins(len(chunked), loop):  # each chunk ends where the next begins, to rounding
        torch.testing.assert_close(chunked[b, 0], chunked[a, -1], atol=1e-5, rtol=0)
    independent = tiny_pipe.sample_latents(frames[:3], frames[1:], config, generator=generator())
    assert (independent[0, -1] - independent[1, 0]).abs().max() > 100 * 1e-5
    video = interpolate_sequence(
        tiny_pipe, frames, loop=loop, generator=generator(), segment_batch=2, output_type="np", **FAST
    )
    assert video.shape[0] == sequence_length(4, 5, loop)


def test_the_memory_check_is_that_of_one_chunk(tiny_pipe, frames, monkeypatch) -> None:
    """With memory for one segment's call but not for three, the joint call is refused and one chunk runs."""
    config = tiny_pipe.sampling_config(frames[0], **FAST)
    one = memory.check_pipeline_call(tiny_pipe, config, 1, "np", allow_oversize=True).peak_bytes
    three = memory.check_pipeline_call(tiny_pipe, config, 3, "np", allow_oversize=True).peak_bytes
    assert three > one
    monkeypatch.setattr(memory.check, "available_memory", lambda device=None: int((one + three) / 2 / memory.MARGIN))
    with pytest.raises(ValueError, match="this call needs"):
        interpolate_sequence(tiny_pipe, frames, generator=generator(), output_type="np", **FAST)
    video = interpolate_sequence(tiny_pipe, frames, generator=generator(), segment_batch=1, output_type="np", **FAST)
    assert video.shape[0] == sequence_length(4, 5)


def test_tensor_keyframes_work_like_images(tiny_pipe, frames) -> None:
    tensors = torch.stack([torch.from_numpy(np.array(f)).permute(2, 0, 1).float() / 255 for f in frames[:3]])
    video = interpolate_sequence(tiny_pipe, tensors, loop=True, generator=generator(), output_type="pt", **FAST)
    assert video.shape == (sequence_length(3, 5, loop=True), 3, 64, 64)


# --- bad input --------------------------------------------------------------------------------------------------


def test_bad_sequences_are_refused_before_sampling(tiny_pipe, frames, monkeypatch) -> None:
    def must_not_sample(*args, **kwargs):
        raise AssertionError("sampled before the keyframes were checked")

    monkeypatch.setattr(type(tiny_pipe), "sample_latents", must_not_sample)
    wide = random_keyframe(9, size=(96, 64))
    cases = [
        (frames[:1], {}, "at least 2 keyframes, got 1"),
        ([frames[0], frames[1], wide], {}, "keyframes 0 and 2: the keyframes have different aspect ratios"),
        ([frames[0], frames[1], frames[0].copy()], {"loop": True}, "the last keyframe is the first one again"),
        (frames[:3], {"segment_batch": 0}, "`segment_batch` must be at least 1"),
    ]
    for keyframes, extra, message in cases:
        with pytest.raises(ValueError, match=message):
            interpolate_sequence(tiny_pipe, keyframes, generator=generator(), **FAST, **extra)


# --- keyframe-exact ends ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", [False, True], ids=["chain", "loop"])
@pytest.mark.parametrize("config", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_exact_ends_land_every_sampler_on_the_keyframe_latents(config: SamplingConfig, loop: bool) -> None:
    joins = segment_joins(3, loop)
    coupling = shared_frame_coupling(joins)
    model, result = run_sampler(replace(config, exact_ends=True), coupling, loop)
    keyframes = torch.randn(4, *result.shape[2:], generator=generator(1))  # run_sampler's keyframe latents
    ends = torch.cat([keyframes[1:3], keyframes[:1]]) if loop else keyframes[1:]
    # The last update lands on its estimate, up to float rounding of x - (x - D).
    torch.testing.assert_close(result[:, 0], keyframes[:3], atol=1e-6, rtol=0)
    torch.testing.assert_close(result[:, -1], ends, atol=1e-6, rtol=0)
    for x in [*model.seen, result]:  # the joins stay one frame
        for a, b in joins:
            assert torch.equal(x[a, -1], x[b, 0])
    # The control: without the option the same sampler's ends miss the keyframes.
    _, free = run_sampler(config, coupling, loop)
    assert (free[:, 0] - keyframes[:3]).abs().max() > 1e-2


def test_exact_ends_need_the_keyframe_latents() -> None:
    x = torch.zeros(1, 4, 2, 3, 3)
    with pytest.raises(ValueError, match="`exact_ends` needs the keyframes' latents"):
        sample(SamplingConfig(exact_ends=True), lambda *a: None, x, SIGMAS, noise=gaussian_noise(generator()))


@pytest.mark.parametrize("count, loop", [(2, False), (3, False), (3, True)])
def test_exact_ends_write_the_keyframes_pixels_at_their_frames(tiny_pipe, frames, count: int, loop: bool) -> None:
    keyframes = frames[:count]
    options = dict(FAST, exact_ends=True)
    video = interpolate_sequence(tiny_pipe, keyframes, loop=loop, generator=generator(), output_type="pt", **options)
    config = tiny_pipe.sampling_config(keyframes[0], **options)
    expected = (tiny_pipe.preprocess_keyframes(keyframes, config.height, config.width) + 1) / 2  # (n, 3, H, W)
    positions = keyframe_positions(count, config.num_frames)
    assert torch.allclose(video[positions], expected.clamp(0, 1), atol=1e-6)
    # The decoder alone does not reproduce them (what the option fixes); the in-between frames are the same
    # sampling's with the ends held.
    plain = interpolate_sequence(tiny_pipe, keyframes, loop=loop, generator=generator(), output_type="pt", **FAST)
    assert (plain[positions] - expected).abs().max() > 1e-2
