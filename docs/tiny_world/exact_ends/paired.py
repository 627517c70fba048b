"""Keyframe-exact ends on the exact-denoiser worlds: every variant of the hold, paired against none, same noise.

    PYTHONPATH=src python docs/tiny_world/exact_ends/paired.py --world ours --out docs/tiny_world/exact_ends
    PYTHONPATH=src python docs/tiny_world/exact_ends/paired.py --world second --out docs/tiny_world/exact_ends

Every run starts from the same noise (the study's seed) and samples with the study's ``run_row`` machinery; a variant
differs only in what happens to the two end frames. Every output then gets the keyframes' pixels written at its ends
(what the pipeline does after decoding with ``exact_ends``; the exact world's pixels are its latents), except the
row "raw". Writes ``<world>_pairs.csv`` (per pair and row: consistent 0/1) and ``<world>_table.md``, and
``<world>_trace.csv`` (per step: how near each branch's estimate of the far end is to that keyframe).
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import replace
from pathlib import Path

import torch
from scipy import stats

from inbetween.config import BACKWARD, FORWARD, sampler_candidates
from inbetween.sampling import gaussian_noise, keep_keyframe, sample
from inbetween.toyworld.exact import study
from inbetween.toyworld.exact.config import ExactWorldConfig
from inbetween.toyworld.exact.denoisers import exact_branch_denoiser
from inbetween.toyworld.exact.world import build_exact_world

WORLDS = {
    # the study's world: hard keyframe conditioning, pairs from seed 0
    "ours": (ExactWorldConfig(), 0),
    # other videos (8 frames, smaller ball, stronger gravity, livelier bounces, other launch grid), soft keyframe
    # conditioning (tau = 8 on the 0-255 RMSE scale: a one-pixel shift of the ball weighs exp(-2.6) = 0.08), pairs
    # and noise from seed 1
    "second": (
        ExactWorldConfig(
            num_frames=8, radius=2.0, gravity=0.3, restitution=0.8, max_speed_x=2.0, speeds_x=5,
            min_speed_y=-2.5, max_speed_y=0.5, speeds_y=4, keyframe_softness=8.0,
        ),
        1,
    ),
}  # fmt: skip
PAIRS = 200


def hold_ends(keyframe_latents):
    """``exact_ends`` until this study (sampling.hold_ends, 957e598): every denoised estimate with its first and last
    frames set to the keyframes' latents."""

    def held(denoised):
        return keep_keyframe(keep_keyframe(denoised, keyframe_latents[:, 0], 0), keyframe_latents[:, 1], -1)

    return held


def run(world, config, videos, seed, hold="none", trace=None):
    """Outputs ``(P, N, 3, H, W)`` clamped to [-1, 1] of ``config`` (its exact_ends ignored) with the end ``hold``:
    ``none``; ``every``: hold_ends on every estimate (exact_ends as it was); ``below:S``: hold_ends on the estimates
    at sigma < S; ``state``: after every step the end frames of x are set to keyframe + sigma_next * fresh noise;
    ``exact_ends``: the config with ``exact_ends=True`` as the library runs it now."""
    config = replace(config, exact_ends=hold == "exact_ends")
    first, last = world.paths[videos, 0], world.paths[videos, -1]
    model = exact_branch_denoiser(
        world, first, last, fine_tuned=config.rotation, guided=config.guided,
        shared_unconditional=config.shared_unconditional,
    )  # fmt: skip
    keyframes = torch.stack([world.atlas[first], world.atlas[last]], 1)
    current = {}

    def watched(x, sigma, branches):
        current["sigma"] = float(sigma)
        estimates = model(x, sigma, branches)
        if trace is not None and FORWARD in estimates.cond and BACKWARD in estimates.cond:
            # how near the forward branch's last frame is to the last keyframe, and the backward's first to the first
            f = (estimates.cond[FORWARD][:, -1] - keyframes[:, 1]).flatten(1).pow(2).mean(1).sqrt() * 127.5
            b = (estimates.cond[BACKWARD][:, 0] - keyframes[:, 0]).flatten(1).pow(2).mean(1).sqrt() * 127.5
            trace.append((hold, float(sigma), float(f.mean()), float(b.mean())))
        return estimates

    held = hold_ends(keyframes)
    share = None
    if hold == "every":
        share = held
    elif hold.startswith("below:"):
        threshold = float(hold.split(":")[1])

        def share(denoised):
            return held(denoised) if current["sigma"] < threshold else denoised

    sigmas, init_sigma = study.karras_sigmas(config.num_inference_steps)
    noise = gaussian_noise(torch.Generator().manual_seed(seed))
    x = noise(torch.empty(len(videos), world.config.num_frames, *world.atlas.shape[1:]))
    callback = None
    if hold == "state":
        state_noise = gaussian_noise(torch.Generator().manual_seed(seed + 10**6))

        def callback(i, sigma, x):
            x = x.clone()
            for frame, key in ((0, 0), (-1, 1)):
                x[:, frame] = keyframes[:, key] + sigmas[i + 1] * state_noise(x[:, frame])
            return x

    extra = {} if share is None else {"share": share}
    out = sample(config, watched, x * init_sigma, sigmas, noise=noise, callback=callback, keyframe_latents=keyframes,
                 **extra)  # fmt: skip
    return out.clamp(-1, 1)


def write_ends(world, outputs, videos):
    out = outputs.clone()
    out[:, 0], out[:, -1] = world.atlas[world.paths[videos, 0]], world.atlas[world.paths[videos, -1]]
    return out


def paired_cell(flags, reference):
    d = flags.astype(float) - reference.astype(float)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / len(d) ** 0.5
    return f"{d.mean():+.3f} ± {half:.3f}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", choices=WORLDS, default="ours")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", default="mechanism", choices=["mechanism", "presets"])
    args = parser.parse_args()
    world_config, seed = WORLDS[args.world]
    world = build_exact_world(world_config)
    videos = study.draw_pairs(world, PAIRS, seed)
    tolerance = study.frame_tolerance(world)
    candidates = sampler_candidates()
    if args.rows == "mechanism":
        # (base sampler, hold variants): fast and samplers whose end frames' guidance differs
        plan = {
            "fast": ["raw", "none", "every", "below:1", "below:0.1", "below:0.01", "state"],
            "poe g=1 weighted": ["none", "every"],
            "poe g=1.5": ["none", "every"],
            "gi at fast's steps": ["none", "every"],
            "paper": ["none", "every"],
            "vibid": ["none", "every"],
        }
    else:  # the presets and fast's neighbours with the chosen exact ends (the pixel write alone) and with the hold
        # (paper's own rows, none and every, are in the mechanism table; exact_ends equals none there too)
        plan = {"fast": ["none", "exact_ends", "every"]}
        plan |= {name: ["none", "exact_ends"] for name in ("vibid", "vibid-adapter", "fast, 15 steps")}
    flags, trace = {}, []
    for name, holds in plan.items():
        for hold in holds:
            outputs = run(world, candidates[name], videos, seed, "none" if hold == "raw" else hold,
                          trace if name == "fast" else None)  # fmt: skip
            if hold != "raw":
                outputs = write_ends(world, outputs, videos)
            scores = study.score_outputs(world, outputs, videos, tolerance)
            flags[(name, hold)] = scores["consistent"].astype(int)
            print(name, hold, flags[(name, hold)].mean(), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.world}_{args.rows}"
    with open(args.out / f"{stem}_pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["pair", "video", *(f"{n} | {h}" for n, h in flags)])
        for p, video in enumerate(videos.tolist()):
            writer.writerow([p, video, *(int(v[p]) for v in flags.values())])
    lines = [
        "| sampler | ends inside sampling | consistent [95 % CI] | Δ vs the pixel write alone (paired, t 95 %) |",
        "|---|---|---|---|",
    ]
    for (name, hold), value in flags.items():
        low, high = study.wilson_interval(int(value.sum()), len(value))
        ref = flags[(name, "none")]
        delta = "–" if hold == "none" else paired_cell(value, ref)
        lines.append(f"| {name} | {hold} | {value.mean():.3f} [{low:.3f}, {high:.3f}] | {delta} |")
    (args.out / f"{stem}_table.md").write_text("\n".join(lines) + "\n")
    if trace:
        with open(args.out / f"{stem}_trace.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["hold", "sigma", "forward_last_vs_last_keyframe", "backward_first_vs_first_keyframe"])
            writer.writerows(trace)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
