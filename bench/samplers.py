"""UNet rows and time of one video per preset, on SVD's real UNet architecture (random weights), side by side.

Every preset (``inbetween.config.PRESETS``: paper, fast, vibid, vibid-adapter) runs in ONE process on the same
seeded components (``bench/step_cost.py``'s: SVD's UNet and VAE architectures, a small CLIP, SVD's scheduler, a
random backward adapter), so the ratios share the machine's state. The rows table (every candidate of
``inbetween.toyworld.candidates.sampler_candidates``) is counted, not timed (``inbetween.cost``).

Modes:

- ``video``: one whole video per preset (encode, sampling, decode), process CPU time (``--clock wall`` for wall
  time); every branch-denoiser request is timed too. A ``paper`` video is 175 evaluations of 4 UNet rows: at 64x64
  on one CPU thread 20 min of CPU at 8 frames, 50 min at 25 (hours of wall time on a shared 2-core machine), so run
  it in the background:

      OMP_NUM_THREADS=1 nohup python bench/samplers.py --mode video --threads 1 --frames 8 \\
          --out bench/results/samplers_video.md > bench/results/samplers_video.log 2>&1 &

- ``request`` (tens of minutes): each preset sampled with 2 steps to time every kind of request it makes (forward rows
  only, dual rotated rows, ...), then the request counts of the real preset times those medians, plus the measured
  encode and decode: an estimate of a video, labelled as such.

      OMP_NUM_THREADS=1 python bench/samplers.py --mode request --threads 1 --frames 25 \\
          --out bench/results/samplers_request.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from step_cost import build_components, keyframes, random_adapter  # noqa: E402

from inbetween import InbetweenPipeline  # noqa: E402
from inbetween.config import PRESETS, SamplingConfig  # noqa: E402
from inbetween.cost import request_layout, requests_per_video, unet_rows_per_video  # noqa: E402
from inbetween.toyworld.candidates import sampler_candidates  # noqa: E402

PROBE_STEPS = 2  # steps of a request-mode probe: enough for every request kind a preset makes


def request_kind(config: SamplingConfig, branches: tuple[str, ...]) -> str:
    """A name for what one request evaluates: rows per pair, rotated (dual) or not."""
    layout = request_layout(config, branches)
    return f"{layout.rows_per_pair} rows{' dual' if layout.dual else ''}"


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}  # cpu: this process's CPU time, for shared machines


def time_requests(pipe: InbetweenPipeline, log: dict[str, list[float]], clock) -> None:
    """Make ``pipe``'s branch denoisers time every request into ``log[kind]`` (seconds of ``clock``)."""
    build = type(pipe).make_branch_denoiser

    def make_branch_denoiser(cond, config):
        model = build(pipe, cond, config)

        def timed(x, sigma, branches):
            start = clock()
            estimates = model(x, sigma, branches)
            log[request_kind(config, tuple(branches))].append(clock() - start)
            return estimates

        return timed

    pipe.make_branch_denoiser = make_branch_denoiser


def run_video(pipe: InbetweenPipeline, first, last, config: SamplingConfig, seed: int, clock) -> float:
    """Seconds of ``clock`` for one whole video (encode, sampling, decode)."""
    start = clock()
    pipe(first, last, config, generator=torch.Generator().manual_seed(seed), output_type="np")
    return clock() - start


def preset_config(name: str, args: argparse.Namespace) -> SamplingConfig:
    base = SamplingConfig(num_frames=args.frames, height=args.size, width=args.size, decode_chunk_size=args.frames)
    return SamplingConfig.preset(name, base)


def measure(args: argparse.Namespace) -> dict[str, dict]:
    torch.set_num_threads(args.threads)
    components = build_components(torch.device("cpu"), torch.float32, args.seed)
    pipe = InbetweenPipeline(**components)
    pipe.load_backward_adapter(random_adapter(pipe.unet, args.seed))
    pipe.set_progress_bar_config(disable=True)
    first, last = keyframes(args.size, args.size, args.seed)
    results = {}
    for name in args.presets:
        config = preset_config(name, args)
        log: dict[str, list[float]] = defaultdict(list)
        clock = CLOCKS[args.clock]
        time_requests(pipe, log, clock)
        if args.mode == "video":
            seconds = run_video(pipe, first, last, config, args.seed, clock)
            sampling = sum(sum(times) for times in log.values())
        else:  # probe: every request kind once or more, then the real counts times their medians
            injections = min(config.noise_injection_steps, 1)  # a redone step is the same kind of request
            probe = replace(
                config, num_inference_steps=PROBE_STEPS, noise_injection_ratio=1.0, noise_injection_steps=injections
            )
            probe_seconds = run_video(pipe, first, last, probe, args.seed, clock)
            probe_sampling = sum(sum(times) for times in log.values())
            medians = {kind: statistics.median(times) for kind, times in log.items()}
            counts = requests_per_video(config)
            sampling = sum(count * medians[request_kind(config, b)] for b, count in counts.items())
            seconds = sampling + (probe_seconds - probe_sampling)  # + encode and decode, measured
        results[name] = dict(
            seconds=seconds,
            sampling=sampling,
            requests=sum(requests_per_video(config).values()),
            rows=unet_rows_per_video(config),
            per_kind={kind: statistics.median(times) for kind, times in log.items()},
        )
        print(f"{name}: {seconds:.1f} s ({sampling:.1f} s sampling)", flush=True)
    return results


def rows_table(frames: int) -> str:
    """Requests and UNet rows per video of every candidate, at SVD's guidance (counted)."""
    candidates = sampler_candidates(SamplingConfig(num_frames=frames))
    paper = unet_rows_per_video(candidates["paper"])
    lines = ["| sampler / preset | requests | UNet rows / video | rows vs paper |", "|---|---|---|---|"]
    for name, config in candidates.items():
        rows = unet_rows_per_video(config)
        lines.append(f"| {name} | {sum(requests_per_video(config).values())} | {rows} | {rows / paper:.3f} |")
    return "\n".join(lines)


def time_table(results: dict[str, dict], mode: str) -> str:
    paper = results.get("paper")
    label = "measured s / video" if mode == "video" else "estimated s / video"
    lines = [
        f"| preset | requests | UNet rows | rows vs paper | {label} | time vs paper | s per request (median, by kind) "
        "|",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        rows_ratio = f"{r['rows'] / paper['rows']:.3f}" if paper else "-"
        time_ratio = f"{r['seconds'] / paper['seconds']:.3f}" if paper else "-"
        kinds = ", ".join(f"{kind}: {t:.2f}" for kind, t in sorted(r["per_kind"].items()))
        lines.append(
            f"| {name} | {r['requests']} | {r['rows']} | {rows_ratio} | {r['seconds']:.1f} | {time_ratio} | {kinds} |"
        )
    return "\n".join(lines)


def report(results: dict[str, dict], args: argparse.Namespace) -> str:
    how = (
        "one whole video per preset (encode, sampling, decode)"
        if args.mode == "video"
        else f"per-request medians from {PROBE_STEPS}-step probes times each preset's request counts, plus the "
        "probes' measured encode and decode (an estimate, not a timed video)"
    )
    return (
        f"# Samplers: UNet rows and time of one video per preset\n\n"
        f"SVD's UNet architecture with random weights, {args.frames} frames at {args.size}x{args.size}, float32 on "
        f"CPU, {args.threads} thread(s), {args.clock} clock, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}; "
        f"{how}.\n\n{time_table(results, args.mode)}\n\n## UNet rows per video, every candidate (counted)\n\n"
        f"{rows_table(args.frames)}\n\nCommand: `python bench/samplers.py {' '.join(sys.argv[1:])}`\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("video", "request", "rows"), default="request")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated (default: all)")
    p.add_argument("--frames", type=int, default=25, help="frames per video (default: SVD-XT's 25)")
    p.add_argument("--size", type=int, default=64, help="square frame size in pixels, a multiple of 64")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=tuple(CLOCKS), default="cpu", help="cpu: process CPU time (shared machines)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the markdown report here")
    args = p.parse_args(argv)
    args.presets = [name.strip() for name in args.presets.split(",") if name.strip()]
    unknown = [name for name in args.presets if name not in PRESETS]
    if unknown:
        p.error(f"unknown preset {', '.join(unknown)}; the presets are {', '.join(PRESETS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode == "rows":
        print(rows_table(args.frames))
        return
    text = report(measure(args), args)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
