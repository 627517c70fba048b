"""The samplers (gi, vibid, trf, forward), their solvers, fusions and presets: against closed forms, hand-computed
steps, a naive ViBiD reference on the tiny pipeline, and the request counts that price them."""

import copy
import math
from collections import Counter
from dataclasses import replace

import pytest
import torch
from conftest import random_adapter, random_keyframe
from diffusers import EulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor
from reference import NaiveInbetween, evaluations_per_video, sample_euler_with_reinjection
from tiny import SVD_SCHEDULER_CONFIG

from inbetween.cli import build_parser
from inbetween.config import BACKWARD, FORWARD, PRESETS, SamplingConfig
from inbetween.cost import largest_request, requests_per_video, unet_rows_per_video
from inbetween.evaluation.harness import METHODS
from inbetween.sampling import (
    BranchEstimates,
    branch_guidance_scales,
    gaussian_noise,
    make_fused_denoiser,
    sample,
)
from inbetween.toyworld.candidates import sampler_candidates

# A Gaussian data distribution N(MU, SD^2) per element: its denoiser and probability-flow ODE are closed form,
# D(x, sigma) = MU + SD^2 / (SD^2 + sigma^2) (x - MU) and x(sigma) = MU + (x(sigma_0) - MU) sqrt(SD^2 + sigma^2) /
# sqrt(SD^2 + sigma_0^2).
MU, SD = 0.3, 0.5
NO_GUIDANCE = dict(min_guidance_scale=1.0, max_guidance_scale=1.0)


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return MU + SD**2 / (SD**2 + sigma**2) * (x - MU)


def gaussian_model(x, sigma, branches):
    """Both branches (and their unconditional estimates) are the same Gaussian: every sampler targets it."""
    d = gaussian_denoiser(x, sigma)
    return BranchEstimates(cond={b: d for b in branches}, uncond={b: d for b in branches})


def svd_sigmas(steps: int, dtype=torch.float64) -> torch.Tensor:
    scheduler = EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.to(dtype)


def start(shape=(1, 3, 2, 4, 4), seed=0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def noise_from(seed: int):
    return gaussian_noise(torch.Generator().manual_seed(seed))


# solvers -----------------------------------------------------------------------------------------


def ode_error(solver: str, steps: int) -> float:
    sigmas = svd_sigmas(steps)
    x = start() * sigmas[0]
    exact = MU + (x - MU) * SD / (SD**2 + sigmas[0] ** 2) ** 0.5
    config = SamplingConfig(solver=solver, noise_injection_steps=0, **NO_GUIDANCE)
    out = sample(config, gaussian_model, x, sigmas, noise=noise_from(0))
    return (out - exact).abs().max().item()


@pytest.mark.parametrize("solver", ["dpmpp-2m", "dpmpp-2s"])
def test_second_order_solvers_converge_faster_than_euler_on_a_gaussian(solver):
    steps = (20, 40, 80)
    euler = [ode_error("euler", n) for n in steps]
    second = [ode_error(solver, n) for n in steps]
    order = lambda errors: [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]  # noqa: E731
    # Doubling the steps halves a first-order error and quarters a second-order one; 1.5 separates the two.
    assert all(o < 1.5 for o in order(euler)), order(euler)
    assert all(o > 1.5 for o in order(second)), order(second)
    assert all(s < e for s, e in zip(second, euler, strict=True))


def test_vibid_with_the_second_order_solver_samples_a_gaussian_closer_than_with_euler():
    # Both branches agree, so each half-step moves the true marginal to sigma_next and the re-noising back to sigma:
    # the samples' spread tends to SD as the steps shrink; the second-order half-steps get nearer at 25 steps.
    x = start((8, 5, 2, 16, 16)) * svd_sigmas(25)[0]
    spread = {}
    for solver in ("euler", "dpmpp-2s"):
        config = SamplingConfig(sampler="vibid", solver=solver, noise_injection_steps=0, **NO_GUIDANCE)
        out = sample(config, gaussian_model, x, svd_sigmas(25), noise=noise_from(1))
        spread[solver] = out.std().item()
        assert abs(out.mean().item() - MU) < 0.02  # 20480 samples: the mean's standard error is 0.0035
    assert abs(spread["dpmpp-2s"] - SD) < abs(spread["euler"] - SD) / 2, spread


def test_vibid_refuses_the_multistep_solver():
    with pytest.raises(ValueError, match="`solver` dpmpp-2m .* vibid"):
        SamplingConfig(sampler="vibid", solver="dpmpp-2m")


# what each sampler asks for ----------------------------------------------------------------------


class CountingModel:
    """A branch denoiser that records every request and returns distinct estimates per branch; unconditional ones
    only when the config is guided (a sampler reading one it did not ask for fails)."""

    def __init__(self, guided: bool):
        self.guided = guided
        self.requests: list[tuple[str, ...]] = []

    def __call__(self, x, sigma, branches):
        self.requests.append(tuple(branches))
        cond = {b: 0.9 * x + (0.1 if b == FORWARD else -0.1) for b in branches}
        uncond = {b: 0.8 * x for b in branches} if self.guided else {}
        return BranchEstimates(cond=cond, uncond=uncond)


def small(config: SamplingConfig) -> SamplingConfig:
    """``config`` at 5 steps: the same structure, quick."""
    return replace(config, num_inference_steps=5)


def keyframe_latents(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.full_like(x[:, 0], 2.0), torch.full_like(x[:, 0], -2.0)], 1)


@pytest.mark.parametrize("name", list(sampler_candidates()))
def test_requests_are_what_the_cost_counts(name):
    config = small(sampler_candidates()[name])
    model = CountingModel(config.guided)
    x = start((1, 4, 2, 3, 3), dtype=torch.float32) * 10
    sigmas = svd_sigmas(config.num_inference_steps, torch.float32)
    sample(config, model, x, sigmas, noise=noise_from(0), keyframe_latents=keyframe_latents(x))
    assert Counter(model.requests) == Counter(requests_per_video(config))
    if config.sampler == "vibid":  # each half-step asks for its own branch only, forward first
        assert model.requests[0] == (FORWARD,) and all(len(request) == 1 for request in model.requests)


@pytest.mark.parametrize("name", ["paper", "fast", "vibid", "vibid-adapter", "forward", "poe g=1"])
def test_every_estimate_goes_through_share_and_every_draw_through_noise(name):
    x = start((1, 4, 2, 3, 3), dtype=torch.float32) * 10
    sigmas = svd_sigmas(5, torch.float32)
    config = small(sampler_candidates()[name])
    shared, draws = [], []

    def share(d):
        shared.append(d.shape)
        return torch.full_like(d, 0.25)  # what the update must use

    def noise(like):
        draws.append(like.shape)
        return torch.zeros_like(like)

    rng = torch.get_rng_state()
    model = CountingModel(config.guided)
    out = sample(config, model, x, sigmas, noise=noise, share=share, keyframe_latents=keyframe_latents(x))
    assert torch.equal(torch.get_rng_state(), rng)  # no global draw
    per_request = 2 if config.sampler == "vibid" and config.cfg_pp else 1  # CFG++ shares the unconditional too
    assert len(shared) == per_request * evaluations_per_video(config)
    if not (config.keyframe_consistency or config.exact_ends):
        assert torch.equal(out, torch.full_like(x, 0.25))  # the last step lands on the shared estimate
    steps, injected = config.num_inference_steps, int(config.noise_injection_ratio * config.num_inference_steps)
    redone = 0 if config.sampler == FORWARD else injected * config.noise_injection_steps
    renoised = steps + redone if config.sampler == "vibid" else 0  # vibid re-noises once per step
    assert len(draws) == redone + renoised


def test_gi_is_the_fused_euler_with_reinjection_bit_for_bit():
    config = SamplingConfig(num_inference_steps=6, noise_injection_steps=2)
    x = start((1, 5, 2, 3, 3), dtype=torch.float32) * 80
    sigmas = svd_sigmas(6, torch.float32)
    model = CountingModel(guided=True)
    ours = sample(config, model, x, sigmas, noise=noise_from(3))
    fused = make_fused_denoiser(model, config, 5, lambda d: d)
    reference = sample_euler_with_reinjection(fused, x, sigmas, noise=noise_from(3), noise_injection_steps=2)
    assert torch.equal(ours, reference)


def test_forward_sampler_is_the_forward_branch_alone_without_reinjection():
    x = start((1, 5, 2, 3, 3), dtype=torch.float32) * 80
    sigmas = svd_sigmas(5, torch.float32)
    forward = SamplingConfig(sampler="forward", noise_injection_steps=5)
    assert forward.fusion == FORWARD and not forward.uses_backward
    plain = SamplingConfig(fusion="forward", noise_injection_steps=0)
    a = sample(forward, CountingModel(True), x, sigmas, noise=noise_from(0))
    b = sample(plain, CountingModel(True), x, sigmas, noise=noise_from(0))
    assert torch.equal(a, b)


def test_trf_is_gi_with_the_backward_branch_unrotated():
    assert not SamplingConfig(sampler="trf").rotation
    with pytest.raises(ValueError, match="`rotation` True contradicts `sampler` 'trf'"):
        SamplingConfig(sampler="trf", rotation=True)


# fusions and guidance -----------------------------------------------------------------------------


def constant_estimates(num_frames: int) -> BranchEstimates:
    frames = lambda v: torch.full((1, num_frames, 1), v)  # noqa: E731
    return BranchEstimates(
        cond={FORWARD: frames(3.0), BACKWARD: frames(5.0)}, uncond={FORWARD: frames(1.0), BACKWARD: frames(2.0)}
    )


def test_product_of_experts_adds_both_experts_less_the_unconditional():
    estimates = constant_estimates(5)
    config = SamplingConfig(fusion="poe", **NO_GUIDANCE)
    assert config.guided  # PoE needs the unconditional rows even with guidance off
    denoise = make_fused_denoiser(lambda x, s, b: estimates, config, 5, lambda d: d)
    u = (1.0 + 2.0) / 2
    torch.testing.assert_close(denoise(torch.zeros(1, 5, 1), torch.tensor(1.0)), torch.full((1, 5, 1), 3.0 + 5.0 - u))
    guided = replace(config, min_guidance_scale=2.0, max_guidance_scale=2.0)  # symmetric ramp: 2 at every frame
    denoise = make_fused_denoiser(lambda x, s, b: estimates, guided, 5, lambda d: d)
    expected = u + 2.0 * (3.0 - u) + 2.0 * (5.0 - u)
    torch.testing.assert_close(denoise(torch.zeros(1, 5, 1), torch.tensor(1.0)), torch.full((1, 5, 1), expected))


def test_guidance_ramps():
    g_f, g_b = branch_guidance_scales(SamplingConfig(fusion="linear", guidance_ramp="svd"), 5)
    torch.testing.assert_close(g_f, torch.linspace(1, 3, 5))
    torch.testing.assert_close(g_b, torch.linspace(3, 1, 5))  # its own ramp, seen in forward time
    g_f, g_b = branch_guidance_scales(SamplingConfig(), 5)  # average fusion: the paper's symmetric scale
    torch.testing.assert_close(g_f, torch.full((5,), 2.0))
    torch.testing.assert_close(g_b, torch.full((5,), 2.0))
    g_f, g_b = branch_guidance_scales(SamplingConfig(fusion="poe", guidance_ramp="weighted"), 5)
    torch.testing.assert_close(g_f, torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0]))  # 2 w x 2
    torch.testing.assert_close(g_b, g_f.flip(0))
    g_f, g_b = branch_guidance_scales(SamplingConfig(sampler="vibid", min_guidance_scale=1.5), 3)
    torch.testing.assert_close(g_f, torch.tensor([1.5, 2.25, 3.0]))  # vibid does not average: own ramps


# vibid by hand -------------------------------------------------------------------------------------


def test_one_vibid_step_by_hand():
    """Forward half-step with CFG++ and DDS, re-noise to sigma, backward half-step, written out."""
    x = start((1, 4, 1, 2, 2), dtype=torch.float64)
    sigmas = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)
    keys = keyframe_latents(x)
    config = SamplingConfig(
        sampler="vibid", cfg_pp=True, keyframe_consistency=True, noise_injection_steps=0, **NO_GUIDANCE
    )
    model = CountingModel(guided=True)
    kicks = []

    def noise(like):
        kicks.append(torch.full_like(like, 0.5))
        return kicks[-1]

    seen = []
    sample(config, model, x, sigmas, noise=noise, callback=lambda i, s, x: seen.append(x), keyframe_latents=keys)
    d_f = 0.9 * x + 0.1
    d_f[:, -1] = keys[:, 1]  # DDS: the forward half's far end is the last keyframe
    x_half = d_f + 0.5 * (x - 0.8 * x)  # CFG++: sigma_next / sigma times the unconditional direction
    x_back = x_half + 0.5 * (2.0**2 - 1.0**2) ** 0.5
    d_b = 0.9 * x_back - 0.1
    d_b[:, 0] = keys[:, 0]
    torch.testing.assert_close(seen[0], d_b + 0.5 * (x_back - 0.8 * x_back))
    assert torch.equal(seen[-1][:, 0], keys[:, 0])  # the last half-step lands on its estimate: frame 0 is the key


# presets and candidates ----------------------------------------------------------------------------


def test_presets():
    assert SamplingConfig.preset("paper") == SamplingConfig()  # today's defaults are the paper's
    paper = unet_rows_per_video(SamplingConfig.preset("paper"))
    assert paper == 700  # 50 steps + 25 x 5 re-injections = 175 evaluations of 4 rows
    assert unet_rows_per_video(SamplingConfig.preset("fast")) <= paper / 4
    cheaper = sampler_candidates()["fast, 15 steps"]  # 15 + 7 evaluations of 4 rows
    assert unet_rows_per_video(cheaper) <= paper / 7 and cheaper.guided and cheaper.fusion == "poe"
    vibid, adapter = SamplingConfig.preset("vibid"), SamplingConfig.preset("vibid-adapter")
    assert vibid.sampler == "vibid" and vibid.cfg_pp and vibid.keyframe_consistency and not vibid.rotation
    assert adapter.rotation and unet_rows_per_video(adapter) > unet_rows_per_video(vibid)  # rotated: forward rows
    kept = SamplingConfig.preset("fast", SamplingConfig(height=64, width=64), num_frames=9)
    assert (kept.height, kept.num_frames, kept.solver) == (64, 9, PRESETS["fast"]["solver"])
    with pytest.raises(ValueError, match="unknown preset 'quick'; the presets are paper, fast"):
        SamplingConfig.preset("quick")


def test_cli_preset_sets_defaults_that_typed_flags_override():
    parse = build_parser().parse_args
    base = ["interpolate", "a.png", "b.png", "-o", "o.mp4"]
    fast = parse([*base, "--preset", "fast"])
    assert (fast.num_inference_steps, fast.solver) == (PRESETS["fast"]["num_inference_steps"], "dpmpp-2m")
    for order in (["--steps", "7", "--preset", "vibid"], ["--preset", "vibid", "--steps", "7"]):
        args = parse([*base, *order, "--rotation"])
        assert (args.num_inference_steps, args.sampler, args.rotation) == (7, "vibid", True)
    evaluate = parse(["evaluate", "--data", "d", "--out", "o", "--preset", "vibid"])
    assert evaluate.sampler == "vibid" and evaluate.rotation  # evaluate's methods choose their rotation
    toy = parse(["toyworld", "evaluate", "--preset", "fast"])
    assert toy.num_inference_steps == PRESETS["fast"]["num_inference_steps"]
    assert toy.max_guidance_scale == PRESETS["fast"]["max_guidance_scale"]  # a preset's guidance wins over the world's
    assert parse(["demo", "--sampler", "vibid"]).sampler == "vibid"


def test_evaluation_has_a_method_per_sampler_and_preset():
    assert {"gi", "gi-fast", "gi-poe", "trf", "forward", "vibid", "vibid-adapter"} <= set(METHODS)
    assert METHODS["vibid-adapter"].needs_adapter and not METHODS["vibid"].needs_adapter


# the real pipeline ---------------------------------------------------------------------------------

PIPE = dict(height=64, width=64, num_frames=8, output_type="latent")


@pytest.fixture(scope="module")
def adapted_pipe(tiny_pipe):
    pipe = copy.deepcopy(tiny_pipe)
    adapter = random_adapter(pipe.unet)
    pipe.load_backward_adapter(adapter)
    return pipe, adapter


def count_unet_rows(pipe) -> list[int]:
    rows = []
    pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    return rows


@pytest.mark.parametrize(
    "options",
    [
        dict(PRESETS["fast"], num_inference_steps=3),
        dict(PRESETS["vibid"], num_inference_steps=3),
        dict(PRESETS["vibid-adapter"], num_inference_steps=3),
        dict(PRESETS["vibid-adapter"], num_inference_steps=3, split_guidance_batch=True),
        dict(fusion="poe", num_inference_steps=2, noise_injection_steps=1, **NO_GUIDANCE),
        dict(sampler="forward", num_inference_steps=3),
        dict(PRESETS["fast"], num_inference_steps=3, shared_unconditional=True),
        dict(PRESETS["vibid-adapter"], num_inference_steps=3, shared_unconditional=True),
    ],
    ids=[
        "fast",
        "vibid",
        "vibid-adapter",
        "vibid-adapter-split",
        "poe-unguided",
        "forward",
        "fast-shared",
        "vibid-a-shared",
    ],
)
def test_pipeline_unet_rows_are_what_the_cost_counts(tiny_pipe, keyframes, options):
    pipe = copy.deepcopy(tiny_pipe)
    rows = count_unet_rows(pipe)
    config = SamplingConfig(**options)
    pipe(*keyframes, config, generator=torch.manual_seed(0), **PIPE)
    assert sum(rows) == unet_rows_per_video(config)
    # The memory check plans the denoise stage for the largest call: it is the largest the pipeline makes.
    assert max(rows) == max(len(call) for call in largest_request(config).calls)


def test_a_shared_unconditional_row_costs_three_quarters_and_changes_the_video(adapted_pipe, keyframes):
    pipe, _ = adapted_pipe
    fast = SamplingConfig.preset("fast", num_inference_steps=3)
    shared = replace(fast, shared_unconditional=True)
    assert unet_rows_per_video(shared) * 4 == unet_rows_per_video(fast) * 3
    videos = [pipe(*keyframes, c, generator=torch.manual_seed(0), **PIPE).frames for c in (fast, shared)]
    assert (videos[0] - videos[1]).abs().max() > 1e-3  # the random adapter's unconditional rows differ


class NaiveViBiD(NaiveInbetween):
    """ViBiD written out from the authors' algorithm on the naive two-UNet reference: forward UNet on x (stores its
    maps), CFG++ update with the DDS frame replaced, re-noise, FLIP the video, backward UNet (with rotation it reads
    the maps a forward UNet pass on the re-noised video stored; without, it is the base model), update, flip back."""

    def __call__(self, first_image, last_image, *, height, width, num_frames, num_inference_steps, rotation,
                 generator, min_guidance_scale=1.0, max_guidance_scale=1.0):  # fmt: skip
        pipe = self.pipe
        first = pipe.preprocess_keyframes(first_image, height, width)
        last = pipe.preprocess_keyframes(last_image, height, width)
        images = torch.cat([first, last])
        emb = pipe.encode_image_embeddings(
            pipe.clip_keyframes(first_image, height, width) + pipe.clip_keyframes(last_image, height, width)
        )
        aug = randn_tensor(images.shape, generator=generator, dtype=images.dtype)
        lat = pipe.encode_image_latents(images + 0.02 * aug)
        zero = torch.zeros_like
        emb_f, emb_l = torch.cat([zero(emb[:1]), emb[:1]]), torch.cat([zero(emb[1:]), emb[1:]])
        lat_f, lat_l = torch.cat([zero(lat[:1]), lat[:1]]), torch.cat([zero(lat[1:]), lat[1:]])
        time_ids = torch.tensor([[6, 127, 0.02]]).repeat(2, 1)
        key_first, key_last = pipe.encode_image_latents(images) * pipe.vae.config.scaling_factor
        pipe.scheduler.set_timesteps(num_inference_steps)
        sigmas = pipe.scheduler.sigmas.float()
        shape = (1, num_frames, 4, height // 8, width // 8)
        x = randn_tensor(shape, generator=generator, dtype=torch.float32) * pipe.scheduler.init_noise_sigma
        ramp = torch.linspace(min_guidance_scale, max_guidance_scale, num_frames).view(1, -1, 1, 1, 1)

        def half_step(unet, x, sigma, sigma_next, emb, lat, far_key):
            v_u, v_c = self.unet_v(unet, x, sigma, emb, lat, time_ids).chunk(2)
            c_skip, c_out = 1 / (sigma**2 + 1), -sigma / (sigma**2 + 1) ** 0.5
            d_u, d_c = c_skip * x + c_out * v_u, c_skip * x + c_out * v_c
            d = d_u + ramp * (d_c - d_u)
            d[:, -1] = far_key  # DDS: the far end (the last frame in this branch's own time) is the other keyframe
            return d + sigma_next / sigma * (x - d_u)  # CFG++

        for i in range(num_inference_steps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            self.store.clear()
            x = half_step(self.forward_unet, x, sigma, sigma_next, emb_f, lat_f, key_last)
            x = x + randn_tensor(shape, generator=generator, dtype=x.dtype) * (sigma**2 - sigma_next**2) ** 0.5
            if rotation:  # the backward branch attends with the forward branch's maps on this same video
                self.store.clear()
                self.unet_v(self.forward_unet, x, sigma, emb_f, lat_f, time_ids)
            unet = self.backward_unet if rotation else self.forward_unet
            x = half_step(unet, x.flip(1), sigma, sigma_next, emb_l, lat_l, key_first).flip(1)
        return x


@pytest.mark.parametrize("rotation", [False, True], ids=["authors-vibid", "vibid-adapter"])
def test_vibid_pipeline_matches_a_naive_reference(adapted_pipe, tiny_pipe, keyframes, rotation):
    pipe, adapter = adapted_pipe if rotation else (tiny_pipe, None)
    ramp = dict(min_guidance_scale=1.0, max_guidance_scale=1.5)  # a per-frame ramp, in each branch's own time
    preset = "vibid-adapter" if rotation else "vibid"
    config = SamplingConfig.preset(preset, num_inference_steps=4, **ramp)
    ours = pipe(*keyframes, config, generator=torch.manual_seed(0), **PIPE).frames
    naive = NaiveViBiD(pipe, adapter)(
        *keyframes, height=64, width=64, num_frames=8, num_inference_steps=4, rotation=rotation,
        generator=torch.manual_seed(0), **ramp,
    )  # fmt: skip
    assert (ours - naive).abs().max().item() <= 1e-4
    gi = pipe(*keyframes, SamplingConfig(num_inference_steps=4), generator=torch.manual_seed(0), **PIPE).frames
    assert (ours - gi).abs().max() > 1e-2  # a different sampler, not the same video


def test_vibid_without_its_keyframe_latents_is_refused():
    x = start((1, 4, 1, 2, 2), dtype=torch.float32)
    config = SamplingConfig(sampler="vibid", keyframe_consistency=True)
    with pytest.raises(ValueError, match="`keyframe_consistency` needs the keyframes' latents"):
        sample(config, CountingModel(True), x, svd_sigmas(2, torch.float32), noise=noise_from(0))


def test_pipeline_samplers_are_seeded(tiny_pipe):
    first, last = random_keyframe(3), random_keyframe(4)
    config = SamplingConfig.preset("vibid", num_inference_steps=3)
    a = tiny_pipe(first, last, config, generator=torch.manual_seed(5), **PIPE).frames
    b = tiny_pipe(first, last, config, generator=torch.manual_seed(5), **PIPE).frames
    c = tiny_pipe(first, last, config, generator=torch.manual_seed(6), **PIPE).frames
    assert torch.equal(a, b) and (a - c).abs().max() > 1e-3


@pytest.mark.parametrize(
    "name", ["paper", "fast", "vibid-adapter", "forward", "gi at fast's steps, dpmpp-2s, 13 steps"]
)
def test_exact_ends_change_nothing_but_the_two_end_frames(name):
    """Keyframe-exact ends hold nothing during sampling: the in-between frames are the free sampler's bit for
    bit, and the end frames are the keyframes' latents exactly (docs/tiny_world/exact_ends: a hold inside sampling cost
    keyframe consistency on both exact-denoiser worlds)."""
    config = small(sampler_candidates()[name])
    x = start((2, 5, 2, 3, 3), dtype=torch.float32) * 80

    def mixing_model(x, sigma, branches):  # every frame's estimate reads every frame: a held end would show
        estimates = CountingModel(config.guided)(x, sigma, branches)
        mix = 0.05 * x.mean(1, keepdim=True)
        return BranchEstimates(
            cond={b: d + mix for b, d in estimates.cond.items()},
            uncond={b: d + mix for b, d in estimates.uncond.items()},
        )

    sigmas, keyframes = svd_sigmas(config.num_inference_steps, torch.float32), keyframe_latents(x)
    runs = {
        exact_ends: sample(
            replace(config, exact_ends=exact_ends), mixing_model, x, sigmas, noise=noise_from(1),
            keyframe_latents=keyframes,  # vibid's DDS reads them too
        )
        for exact_ends in (False, True)
    }  # fmt: skip
    free, exact = runs[False], runs[True]
    assert torch.equal(exact[:, 1:-1], free[:, 1:-1])
    assert torch.equal(exact[:, 0], keyframes[:, 0]) and torch.equal(exact[:, -1], keyframes[:, 1])
    if not config.keyframe_consistency:  # the control (vibid's DDS lands its ends by itself)
        assert not torch.allclose(free[:, 0], keyframes[:, 0])
