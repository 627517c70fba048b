"""Peak memory of one keyframe-sequence call on the real SVD architecture, and how ``segment_batch`` bounds it.

A joint call samples its ``S`` segments as one batch of keyframe pairs (``inbetween.sequence``), so its UNet batch is
``4 S`` rows with guidance: memory grows with the sequence. ``segment_batch`` samples the segments that many at a
time, each batch continuing from the last frame of the one before, so the peak is that of a call on
``segment_batch`` pairs, however long the sequence.

Each row runs in its own subprocess, on the components of ``bench/step_cost.py`` (SVD's UNet architecture,
1.52 B parameters, and SVD's VAE, seeded random weights; a small CLIP of SVD's projection width; a random backward
adapter): ``interpolate_sequence`` through ``S + 1`` random 64x64 keyframes, 14-frame segments, 1 step, no
re-injection (the peak of a step does not depend on how many there are), guidance on (max 3, the paper's),
decoded to frames. Reported per row: the call's peak resident memory above what was resident before it (the
kernel's high-water mark, reset through ``/proc/self/clear_refs``, as ``bench/memory_estimate.py`` does), the
child's whole peak RSS (``ru_maxrss``: the weights, 6.1 GB in float32, plus the call), and the estimate
``inbetween.memory`` checks before the call (for one chunk of ``segment_batch`` pairs).

    python bench/sequence_memory.py --threads 1 --out bench/results/sequence_memory.md   # ~30 min on 2 shared cores
    python bench/sequence_memory.py --threads 1 --live --out bench/results/sequence_memory_live.md
    python bench/sequence_memory.py --only "2 segments"
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for path in (REPO / "src", BENCH):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

FRAMES, SIZE, MAX_GUIDANCE = 14, 64, 3.0
GB = 1024**3
LIVE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # as bench/memory_estimate.py's `live` measurement
# (name, segments, segment_batch): the joint call for 1 (the plain two-keyframe call), 2, 4, 8 segments, then
# 8 segments in chunks of 1, 2 and 4.
ROWS = [
    ("1 segment (2 keyframes)", 1, None),
    ("2 segments, joint", 2, None),
    ("4 segments, joint", 4, None),
    ("8 segments, joint", 8, None),
    ("8 segments, --segment-batch 4", 8, 4),
    ("8 segments, --segment-batch 2", 8, 2),
    ("8 segments, --segment-batch 1", 8, 1),
]


def child(segments: int, segment_batch: int | None, threads: int | None) -> dict:
    """Build the components, then measure one sequence call."""
    import numpy as np
    import PIL.Image
    import torch
    from diffusers.utils import logging as diffusers_logging
    from memory_estimate import measure_peak
    from step_cost import build_components, random_adapter

    from inbetween import InbetweenPipeline
    from inbetween.memory import check_pipeline_call
    from inbetween.sequence import interpolate_sequence

    diffusers_logging.set_verbosity_error()
    if threads:
        torch.set_num_threads(threads)
    pipe = InbetweenPipeline(**build_components(torch.device("cpu"), torch.float32, seed=0))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_backward_adapter(random_adapter(pipe.unet, seed=0))
    rng = np.random.default_rng(0)
    keyframes = [
        PIL.Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(segments + 1)
    ]
    options = dict(
        height=SIZE,
        width=SIZE,
        num_frames=FRAMES,
        num_inference_steps=1,
        noise_injection_steps=0,
        max_guidance_scale=MAX_GUIDANCE,
    )
    config = pipe.sampling_config(keyframes[0], **options)
    chunk = min(segment_batch or segments, segments)
    estimate = check_pipeline_call(pipe, config, chunk, "np", allow_oversize=True).peak_bytes
    start = time.perf_counter()
    frames = {}

    def run():
        generator = torch.Generator().manual_seed(0)
        frames["video"] = interpolate_sequence(
            pipe, keyframes, config, generator=generator, segment_batch=segment_batch, output_type="np"
        )
        return frames["video"]

    peak = measure_peak(run)
    video = frames["video"]
    if not np.isfinite(video).all():
        raise FloatingPointError("the frames are not finite: random weights too large for this shape")
    return dict(
        segments=segments,
        segment_batch=segment_batch,
        frames=len(video),
        rows_per_call=4 * chunk,
        call_peak=peak,
        estimate=estimate,
        process_peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        seconds=time.perf_counter() - start,
    )


def run_child(segments: int, segment_batch: int | None, threads: int | None, live: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps([segments, segment_batch, threads])]
    environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(LIVE_ENV if live else {})}
    if threads:
        environment["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if done.returncode:
        reason = "killed (out of memory?)" if done.returncode == -9 else f"exit code {done.returncode}"
        raise RuntimeError(f"child {segments} segments / batch {segment_batch}: {reason}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_for_memory(name: str, needed: int, patience_s: float = 1800) -> None:
    """Wait (a shared machine: other jobs come and go) until ``needed`` bytes are available; refuse after
    ``patience_s`` rather than swap or meet the OOM killer."""
    import psutil

    deadline = time.monotonic() + patience_s
    while (available := psutil.virtual_memory().available) < needed:
        if time.monotonic() > deadline:
            raise MemoryError(f"{name}: needs ~{needed / GB:.0f} GB free, {available / GB:.1f} GB available")
        print(f"{name}: waiting for {needed / GB:.0f} GB ({available / GB:.1f} GB available)", file=sys.stderr)
        time.sleep(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run the rows whose name contains this")
    parser.add_argument("--threads", type=int, help="torch threads of the children (default: torch's)")
    parser.add_argument(
        "--live",
        action="store_true",
        help="children with MALLOC_MMAP_THRESHOLD_=65536: every tensor above 64 kB its own mapping, returned when "
        "freed, so the peak is that of the live tensors (default: glibc's malloc, what a plain process sees)",
    )
    parser.add_argument("--out", help="also write the table (markdown) here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return 0

    from inbetween.memory import format_bytes

    lines = [
        "| call | frames out | UNet rows per call | call peak (measured) | estimate (one chunk) | process peak RSS "
        "| s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for name, segments, segment_batch in ROWS:
        if args.only and args.only not in name:
            continue
        wait_for_memory(name, 9 * GB)  # the weights (6.1 GB) plus up to ~2 GB for the call
        r = run_child(segments, segment_batch, args.threads, args.live)
        line = (
            f"| {name} | {r['frames']} | {r['rows_per_call']} | {format_bytes(r['call_peak'])} | "
            f"{format_bytes(r['estimate'])} | {format_bytes(r['process_peak'])} | {r['seconds']:.0f} |"
        )
        lines.append(line)
        print(line, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
