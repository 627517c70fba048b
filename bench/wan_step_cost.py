"""Cost of one dual-directional step on Wan, side by side with diffusers' Wan pipeline, at the Wan 2.1 1.3B widths.

The transformer has Wan2.1-1.3B's layer widths (dim 1536 = 12 heads x 128, FFN 8960, 30 layers, text width 4096,
1.42 B parameters with the I2V input channels: 16 noise + 4 mask + 16 condition = 36, and Wan 2.1 I2V's image
attention, CLIP width 1280), random weights; the text encoder, CLIP tower and VAE are tiny (the same in every case),
so the transformer dominates as it does on a real model. Every case runs in its own subprocess (peak RSS per case):

    diffusers   one step of diffusers' WanImageToVideoPipeline: guidance as two 1-row transformer calls
    ours        one step of WanInbetweenPipeline, sampler gi: ONE transformer call on [fwd-u, fwd-c, bwd-u, bwd-c]
                with the rotated attention
    plain-4way  one transformer call with diffusers' processors on a 4-row batch: the floor of a dual step
    paired      in one process, the dual-mode 4-row call of `ours` alternated with the plain 4-row call on the same
                transformer and inputs: the rotation's own cost, free of run-to-run drift

Run (about 10 minutes on 2 CPU cores):

    python bench/wan_step_cost.py --out bench/results/wan_step_cost.md
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

WIDTHS_1_3B = dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096)


def build_components(seed: int) -> dict:
    from diffusers import WanTransformer3DModel
    from tiny_wan import tiny_wan_components
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    components = tiny_wan_components("wan2.1-i2v", seed)
    text = components["text_encoder"].config
    components["text_encoder"] = UMT5EncoderModel(
        UMT5Config(**{**text.to_dict(), "d_model": WIDTHS_1_3B["text_dim"]})
    ).eval()
    vision = components["image_encoder"].config
    components["image_encoder"] = CLIPVisionModel(CLIPVisionConfig(**{**vision.to_dict(), "hidden_size": 1280})).eval()
    inner = WIDTHS_1_3B["num_attention_heads"] * WIDTHS_1_3B["attention_head_dim"]
    components["transformer"] = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        in_channels=36,
        out_channels=16,
        freq_dim=256,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=1280,
        added_kv_proj_dim=inner,
        rope_max_seq_len=1024,
        **WIDTHS_1_3B,
    ).eval()
    return components


def keyframes(size: int):
    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(0)
    return [PIL.Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8")) for _ in range(2)]


class StepTimer:
    """Wall time of every denoising step, from the pipelines' step-end callbacks."""

    def __init__(self) -> None:
        self.marks = [time.perf_counter()]

    def __call__(self, pipe, step, timestep, tensors):
        self.marks.append(time.perf_counter())
        return {}

    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


def run_pipeline(case: str, args) -> dict:
    from diffusers import WanImageToVideoPipeline

    from inbetween.families.wan import WanInbetweenPipeline

    components = build_components(args.seed)
    first, last = keyframes(args.size)
    common = dict(height=args.size, width=args.size, num_frames=args.frames, num_inference_steps=args.steps + 1)
    timer = StepTimer()
    with torch.no_grad():
        if case == "diffusers":
            pipe = WanImageToVideoPipeline(**components)
            pipe.set_progress_bar_config(disable=True)
            timer.marks = [time.perf_counter()]
            pipe(
                image=first,
                prompt="a cat",
                negative_prompt="blurry",
                guidance_scale=5.0,
                output_type="latent",
                callback_on_step_end=timer,
                **common,
            )
        else:
            pipe = WanInbetweenPipeline(**components)
            pipe.set_progress_bar_config(disable=True)
            timer.marks = [time.perf_counter()]
            pipe(
                first,
                last,
                prompt="a cat",
                negative_prompt="blurry",
                sampler="gi",
                noise_injection_steps=0,
                min_guidance_scale=5.0,
                max_guidance_scale=5.0,
                output_type="latent",
                callback_on_step_end=timer,
                **common,
            )
    steps = timer.steps()[1:]  # the first step includes the encoders' work and warms up
    return {"step_s": statistics.median(steps), "steps": steps}


def transformer_inputs(transformer, rows: int, args) -> dict:
    generator = torch.Generator().manual_seed(args.seed)
    frames = (args.frames - 1) // 4 + 1
    latent = args.size // 8
    return dict(
        hidden_states=torch.randn(rows, 36, frames, latent, latent, generator=generator),
        timestep=torch.full((rows,), 500.0),
        encoder_hidden_states=torch.randn(rows, 512, WIDTHS_1_3B["text_dim"], generator=generator),
        encoder_hidden_states_image=torch.randn(rows, 5, 1280, generator=generator),
        return_dict=False,
    )


def run_plain_4way(args) -> dict:
    transformer = build_components(args.seed)["transformer"]
    inputs = transformer_inputs(transformer, 4, args)
    times = []
    with torch.no_grad():
        for _ in range(args.steps + 1):
            start = time.perf_counter()
            transformer(**inputs)
            times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times[1:]), "steps": times[1:]}


def run_paired(args) -> dict:
    from inbetween.families.wan_attention import dual_mode, install_rotation

    transformer = build_components(args.seed)["transformer"]
    install_rotation(transformer)
    inputs = transformer_inputs(transformer, 4, args)
    frames = inputs["hidden_states"].shape[2]
    plain, dual = [], []
    with torch.no_grad():
        transformer(**inputs)  # warm-up
        for _ in range(args.steps):
            start = time.perf_counter()
            transformer(**inputs)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            with dual_mode(transformer, 2, 2, frames):
                transformer(**inputs)
            dual.append(time.perf_counter() - start)
    return {"plain_s": statistics.median(plain), "dual_s": statistics.median(dual), "plain": plain, "dual": dual}


def run_case(case: str, args) -> dict:
    torch.set_num_threads(args.threads)
    if case in ("diffusers", "ours"):
        result = run_pipeline(case, args)
    elif case == "plain-4way":
        result = run_plain_4way(args)
    else:
        result = run_paired(args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def child(case: str, args) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        case,
        "--size",
        str(args.size),
        "--frames",
        str(args.frames),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
    ]
    print(f"running {case} ...", file=sys.stderr, flush=True)
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(results: dict, args) -> str:
    ours, theirs, floor, paired = (results[c] for c in ("ours", "diffusers", "plain-4way", "paired"))
    step_ratio = ours["step_s"] / floor["step_s"]
    paired_ratio = paired["dual_s"] / paired["plain_s"]
    rss_ratio = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
    lines = [
        f"Wan 2.1 1.3B widths (I2V channels), {args.frames} frames at {args.size}x{args.size}, float32 CPU, "
        f"{args.threads} thread(s), {args.steps} measured steps (median), `python bench/wan_step_cost.py "
        f"--size {args.size} --frames {args.frames} --steps {args.steps} --threads {args.threads}`",
        "",
        "| case | step s (median) | peak RSS MB |",
        "|---|---|---|",
        f"| diffusers' WanImageToVideoPipeline (2 x 1-row calls) | {theirs['step_s']:.2f} | "
        f"{theirs['peak_rss_mb']:.0f} |",
        f"| ours, gi (1 x 4-row dual call) | {ours['step_s']:.2f} | {ours['peak_rss_mb']:.0f} |",
        f"| plain 4-row transformer call | {floor['step_s']:.2f} | {floor['peak_rss_mb']:.0f} |",
        f"| paired: plain 4-row / dual 4-row, same process | {paired['plain_s']:.2f} / {paired['dual_s']:.2f} | "
        f"{paired['peak_rss_mb']:.0f} |",
        "",
        f"- dual step / one plain 4-row call: **{step_ratio:.3f}x** (separate processes), **{paired_ratio:.3f}x** "
        f"(paired in one process); target <= 1.05x",
        f"- peak RSS ours / diffusers' pipeline: **{rss_ratio:.3f}x**; target <= 1.15x",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128, help="square frames, pixels (multiple of 16)")
    parser.add_argument("--frames", type=int, default=17, help="4k + 1")
    parser.add_argument("--steps", type=int, default=3, help="measured steps, after one warm-up step")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(args.child, args)))
        return
    results = {case: child(case, args) for case in ("diffusers", "ours", "plain-4way", "paired")}
    text = report(results, args)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
