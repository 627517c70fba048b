"""Cost of one dual-directional sampling step, side by side with plain SVD, on the real SVD UNet.

Every case runs in its own subprocess (so peak RSS is per case) on the same seeded random
components: SVD's UNet architecture (``UNetSpatioTemporalConditionModel()`` default config,
1.52 B parameters), SVD's VAE architecture (``AutoencoderKLTemporalDecoder`` with SVD's
config) and a small CLIP image encoder with SVD's projection width (1024). Random weights are
fine: step time and memory do not depend on the values.

Cases:
    plain-svd    one step of diffusers' StableVideoDiffusionPipeline (2-way guidance batch)
    ours         one step of InbetweenPipeline: ONE UNet call on [fwd-u, fwd-c, bwd-u, bwd-c]
    ours-split   the same with split_guidance_batch=True: two UNet calls on [fwd, bwd] batches
    naive        tests/reference.py NaiveInbetween: two UNet copies, stored maps, two calls
    unet-4way    one plain UNet call (diffusers' processors) on a 4-way batch: the floor
    unet-2x2way  two plain UNet calls on 2-way batches
    paired       (opt-in) the dual-mode 4-way UNet call of ``ours`` alternated with a plain 4-way
                 call on the same UNet in one process: the rotation's cost, free of run-to-run drift

Each child builds the components (time reported, excluded), runs one warm-up step, then
``--steps`` measured steps (median reported), decodes (pipelines), and prints a JSON line.

The runs in bench/README.md (2 shared CPU cores, ~15 min each, ~4 min for paired):

    python bench/step_cost.py
    python bench/step_cost.py --threads 1 --clock cpu --out bench/results/step_cost_1thread.md
    python bench/step_cost.py --cases paired --steps 6 --threads 1 --clock cpu --out bench/results/step_cost_paired.md

On a shared machine prefer ``--threads 1 --clock cpu`` (a contended 2-thread process slows down
3-4x) and the ``paired`` case for differences of a few percent.

Quick check while developing:

    python bench/step_cost.py --size 64 --frames 4 --steps 1

On a GPU at SVD-XT's native shapes (adds torch.cuda.max_memory_allocated per case and a
24 GB check; the naive reference is CPU/float32 only and reports so):

    python bench/step_cost.py --size 1024x576 --frames 25 --dtype float16 --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "step_cost.md"

CASES = {
    "plain-svd": "diffusers StableVideoDiffusionPipeline, 1 UNet call (2-way batch) per step",
    "ours": "InbetweenPipeline, 1 UNet call (4-way batch) per step",
    "ours-split": "InbetweenPipeline split_guidance_batch=True, 2 UNet calls (2-way) per step",
    "naive": "tests/reference.py NaiveInbetween, 2 UNet copies + stored maps, 2 calls (2-way) per step",
    "unet-4way": "plain UNet call, diffusers processors, 4-way batch",
    "unet-2x2way": "two plain UNet calls, diffusers processors, 2-way batches",
    "paired": "opt-in: ours' dual 4-way UNet call and a plain 4-way call, alternated in one process",
}

# SVD's VAE (vae/config.json of stabilityai/stable-video-diffusion-img2vid[-xt]); the class's
# default config is a one-block toy with no spatial downsampling.
SVD_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=768,
    scaling_factor=0.18215,
    force_upcast=True,
)
# Stands in for SVD's ViT-H/14 (632 M parameters): it runs once per video, the same for every
# case, so only its output width (the UNet's cross_attention_dim) matters here.
SMALL_CLIP_CONFIG = dict(
    hidden_size=64,
    projection_dim=1024,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    image_size=224,
    patch_size=14,
)
WEIGHT_STD = 0.02
ADAPTER_STD = 1e-3
MAX_GUIDANCE = 3.0
GPU_BUDGET_GB = 24.0
GB = 1024**3
# Run order: the floor next to ours (a shared machine's load drifts), the memory-hungry naive last.
DEFAULT_ORDER = ("unet-4way", "ours", "ours-split", "unet-2x2way", "plain-svd", "naive")


# ---------------------------------------------------------------------------------------------
# components


def tests_module(name: str):
    """Import ``tests/<name>.py`` (the tests folder is not a package)."""
    tests_dir = str(REPO / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    return __import__(name)


@torch.no_grad()
def fill_random_(model: torch.nn.Module, generator: torch.Generator, std: float = WEIGHT_STD) -> None:
    """Seeded weights: N(0, std) everywhere, identity affine for normalisation layers."""
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, norms):
                param.fill_(1.0 if name == "weight" else 0.0)
            else:
                param.normal_(0.0, std, generator=generator)


def random_model(cls, config: dict, device: torch.device, dtype: torch.dtype, generator: torch.Generator):
    """``cls(**config)`` with seeded random weights, built without the slow default init.

    Constructed on the meta device, allocated once (uninitialised) on ``device`` in ``dtype``,
    then filled in place from ``generator``.
    """
    with torch.device("meta"):
        model = cls(**config)
    model = model.to(dtype=dtype).to_empty(device=device)
    if any(True for _ in model.buffers()):
        raise RuntimeError(f"{cls.__name__} has buffers, which to_empty leaves uninitialised")
    fill_random_(model, generator)
    return model.eval().requires_grad_(False)


def build_components(device: torch.device, dtype: torch.dtype, seed: int) -> dict:
    """SVD's UNet and VAE architectures with random weights, a small CLIP, SVD's scheduler."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    generator = torch.Generator(device).manual_seed(seed)
    unet = random_model(UNetSpatioTemporalConditionModel, {}, device, dtype, generator)
    vae = random_model(AutoencoderKLTemporalDecoder, SVD_VAE_CONFIG, device, dtype, generator)
    torch.manual_seed(seed)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**SMALL_CLIP_CONFIG))
    image_encoder = image_encoder.to(device, dtype).eval().requires_grad_(False)
    scheduler = EulerDiscreteScheduler.from_config(tests_module("tiny").SVD_SCHEDULER_CONFIG)
    return dict(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, feature_extractor=CLIPImageProcessor()
    )


def random_adapter(unet: torch.nn.Module, seed: int):
    """A non-zero backward adapter: W_v / W_o deltas of all 16 temporal attention layers, N(0, 1e-3)."""
    adapter = tests_module("reference").zero_adapter(unet)
    generator = torch.Generator().manual_seed(seed + 1)
    for delta in adapter.deltas.values():
        delta.normal_(0.0, ADAPTER_STD, generator=generator)
    return adapter


def keyframes(width: int, height: int, seed: int):
    """Two random RGB keyframes (PIL)."""
    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(seed)
    return tuple(PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(2))


# ---------------------------------------------------------------------------------------------
# timing


class StepClock:
    """Wall and process-CPU timestamps at the end of steps; the first ``tick`` closes the warm-up step.

    Process CPU time (all threads) goes to the JSON next to wall time, as a hint of how much
    of a step was spent waiting for the CPU on a shared machine.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.stamps: list[tuple[float, float]] = []
        self.denoise_peak_bytes = 0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def tick(self, *_args) -> dict:
        self.sync()
        if self.device.type == "cuda":
            self.denoise_peak_bytes = torch.cuda.max_memory_allocated(self.device)
        self.stamps.append((time.perf_counter(), time.process_time()))
        return {}  # diffusers' callback_on_step_end contract: tensors to replace (none)

    def step_times(self, clock: int = 0) -> list[float]:
        """Seconds per measured step, wall (``clock=0``) or process CPU (``clock=1``)."""
        return [b[clock] - a[clock] for a, b in itertools.pairwise(self.stamps)]


def check_finite(name: str, tensor: torch.Tensor) -> None:
    if not torch.isfinite(tensor).all():
        raise FloatingPointError(f"{name} is not finite: random weights too large for this shape")


# ---------------------------------------------------------------------------------------------
# cases: each takes (components, args, clock) and runs warm-up + args.steps steps (+ decode)


def pipeline_kwargs(args) -> dict:
    return dict(
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        num_inference_steps=args.steps + 1,
        min_guidance_scale=1.0,
        max_guidance_scale=MAX_GUIDANCE,
        generator=torch.Generator().manual_seed(0),
    )


def run_plain_svd(components: dict, args, clock: StepClock) -> None:
    from diffusers import StableVideoDiffusionPipeline

    pipe = StableVideoDiffusionPipeline(**components).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    first, _ = keyframes(args.width, args.height, args.seed)
    frames = pipe(
        first,
        decode_chunk_size=args.decode_chunk,
        output_type="pt",
        callback_on_step_end=clock.tick,
        **pipeline_kwargs(args),
    ).frames
    check_finite("plain-svd frames", frames)


def run_ours(components: dict, args, clock: StepClock, split: bool = False) -> None:
    from inbetween import InbetweenPipeline

    pipe = InbetweenPipeline(**components).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_backward_adapter(random_adapter(pipe.unet, args.seed))
    first, last = keyframes(args.width, args.height, args.seed)
    frames = pipe(
        first,
        last,
        noise_injection_steps=0,
        split_guidance_batch=split,
        decode_chunk_size=args.decode_chunk,
        output_type="pt",
        callback_on_step_end=clock.tick,
        **pipeline_kwargs(args),
    ).frames
    check_finite("ours frames", frames)


def run_ours_split(components: dict, args, clock: StepClock) -> None:
    run_ours(components, args, clock, split=True)


def run_naive(components: dict, args, clock: StepClock) -> None:
    from inbetween import InbetweenPipeline

    NaiveInbetween = tests_module("reference").NaiveInbetween
    pipe = InbetweenPipeline(**components).to(args.device)
    unet_bytes = sum(p.numel() * p.element_size() for p in pipe.unet.parameters())
    ensure_free_memory(unet_bytes, "naive: NaiveInbetween copies the UNet once more")
    # Two UNets in all, as the published code holds: the pipeline's serves as the forward model.
    naive = NaiveInbetween(pipe, random_adapter(pipe.unet, args.seed), reuse_pipe_unet=True)
    first, last = keyframes(args.width, args.height, args.seed)
    kwargs = pipeline_kwargs(args)
    latents = naive(first, last, noise_injection_steps=0, step_timer=clock.tick, **kwargs)
    with torch.no_grad():
        frames = pipe.decode_latents(latents, args.decode_chunk)
    check_finite("naive frames", frames)


def plain_unet_inputs(unet, batch: int, args, seed: int) -> dict:
    """Random UNet inputs of the pipelines' shapes: (batch, N, 8, H/8, W/8) etc."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, args.frames, unet.config.in_channels, args.height // 8, args.width // 8)
    dtype, device = unet.dtype, args.device
    return dict(
        sample=torch.randn(shape, generator=generator).to(device, dtype),
        timestep=torch.tensor(1.0, device=device, dtype=dtype),
        encoder_hidden_states=torch.randn(batch, 1, unet.config.cross_attention_dim, generator=generator).to(
            device, dtype
        ),
        added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * batch, device=device, dtype=dtype),
        return_dict=False,
    )


def run_plain_unet(components: dict, args, clock: StepClock, batch: int, calls: int) -> None:
    """``calls`` UNet calls of ``batch`` rows per step; the UNet keeps diffusers' processors."""
    unet = components["unet"]
    inputs = plain_unet_inputs(unet, batch, args, args.seed)
    with torch.no_grad():
        for _ in range(args.steps + 1):
            for _ in range(calls):
                out = unet(**inputs)[0]
            check_finite("UNet output", out)
            clock.tick()


def run_unet_4way(components: dict, args, clock: StepClock) -> None:
    run_plain_unet(components, args, clock, batch=4, calls=1)


def run_unet_2x2way(components: dict, args, clock: StepClock) -> None:
    run_plain_unet(components, args, clock, batch=2, calls=2)


def run_paired(components: dict, args, clock: StepClock) -> dict:
    """Alternate a plain and a dual-mode (rotation + adapter) 4-way call of the same UNet, same inputs.

    Ticks after every call, so intervals alternate dual, plain, dual, ... after the first plain
    call (warm-up, with the first dual call). The case's steps are the dual calls; the plain
    calls and the per-pair ratios (``--clock``) are returned. Outside ``dual_mode`` the rotation
    processors run diffusers' default SDPA path.
    """
    from inbetween.attention import dual_mode

    unet = components["unet"]
    random_adapter(unet, args.seed).apply_to(unet)
    inputs = plain_unet_inputs(unet, 4, args, args.seed)
    with torch.no_grad():
        for _ in range(args.steps + 1):
            unet(**inputs)
            clock.tick()
            with dual_mode(unet):
                check_finite("dual UNet output", unet(**inputs)[0])
            clock.tick()
    wall, cpu = clock.step_times(0), clock.step_times(1)
    plain, dual = (wall, cpu)[args.clock == "cpu"][1::2], (wall, cpu)[args.clock == "cpu"][2::2]
    ratios = [d / p for d, p in zip(dual, plain, strict=True)]
    return dict(
        step_times_s=wall[2::2],
        step_cpu_s=cpu[2::2],
        paired_plain_s=plain,
        paired_dual_s=dual,
        paired_ratios=ratios,
        paired_median_ratio=statistics.median(ratios),
    )


RUNNERS: dict[str, Callable] = {
    "plain-svd": run_plain_svd,
    "ours": run_ours,
    "ours-split": run_ours_split,
    "naive": run_naive,
    "unet-4way": run_unet_4way,
    "unet-2x2way": run_unet_2x2way,
    "paired": run_paired,
}


def check_supported(args) -> None:
    if args.child == "naive" and (args.device != "cpu" or args.dtype != "float32"):
        raise NotImplementedError("tests/reference.py NaiveInbetween runs on the CPU in float32 only")


def ensure_free_memory(nbytes: int, why: str) -> None:
    """Refuse (instead of invoking the OOM killer on a shared machine) when RAM is short."""
    import psutil

    available = psutil.virtual_memory().available
    if available < 1.05 * nbytes:
        raise MemoryError(f"{why}: needs ~{nbytes / GB:.1f} GB more, {available / GB:.1f} GB available")


def run_case(args) -> dict:
    """Child process: build, warm up, measure; returns the JSON-able result."""
    import psutil
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    check_supported(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    ensure_free_memory(int(1.6e9 * dtype.itemsize) if device.type == "cpu" else 0, "the SVD UNet")
    load_before = os.getloadavg()
    start = time.perf_counter()
    components = build_components(device, dtype, args.seed)
    build_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    clock = StepClock(device)
    extra = RUNNERS[args.child](components, args, clock) or {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times, cpu_times = extra.pop("step_times_s", clock.step_times(0)), extra.pop("step_cpu_s", clock.step_times(1))
    result = dict(
        case=args.child,
        step_times_s=times,
        median_step_s=statistics.median(times),
        step_cpu_s=cpu_times,
        median_step_cpu_s=statistics.median(cpu_times),
        build_s=build_s,
        run_s=time.perf_counter() - start - build_s,
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB,
        threads=torch.get_num_threads(),
        loadavg_before=load_before[0],
        loadavg_after=os.getloadavg()[0],
        ram_available_gb=psutil.virtual_memory().available / GB,
        **extra,
    )
    if device.type == "cuda":
        result.update(
            cuda_peak_gb=torch.cuda.max_memory_allocated(device) / GB,
            cuda_denoise_peak_gb=clock.denoise_peak_bytes / GB,
        )
    return result


# ---------------------------------------------------------------------------------------------
# parent: one subprocess per case, table, target checks


def child_command(case: str, args) -> list[str]:
    return python_child(
        Path(__file__),
        case,
        args.threads,
        steps=args.steps,
        frames=args.frames,
        size=f"{args.width}x{args.height}",
        dtype=args.dtype,
        device=args.device,
        seed=args.seed,
        decode_chunk=args.decode_chunk,
    )


def python_child(script: Path, case: str, threads: int | None, **flags: object) -> list[str]:
    """``python SCRIPT --child CASE --flag value ...`` (underscores become dashes; --threads only when set)."""
    command = [sys.executable, str(script.resolve()), "--child", case]
    for name, value in flags.items():
        command += ["--" + name.replace("_", "-"), str(value)]
    return command + (["--threads", str(threads)] if threads else [])


def run_child(case: str, args) -> dict:
    return run_in_subprocess(child_command(case, args), f"[step_cost] {case}", CASES[case])


def run_in_subprocess(command: list[str], label: str, description: str) -> dict:
    """Run one case in its own process; its last stdout line is its JSON result."""
    print(f"{label}: {description}", file=sys.stderr, flush=True)
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        reason = "killed (out of memory?)" if proc.returncode == -9 else f"exit code {proc.returncode}"
        result = dict(case=label.rsplit(" ", 1)[-1], error=reason)
    print(f"{label}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


STEP_KEYS = {"wall": "median_step_s", "cpu": "median_step_cpu_s"}


def format_table(results: dict[str, dict], cuda: bool, clock: str = "wall") -> str:
    def get(case: str, key: str) -> float | None:
        return results.get(case, {}).get(key)

    step_key = STEP_KEYS[clock]
    other = "cpu" if clock == "wall" else "wall"
    header = [
        "case",
        f"median step s ({clock})",
        "ratio vs unet-4way",
        "ratio vs plain-svd step",
        "peak RSS GB",
        "RSS ratio vs plain-svd",
        "build s (excluded)",
        f"median step s ({other})",
    ]
    if cuda:
        header += ["peak CUDA GB (denoise)", "peak CUDA GB (all)"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in [case for case in CASES if case in results]:
        result = results[case]
        if "error" in result:
            rows.append(f"| {case} | {result['error']} |" + " |" * (len(header) - 2))
            continue
        step, rss = result[step_key], result["peak_rss_gb"]
        cells = [
            case,
            fmt(step, 2),
            fmt(ratio(step, get("unet-4way", step_key)), 3, "x"),
            fmt(ratio(step, get("plain-svd", step_key)), 2, "x"),
            fmt(rss, 2),
            fmt(ratio(rss, get("plain-svd", "peak_rss_gb")), 2, "x"),
            fmt(result["build_s"], 0),
            fmt(result[STEP_KEYS[other]], 2),
        ]
        if cuda:
            cells += [fmt(result.get("cuda_denoise_peak_gb"), 2), fmt(result.get("cuda_peak_gb"), 2)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def check_line(label: str, ok: bool | None, detail: str) -> str:
    verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
    return f"{label}: {verdict} ({detail})"


def target_checks(results: dict[str, dict], cuda: bool, clock: str = "wall") -> list[str]:
    def get(case: str, key: str) -> float | None:
        return results.get(case, {}).get(key)

    ours, floor, naive = (get(c, STEP_KEYS[clock]) for c in ("ours", "unet-4way", "naive"))
    step_ratio = ratio(ours, floor)
    rss_ratio = ratio(get("ours", "peak_rss_gb"), get("plain-svd", "peak_rss_gb"))
    lines = [
        check_line(
            "ours step <= 1.05x unet-4way", None if step_ratio is None else step_ratio <= 1.05, fmt(step_ratio, 2)
        ),
        check_line(
            "ours faster than naive",
            None if ours is None or naive is None else ours < naive,
            f"{fmt(ours)} s vs {fmt(naive)} s",
        ),
        check_line(
            "ours peak RSS <= 1.15x plain-svd", None if rss_ratio is None else rss_ratio <= 1.15, fmt(rss_ratio, 2)
        ),
    ]
    if cuda:
        peak = get("ours", "cuda_peak_gb")
        lines.append(
            check_line(
                f"ours peak CUDA memory <= {GPU_BUDGET_GB:.0f} GB",
                None if peak is None else peak <= GPU_BUDGET_GB,
                f"{fmt(peak)} GB",
            )
        )
    return lines


def report(results: dict[str, dict], args, command: str) -> str:
    cuda = args.device.startswith("cuda")
    import diffusers

    setup = (
        f"{args.width}x{args.height} px, {args.frames} frames, {args.dtype}, {args.device}, guidance max "
        f"{MAX_GUIDANCE:g}, 1 warm-up + {args.steps} measured steps (median, {args.clock} clock), decode chunk "
        f"{args.decode_chunk}; {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({args.threads or torch.get_num_threads()} threads), "
        f"diffusers {diffusers.__version__}, python {platform.python_version()}"
    )
    table, checks = format_table(results, cuda, args.clock), target_checks(results, cuda, args.clock)
    lines = [f"`{command}`", "", setup, "", table, "", *checks]
    loads = [
        f"{case} {r['loadavg_before']:.1f}->{r['loadavg_after']:.1f}"
        for case, r in results.items()
        if "loadavg_before" in r
    ]  # in run order
    paired = results.get("paired", {})
    if "paired_ratios" in paired:
        per_pair = ", ".join(f"{r:.3f}" for r in paired["paired_ratios"])
        lines += [
            "",
            f"paired (one process, alternating): dual 4-way UNet call / plain 4-way UNet call = "
            f"{paired['paired_median_ratio']:.3f} median ({args.clock} clock; per pair: {per_pair})",
        ]
    if loads:
        lines += ["", "1-min load average before->after each case: " + ", ".join(loads)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# command line


def parse_size(text: str) -> tuple[int, int]:
    """``"64"`` -> (64, 64); ``"1024x576"`` -> (1024, 576), width x height."""
    width, _, height = text.lower().partition("x")
    return int(width), int(height or width)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cases", default=",".join(DEFAULT_ORDER), help=f"comma list, run in this order, of {', '.join(CASES)}"
    )
    parser.add_argument("--steps", type=int, default=3, help="measured steps per case, after 1 warm-up step")
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--size", default="64", help="WIDTHxHEIGHT in pixels, or one number for a square")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decode-chunk", type=int, default=None, help="frames decoded at a time (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=list(STEP_KEYS),
        help="step time for ratios and checks: wall, or process CPU time (robust to other load with --threads 1)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report (also .json next to it)")
    parser.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.width, args.height = parse_size(args.size)
    args.decode_chunk = args.decode_chunk or args.frames
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    if args.width % 64 or args.height % 64:
        parser.error("--size must be multiples of 64")
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu measures host CPU time; use the wall clock on a GPU")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        try:
            result = run_case(args)
        except (MemoryError, NotImplementedError, FloatingPointError) as exc:
            print(json.dumps(dict(case=args.child, error=f"{type(exc).__name__}: {exc}")), flush=True)
            sys.exit(1)
        print(json.dumps(result), flush=True)
        return
    command = "python bench/step_cost.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {case: run_child(case, args) for case in args.cases.split(",")}
    text = report(results, args, command.strip())
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"[step_cost] wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
