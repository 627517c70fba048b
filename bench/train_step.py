"""Cost of one backward-motion training step: our one-UNet trainer against the naive two-UNet one.

One training step = encode the clip and keyframes (VAE, CLIP; no grad) + the forward branch
(frozen, provides the attention maps) + the backward branch with grad + the EDM loss's backward
pass + one AdamW step on the trainable W_v / W_o (no gradient clipping in any case). Every case
runs in its own subprocess (so peak RSS, ``ru_maxrss``, is per case) on the same seeded
components and the same random clips and draws; each runs 1 warm-up step, then ``--steps``
measured steps (median reported).

Cases:
    ours-split       inbetween.training.backward_branch_step, layout="split": a no-grad forward
                     call records Q/K, then the backward rows alone go through the graph
    ours-joint       layout="joint": one UNet call on [forward | backward] rows
    ours-split-ckpt  split, with the UNet's gradient checkpointing (config.gradient_checkpointing)
    naive            tests/reference.py NaiveBackwardTrainer: a frozen forward UNet with stored
                     materialised maps + a second UNet (deep copy) whose full W_v / W_o train

Architectures:
    --arch tiny  tests/tiny.py components; 64x64 px, 8 frames, batch 4
    --arch svd   SVD's UNet (default config, 1.52 B parameters) and VAE architectures with seeded
                 random weights and a small CLIP with SVD's projection width (1024), built by
                 bench/step_cost.py's helpers; 64x64 px, 14 frames, batch 1, float32, CPU

The runs in bench/README.md (2 CPU cores shared with other jobs, so one torch thread and the
process CPU clock, which other load does not inflate; the svd run takes ~8 min and needs ~15 GB
of free RAM):

    python bench/train_step.py --arch tiny --threads 1 --clock cpu
    python bench/train_step.py --arch svd --threads 1 --clock cpu

Both write their section of bench/results/train_step.md (the other arch's section is kept; the
raw numbers go to bench/results/train_step_<arch>.json). Quick check while developing:

    python bench/train_step.py --arch tiny --steps 1 --batch 1 --out /tmp/train_step.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from step_cost import (  # noqa: E402  (bench/ is not a package)
    GB,
    REPO,
    STEP_KEYS,
    StepClock,
    build_components,
    check_finite,
    check_line,
    ensure_free_memory,
    fmt,
    python_child,
    ratio,
    run_in_subprocess,
    tests_module,
)

DEFAULT_OUT = REPO / "bench" / "results" / "train_step.md"
CASES = {
    "ours-split": "one UNet; no-grad forward call + backward call (layout=split)",
    "ours-joint": "one UNet; one call on [forward | backward] rows (layout=joint)",
    "ours-split-ckpt": "one UNet; layout=split + gradient checkpointing",
    "naive": "tests/reference.py NaiveBackwardTrainer: two UNets, stored maps, two calls",
}
OURS = ("ours-split", "ours-joint")  # the layouts; checkpointing is a memory option on top
ARCHS = {  # defaults: (size px, frames, batch, measured steps)
    "tiny": (64, 8, 4, 5),
    "svd": (64, 14, 1, 3),
}
RSS_TARGET = 0.6
SECTION = "<!-- train_step arch={arch} -->"


# ---------------------------------------------------------------------------------------------
# child: build, warm up, measure


def build_pipeline(args):
    from inbetween import InbetweenPipeline

    if args.arch == "tiny":
        components = tests_module("tiny").tiny_components(num_frames=args.frames)
    else:
        components = build_components(torch.device("cpu"), torch.float32, args.seed)
    return InbetweenPipeline(**components)


def train_config(args, case: str):
    from inbetween.training import TrainConfig

    return TrainConfig(
        data="unused",
        output_dir="unused",
        num_frames=args.frames,
        height=args.size,
        width=args.size,
        batch_size=args.batch,
        layout="joint" if case == "ours-joint" else "split",
        gradient_checkpointing=case == "ours-split-ckpt",
        seed=args.seed,
    )


def random_batch(args, step: int) -> dict[str, torch.Tensor]:
    """Clips shaped like stacked ``ClipDataset`` samples: (B, N, 3, H, W) in [-1, 1], smooth random frames."""
    generator = torch.Generator().manual_seed(args.seed * 1000 + step)
    coarse = torch.rand(args.batch * args.frames, 3, 8, 8, generator=generator) * 2 - 1
    clip = torch.nn.functional.interpolate(coarse, size=(args.size, args.size), mode="bilinear")
    clip = clip.unflatten(0, (args.batch, args.frames))
    return {"clip": clip, "first_frame": clip[:, 0].clone(), "last_frame": clip[:, -1].clone()}


def random_draws(config, vae_scale: int, step: int) -> dict[str, torch.Tensor]:
    """The trainer's own per-sample draws (sigma, noise, keyframe noise augmentation), stacked."""
    from inbetween.training import batch_draws

    positions = range(step * config.batch_size, (step + 1) * config.batch_size)
    return batch_draws(config, positions, vae_scale)


def ours_trainer(pipe, config):
    """What ``train_backward`` sets up: frozen components, zero float32 deltas, AdamW on them."""
    from accelerate import Accelerator

    from inbetween.training import backward_branch_step, make_optimizer, prepare_frozen, trainable_deltas

    accelerator = Accelerator(cpu=True)
    pipe = prepare_frozen(pipe, config, accelerator)
    parameters = trainable_deltas(pipe.unet, config.train_bias)
    optimizer = make_optimizer(config, parameters)

    def step(encoded, draws) -> float:
        loss = backward_branch_step(pipe, encoded, draws, config, accelerator)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step, sum(p.numel() for p in parameters)


def naive_trainer(pipe, config):
    """The naive reference with two UNets in all: ``pipe.unet`` as the frozen forward model + one deep copy."""
    NaiveBackwardTrainer = tests_module("reference").NaiveBackwardTrainer
    pipe.set_progress_bar_config(disable=True)
    for model in (pipe.vae, pipe.image_encoder, pipe.unet):
        model.requires_grad_(False).eval()
    unet_bytes = sum(p.numel() * p.element_size() for p in pipe.unet.parameters())
    ensure_free_memory(unet_bytes, "naive: NaiveBackwardTrainer deep-copies the UNet")
    naive = NaiveBackwardTrainer(
        pipe,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        betas=(config.adam_beta1, config.adam_beta2),
        reuse_pipe_unet=True,
    )
    return naive.step, sum(p.numel() for p in naive.trainable.values())


def run_case(args) -> dict:
    import psutil
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from inbetween.training import encode_batch

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.arch == "svd":
        ensure_free_memory(int(1.6e9 * 4), "the SVD UNet")
    load_before = os.getloadavg()
    start = time.perf_counter()
    pipe = build_pipeline(args)
    config = train_config(args, args.child)
    step, trainable = (naive_trainer if args.child == "naive" else ours_trainer)(pipe, config)
    build_s = time.perf_counter() - start
    inputs = [(random_batch(args, i), random_draws(config, pipe.vae_scale_factor, i)) for i in range(args.steps + 1)]
    clock, losses = StepClock(torch.device("cpu")), []
    for batch, draws in inputs:  # the first one is the warm-up step
        encoded = encode_batch(pipe, batch, draws, config)
        losses.append(step(encoded, draws))
        clock.tick()
    check_finite("loss", torch.tensor(losses))
    times, cpu_times = clock.step_times(0), clock.step_times(1)
    return dict(
        case=args.child,
        arch=args.arch,
        step_times_s=times,
        median_step_s=statistics.median(times),
        step_cpu_s=cpu_times,
        median_step_cpu_s=statistics.median(cpu_times),
        losses=losses,
        trainable_parameters=trainable,
        unet_parameters=sum(p.numel() for n, p in pipe.unet.named_parameters() if ".processor." not in n),
        build_s=build_s,
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB,
        threads=torch.get_num_threads(),
        loadavg_before=load_before[0],
        loadavg_after=os.getloadavg()[0],
        ram_available_gb=psutil.virtual_memory().available / GB,
    )


# ---------------------------------------------------------------------------------------------
# parent: one subprocess per case, table, target checks


def child_command(case: str, args) -> list[str]:
    return python_child(
        Path(__file__),
        case,
        args.threads,
        arch=args.arch,
        steps=args.steps,
        frames=args.frames,
        size=args.size,
        batch=args.batch,
        seed=args.seed,
    )


def run_child(case: str, args) -> dict:
    return run_in_subprocess(child_command(case, args), f"[train_step] {args.arch} {case}", CASES[case])


def format_table(results: dict[str, dict], clock: str) -> str:
    step_key, other = STEP_KEYS[clock], "cpu" if clock == "wall" else "wall"
    naive = results.get("naive", {})
    header = [
        "case",
        f"median step s ({clock})",
        "ratio vs naive",
        "peak RSS GB",
        "RSS ratio vs naive",
        f"median step s ({other})",
        "build s (excluded)",
    ]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in [case for case in CASES if case in results]:
        result = results[case]
        if "error" in result:
            rows.append(f"| {case} | {result['error']} |" + " |" * (len(header) - 2))
            continue
        step, rss = result[step_key], result["peak_rss_gb"]
        cells = [
            case,
            fmt(step, 3),
            fmt(ratio(step, naive.get(step_key)), 2, "x"),
            fmt(rss, 2),
            fmt(ratio(rss, naive.get("peak_rss_gb")), 2, "x"),
            fmt(result[STEP_KEYS[other]], 3),
            fmt(result["build_s"], 0),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def fastest_layout(results: dict[str, dict], clock: str) -> str | None:
    timed = [case for case in OURS if STEP_KEYS[clock] in results.get(case, {})]
    return min(timed, key=lambda case: results[case][STEP_KEYS[clock]]) if timed else None


def target_checks(results: dict[str, dict], clock: str) -> list[str]:
    key = STEP_KEYS[clock]
    best = fastest_layout(results, clock)
    naive = results.get("naive", {})
    ours = results.get(best, {}) if best else {}
    step, naive_step = ours.get(key), naive.get(key)
    rss_ratio = ratio(ours.get("peak_rss_gb"), naive.get("peak_rss_gb"))
    lines = [
        check_line(
            f"ours (best layout: {best}) no slower than naive",
            None if step is None or naive_step is None else step <= naive_step,
            f"{fmt(step, 3)} s vs {fmt(naive_step, 3)} s, {fmt(ratio(step, naive_step), 2, 'x')}",
        ),
        check_line(
            f"ours peak RSS <= {RSS_TARGET:g}x naive",
            None if rss_ratio is None else rss_ratio <= RSS_TARGET,
            f"{best}: {fmt(rss_ratio, 2, 'x')}",
        ),
    ]
    split, joint = (results.get(case, {}).get(key) for case in OURS)
    if split is not None and joint is not None:
        slow, fast = max(split, joint), min(split, joint)
        lines.append(
            f"fastest layout: {best} ({fmt(fast, 3)} s vs {fmt(slow, 3)} s: "
            f"{100 * (slow - fast) / slow:.0f}% less time, {slow / fast:.2f}x)"
        )
    return lines


def report(results: dict[str, dict], args, command: str) -> str:
    import diffusers

    some = next((r for r in results.values() if "error" not in r), {})
    setup = (
        f"arch {args.arch}: {args.size}x{args.size} px, {args.frames} frames, batch {args.batch}, float32, cpu, "
        f"1 warm-up + {args.steps} measured steps (median, {args.clock} clock); trainable "
        f"{some.get('trainable_parameters', 0) / 1e6:.2f} M parameters; {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({args.threads or torch.get_num_threads()} threads), diffusers "
        f"{diffusers.__version__}, python {platform.python_version()}"
    )
    lines = [
        SECTION.format(arch=args.arch),
        f"### arch {args.arch}",
        "",
        f"`{command}`",
        "",
        setup,
        "",
        format_table(results, args.clock),
        "",
        *target_checks(results, args.clock),
    ]
    loads = [
        f"{case} {r['loadavg_before']:.1f}->{r['loadavg_after']:.1f}"
        for case, r in results.items()
        if "loadavg_before" in r
    ]
    if loads:
        lines += ["", "1-min load average before->after each case: " + ", ".join(loads)]
    return "\n".join(lines) + "\n"


def write_report(out: Path, arch: str, text: str) -> None:
    """Replace this arch's section of ``out``, keep the others (tiny before svd)."""
    sections = {}
    if out.is_file():
        current = None
        for line in out.read_text().splitlines(keepends=True):
            for name in ARCHS:
                if line.strip() == SECTION.format(arch=name):
                    current = name
            if current:
                sections[current] = sections.get(current, "") + line
    sections[arch] = text
    body = "\n".join(sections[name].rstrip("\n") + "\n" for name in ARCHS if name in sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# One backward-motion training step: ours vs the naive two-UNet trainer\n\n" + body)


# ---------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="tiny", choices=list(ARCHS))
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma list, run in this order, of {', '.join(CASES)}"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="measured steps per case, after 1 warm-up step (tiny: 5, svd: 3)"
    )
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (tiny: 8, svd: 14)")
    parser.add_argument("--size", type=int, default=None, help="square frame size in pixels (default 64)")
    parser.add_argument("--batch", type=int, default=None, help="clips per step (tiny: 4, svd: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--clock", default="wall", choices=list(STEP_KEYS), help="step time for ratios and checks")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report (json per arch next to it)")
    parser.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size, frames, batch, steps = ARCHS[args.arch]
    args.size, args.frames, args.batch = args.size or size, args.frames or frames, args.batch or batch
    args.steps = args.steps or steps
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    if args.size % 64:
        parser.error("--size must be a multiple of 64")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        try:
            result = run_case(args)
        except (MemoryError, FloatingPointError) as exc:
            print(json.dumps(dict(case=args.child, error=f"{type(exc).__name__}: {exc}")), flush=True)
            sys.exit(1)
        print(json.dumps(result), flush=True)
        return
    command = "python bench/train_step.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {case: run_child(case, args) for case in args.cases.split(",")}
    text = report(results, args, command.strip())
    print(text)
    write_report(args.out, args.arch, text)
    args.out.with_name(f"{args.out.stem}_{args.arch}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"[train_step] wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
