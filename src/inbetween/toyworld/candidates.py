"""The sampling the tiny world runs, and the sampler candidates its experiments judge side by side (the table of
``inbetween toyworld samplers``, ``bench/samplers.py``)."""

from __future__ import annotations

from dataclasses import replace

from ..config import FAST_STEPS, FORWARD, PRESETS, UNIT_GUIDANCE, SamplingConfig

DEMO_PAIRS = 2  # pairs on the demo's sheet: examples (the held-out table is the evidence), at 2/3 of 3 pairs' time

# The tiny world's sampling (inbetween.toyworld): few steps, no guidance, the paper's re-injection.
TINY_WORLD_SAMPLING = SamplingConfig(num_inference_steps=10, **UNIT_GUIDANCE)


def sampler_candidates(base: SamplingConfig | None = None) -> dict[str, SamplingConfig]:
    """Every sampler, preset and fusion candidate to judge side by side (the exact-denoiser world's table), by name,
    over ``base`` (default: the paper's config): the presets; the paper's sampler without re-injection; the per-frame
    linear fusion; the product of experts, plain (g = 1) and guided over a few scales and ramps, with and without
    re-injection; the solver alone (Euler at fast's steps); ViBiD without its options; plain image-to-video."""
    base = base or SamplingConfig()
    paper = SamplingConfig.preset("paper", base)
    candidates = {name: SamplingConfig.preset(name, base) for name in PRESETS}
    variants = {
        "paper, no re-injection": dict(noise_injection_steps=0),
        "gi linear": dict(fusion="linear"),
        "gi linear, no re-injection": dict(fusion="linear", noise_injection_steps=0),
        "poe g=1": dict(fusion="poe", min_guidance_scale=1.0, max_guidance_scale=1.0),
        "poe g=1, no re-injection": dict(
            fusion="poe", min_guidance_scale=1.0, max_guidance_scale=1.0, noise_injection_steps=0
        ),
        "poe g=1.5": dict(fusion="poe", min_guidance_scale=1.5, max_guidance_scale=1.5),
        "poe g=1->2 svd ramp": dict(fusion="poe", min_guidance_scale=1.0, max_guidance_scale=2.0, guidance_ramp="svd"),
        "poe g=1 weighted": dict(
            fusion="poe", min_guidance_scale=1.0, max_guidance_scale=1.0, guidance_ramp="weighted"
        ),
        "poe g=1.5 weighted": dict(
            fusion="poe", min_guidance_scale=1.5, max_guidance_scale=1.5, guidance_ramp="weighted"
        ),
        "gi at fast's steps": FAST_STEPS,
        "gi at fast's steps, euler": dict(FAST_STEPS, solver="euler"),
        "gi at fast's steps, no re-injection": dict(FAST_STEPS, noise_injection_steps=0),
        "poe g=1 at fast's steps": dict(FAST_STEPS, fusion="poe", min_guidance_scale=1.0, max_guidance_scale=1.0),
        "fast, no re-injection": dict(PRESETS["fast"], noise_injection_steps=0),
        # Cheaper than fast: one unconditional row for both branches (exact here, where the fine-tuned backward
        # model's unconditional videos are the forward model's), fewer re-injected steps, fewer steps.
        "fast, shared uncond": dict(PRESETS["fast"], shared_unconditional=True),
        "fast, shared uncond, no re-injection": dict(
            PRESETS["fast"], shared_unconditional=True, noise_injection_steps=0
        ),
        "fast, shared uncond, re-injection on the first 8": dict(
            PRESETS["fast"], shared_unconditional=True, noise_injection_ratio=0.32
        ),
        "fast, 20 steps, shared uncond": dict(PRESETS["fast"], shared_unconditional=True, num_inference_steps=20),
        "fast, 15 steps, shared uncond": dict(PRESETS["fast"], shared_unconditional=True, num_inference_steps=15),
        "fast, 20 steps, no re-injection": dict(PRESETS["fast"], num_inference_steps=20, noise_injection_steps=0),
        # the best of them, 88 rows: better on the exact world, but below fast on the tiny world
        # (docs/tiny_world/cheaper/README.md)
        "fast, 15 steps": dict(PRESETS["fast"], num_inference_steps=15),
        "fast, 12 steps": dict(PRESETS["fast"], num_inference_steps=12),
        "trf": dict(sampler="trf"),
    }
    candidates |= {name: paper.with_options(**options) for name, options in variants.items()}
    vibid = candidates["vibid"]
    candidates["vibid, plain (no CFG++, no DDS)"] = replace(vibid, cfg_pp=False, keyframe_consistency=False)
    # DPM-Solver++(2S) at about the rows of its first-order counterpart: 13 steps make 2 x 12 + 1 evaluations.
    candidates["vibid, dpmpp-2s, 13 steps"] = replace(vibid, solver="dpmpp-2s", num_inference_steps=13)
    candidates["gi at fast's steps, dpmpp-2s, 13 steps"] = replace(
        candidates["gi at fast's steps"], solver="dpmpp-2s", num_inference_steps=13
    )
    candidates["forward"] = paper.with_options(sampler=FORWARD)
    return candidates
