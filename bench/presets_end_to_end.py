"""End to end on the tiny world: ``inbetween interpolate --model tiny-world`` wall time per preset, side by side.

Each timed run is a fresh ``python -m inbetween interpolate`` process, as a user runs it: Python's start, the
imports, loading the model, encoding the keyframes, sampling, decoding and writing the video. The presets take
turns over ``--repeats`` rounds (paper, fast, ..., paper, fast, ...) so that they share the machine's state; the
table gives the median per preset and its ratio to ``paper``'s. One more process per preset reports where its time
goes (``--child``: the same steps as the CLI, each timed). Keyframes: the first and last frames of the first
held-out tiny-world video. UNet rows per video: ``inbetween.cost``.

Two more measurements put the ratios in context: ``floor``, the same command with one unguided forward step (one
UNet row: what a fresh process costs with no sampling to speak of, so ``paper / floor`` is the most any preset can
reach end to end), and ``--batch-rounds`` shots of every preset in ONE ``inbetween batch`` run (the model loaded
once; per shot: keyframes read, sampling, decoding, writing), whose ratios are the sampler's alone.

    python bench/presets_end_to_end.py --out bench/results/presets_end_to_end.md
    python bench/presets_end_to_end.py --presets paper fast --repeats 1       # a quick look
    python bench/presets_end_to_end.py --presets paper fast:steps=20,noise_injection_steps=0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("imports", "load", "encode + sampling", "decode + write")


def child(preset: str, first: str, last: str, out: str) -> None:
    """The CLI's steps for one video, each timed; prints one JSON line of seconds per stage."""
    started = time.perf_counter()
    import torch

    from inbetween.hub import TINY_WORLD
    from inbetween.loading import load_pipeline
    from inbetween.model_config import ModelConfig
    from inbetween.sequence import interpolate_sequence
    from inbetween.video_io import load_image, write_video

    imported = time.perf_counter()
    pipe = load_pipeline(ModelConfig(TINY_WORLD, dtype="float32", device="cpu"), progress=False)
    loaded = time.perf_counter()
    sampled = []

    def on_step_end(pipe, step, sigma, tensors):
        sampled.append(time.perf_counter())
        return tensors

    frames = interpolate_sequence(
        pipe,
        [load_image(first), load_image(last)],
        case_config(preset),
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=on_step_end,
    )
    write_video(frames, out, fps=7, overwrite=True)
    done = time.perf_counter()
    times = (imported - started, loaded - imported, sampled[-1] - loaded, done - sampled[-1])
    print(json.dumps(dict(zip(STAGES, times, strict=True))))


def keyframes(folder: Path) -> tuple[str, str]:
    from PIL import Image

    from inbetween.toyworld.science import heldout_videos

    (video,) = heldout_videos(1)
    paths = str(folder / "first.png"), str(folder / "last.png")
    Image.fromarray(video.frames[0]).save(paths[0])
    Image.fromarray(video.frames[-1]).save(paths[1])
    return paths


FLOOR = "floor"  # one unguided forward step: a fresh process's cost with (almost) no sampling
FLOOR_OPTIONS = dict(sampler="forward", num_inference_steps=1, min_guidance_scale=1.0, max_guidance_scale=1.0)
FLOOR_FLAGS = ["--sampler", "forward", "--steps", "1", "--min-guidance", "1", "--max-guidance", "1"]


def case_options(case: str) -> tuple[str, dict[str, str]]:
    """``PRESET`` or ``PRESET:OPTION=VALUE,...`` (options by field or flag name, as shot-list columns): the preset
    and the options over it."""
    preset, _, rest = case.partition(":")
    return preset, dict(item.split("=", 1) for item in rest.split(",") if item)


def case_flags(case: str) -> list[str]:
    if case == FLOOR:
        return FLOOR_FLAGS
    from inbetween.batch.shotlist import sampling_fields
    from inbetween.options import flag_of

    preset, options = case_options(case)
    flags = [(flag_of(sampling_fields()[name]), value) for name, value in options.items()]
    return ["--preset", preset, *(part for flag in flags for part in flag)]


def case_row(case: str) -> dict[str, object]:
    """The shot-list row of ``case`` (keyframes left out)."""
    preset, options = case_options(case)
    return dict(preset=preset, **options)


def case_config(case: str):
    from inbetween.batch.shotlist import parse_shot
    from inbetween.config import SamplingConfig

    if case == FLOOR:
        return SamplingConfig(**FLOOR_OPTIONS)
    shot = parse_shot(dict(case_row(case), keyframes="a.png;b.png"), 1, Path("."))
    return shot.sampling_config(SamplingConfig())


def timed_cli(case: str, first: str, last: str, out: str) -> float:
    command = [sys.executable, "-m", "inbetween", "interpolate", first, last, "-o", out, "--model", "tiny-world"]
    started = time.perf_counter()
    subprocess.run([*command, *case_flags(case), "--overwrite", "--quiet"], check=True, capture_output=True)
    return time.perf_counter() - started


def batch_seconds(presets: list[str], rounds: int, first: str, last: str, folder: Path) -> dict[str, list[float]]:
    """Seconds per shot of every preset, ``rounds`` shots each in turn, in one ``inbetween batch`` run."""
    shots = [
        dict(name=f"case{index}-{i}", keyframes=[first, last], **case_row(case))
        for i in range(rounds)
        for index, case in enumerate(presets)
    ]
    (folder / "shots.json").write_text(json.dumps(shots))
    command = [sys.executable, "-m", "inbetween", "batch", str(folder / "shots.json"), "-o", str(folder / "batch")]
    subprocess.run([*command, "--model", "tiny-world", "--quiet"], check=True, capture_output=True)
    records = json.loads((folder / "batch" / "summary.json").read_text())["records"]
    return {
        case: [r["seconds"] for r in records if r["name"].rsplit("-", 1)[0] == f"case{index}"]
        for index, case in enumerate(presets)
    }


def stage_times(preset: str, first: str, last: str, out: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", preset, first, last, out], check=True, capture_output=True, text=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["paper", "fast", "fast:steps=15"],
        help="PRESET or PRESET:OPTION=VALUE,... (a candidate) each; the first is the reference",
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds of timed CLI runs (default: %(default)s)")
    parser.add_argument("--batch-rounds", type=int, default=3, help="shots per preset in the batch run (0: none)")
    parser.add_argument("--out", help="write the Markdown table here too")
    parser.add_argument("--child", nargs=4, metavar=("PRESET", "FIRST", "LAST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    import torch

    from inbetween.cost import unet_rows_per_video

    presets = args.presets
    cases = [*presets, FLOOR]
    with tempfile.TemporaryDirectory() as tmp:
        first, last = keyframes(Path(tmp))
        out = str(Path(tmp) / "video.mp4")
        walls: dict[str, list[float]] = {case: [] for case in cases}
        for round_ in range(args.repeats):
            for case in cases:
                walls[case].append(timed_cli(case, first, last, out))
                print(f"round {round_ + 1}: {case} {walls[case][-1]:.2f} s", file=sys.stderr)
        stages = {preset: stage_times(preset, first, last, out) for preset in presets}
        batch = batch_seconds(presets, args.batch_rounds, first, last, Path(tmp)) if args.batch_rounds else {}
    reference = statistics.median(walls[presets[0]])
    lines = [
        f"Tiny world, `inbetween interpolate --model tiny-world --preset P` end to end (fresh process each), "
        f"{args.repeats} rounds, median wall time; {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), python {platform.python_version()}.",
        "",
        f"| preset | UNet rows / video | wall s (median) | {presets[0]} / preset | runs (s) | "
        + " | ".join(f"{stage} s" for stage in STAGES)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(STAGES),
    ]
    for case in cases:
        median = statistics.median(walls[case])
        rows = unet_rows_per_video(case_config(case))
        runs = ", ".join(f"{wall:.1f}" for wall in walls[case])
        cells = " | ".join(f"{stages[case][stage]:.2f}" if case in stages else "" for stage in STAGES)
        lines.append(f"| {case} | {rows} | {median:.2f} | {reference / median:.2f}x | {runs} | {cells} |")
    if batch:
        batch_reference = statistics.median(batch[presets[0]])
        lines += [
            "",
            f"`inbetween batch` (one process, the model loaded once), {args.batch_rounds} shots per preset in turn, "
            "median seconds per shot (keyframes read, sampling, decoding, writing):",
            "",
            f"| preset | UNet rows / video | s per shot (median) | {presets[0]} / preset | shots (s) |",
            "|---|---|---|---|---|",
        ]
        for preset in presets:
            median = statistics.median(batch[preset])
            rows = unet_rows_per_video(case_config(preset))
            shots = ", ".join(f"{seconds:.2f}" for seconds in batch[preset])
            lines.append(f"| {preset} | {rows} | {median:.2f} | {batch_reference / median:.2f}x | {shots} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
