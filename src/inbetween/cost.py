"""What a sampling config costs: the branch-denoiser requests of one video and the UNet rows they evaluate.

A request is one UNet call (two with ``split_guidance_batch``) on the rows of its
:class:`~inbetween.layout.BatchLayout`: per keyframe pair, 1 or 2 rows per branch (conditional, and unconditional when
guided), plus the forward rows a rotated backward branch attends with. UNet time is close to proportional to rows
(``bench/samplers.py`` measures it), so rows per video is the sampler's price. With SVD's guidance:

    paper (gi, 50 steps, 5 re-injections on the first 25)   175 requests x 4 rows  = 700 rows
    fast (gi + weighted PoE, DPM-Solver++(2M), 25 steps, 1 re-inj. on the first 12)   37 x 4 = 148 rows
    fast at 15 steps (1 re-inj. on the first 7)              22 x 4 rows            =  88 rows
    fast with shared_unconditional (one uncond row for both branches)   37 x 3      = 111 rows
    vibid (25 steps, unrotated)                              25 x (2 + 2) rows     = 100 rows
    vibid-adapter (rotated backward half-steps)              25 x (2 + 4) rows     = 150 rows

Imports no torch: the CLI and the memory check use it before any model loads.
"""

from __future__ import annotations

from .config import BACKWARD, FORWARD, SamplingConfig
from .layout import BatchLayout


def requests_per_video(config: SamplingConfig) -> dict[tuple[str, ...], int]:
    """How often the sampler of ``config`` asks the branch denoiser for each set of branches over one video
    (mirrors :func:`inbetween.sampling.sample`; ``tests/test_samplers.py`` counts the real calls)."""
    steps = config.num_inference_steps
    injected = int(config.noise_injection_ratio * steps)  # sampling.is_injection_step: the first int(ratio * steps)
    redone = 0 if config.sampler == FORWARD else config.noise_injection_steps  # forward never re-injects
    evaluations = 0
    for i in range(steps):
        # dpmpp-2s evaluates twice per step but on the last one, to sigma = 0
        per_step = 2 if config.solver == "dpmpp-2s" and i < steps - 1 else 1
        evaluations += per_step * (1 + (redone if i < injected else 0))
    if config.sampler == "vibid" and config.fusion not in (FORWARD, BACKWARD):  # two half-steps, one branch each
        return {(FORWARD,): evaluations, (BACKWARD,): evaluations}
    return {config.branches: evaluations}


def request_layout(config: SamplingConfig, branches: tuple[str, ...]) -> BatchLayout:
    """The UNet batch of one request for ``branches`` under ``config`` (what the pipeline's branch denoiser plans)."""
    return BatchLayout.of(config, branches)


def unet_rows_per_video(config: SamplingConfig, batch_size: int = 1) -> int:
    """UNet rows (one row: one video of ``num_frames`` latents) the sampling of ``batch_size`` videos evaluates."""
    rows = sum(count * request_layout(config, b).rows_per_pair for b, count in requests_per_video(config).items())
    return rows * batch_size


def largest_request(config: SamplingConfig) -> BatchLayout:
    """The layout of ``config``'s request with the most rows per pair: the one that sets the denoise stage's peak
    memory (:mod:`inbetween.memory`)."""
    layouts = [request_layout(config, branches) for branches in requests_per_video(config)]
    return max(layouts, key=lambda layout: layout.rows_per_pair)
