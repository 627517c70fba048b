"""The peak-memory estimate of ``inbetween.memory`` next to the measured peak, one subprocess per row.

Each row builds its model(s) in a fresh child process (random weights: memory does not depend on the values),
makes the inputs, then measures the peak resident memory of ONE forward (UNet call, VAE decode or encode) or one
whole pipeline call above what was resident before it: the kernel's high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``) minus ``VmRSS`` before the call. Two measurements per row:

* ``live``: with ``MALLOC_MMAP_THRESHOLD_=65536``, so that every tensor above 64 kB is its own mapping, returned to
  the kernel when freed: the peak of the live tensors, which is what the estimate models;
* ``malloc``: with glibc's default (dynamic) threshold, what a plain process sees; tensors below 32 MB may then come
  from the heap, whose fragments can raise a first call's peak well above the live tensors at small sizes.

Rows (``--rows all``: ~25 minutes on 2 shared CPU cores; ``quick`` ~13 without the SVD-sized ones, ``svd`` ~10):

* ``unet-*``: the tests' tiny UNet, a mid-size one (SVD's layout at a fifth of its widths), SVD's UNet architecture
  (``UNetSpatioTemporalConditionModel()``, 1.5 B parameters) at 64x64 px (8x8 latents), 8 / 14 frames, 2 / 4 rows,
  with the pipeline's rotation installed and dual mode on (as the pipeline calls it), plus one 256x256 px row;
* ``decode-*`` / ``encode-*``: SVD's VAE architecture;
* ``pipe-*``: whole calls of the shipped tiny-world pipeline (encode, 1 step, decode).

Measured with torch 2.13 / diffusers 0.42 on CPU (2 threads), float32: estimate / live 1.01-1.67 (UNet and whole
calls from 400 MB up 1.01-1.10, VAE rows 1.12-1.32, 1.67 for a 38 MB forward where the fixed first-call overhead
dominates), estimate with ``cpu_heap`` / malloc 1.09-1.80.

    python bench/memory_estimate.py                 # all rows, table to stdout
    python bench/memory_estimate.py --rows quick
    python bench/memory_estimate.py --out bench/results/memory_estimate.md
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

# SVD's VAE (vae/config.json of stabilityai/stable-video-diffusion-img2vid[-xt]); the class's default is a toy.
SVD_VAE = dict(
    down_block_types=["DownEncoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    force_upcast=True,
)
TINY_UNET = dict(  # tests/tiny.py
    block_out_channels=[32, 64],
    layers_per_block=2,
    in_channels=8,
    out_channels=4,
    down_block_types=["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
    up_block_types=["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
    cross_attention_dim=32,
    num_attention_heads=[2, 4],
    projection_class_embeddings_input_dim=96,
    addition_time_embed_dim=32,
)
MID_UNET = dict(  # SVD's layout at a fifth of its widths
    block_out_channels=[64, 128, 256, 256],
    num_attention_heads=[2, 4, 8, 8],
    cross_attention_dim=64,
    projection_class_embeddings_input_dim=96,
    addition_time_embed_dim=32,
)
SVD_UNET: dict = {}  # the class's default config is SVD's
UNETS = {"tiny": TINY_UNET, "mid": MID_UNET, "svd": SVD_UNET}

# (name, kind, arguments): unet (config, rows, frames, latent h, latent w), decode (frames, latent h, w),
# encode (images, H, W), pipe (batch, frames, H, W, decode chunk, split)
QUICK_ROWS = [
    ("unet-tiny 2x8 16x16", "unet", dict(unet="tiny", rows=2, frames=8, h=16, w=16)),
    ("unet-tiny 2x8 32x32", "unet", dict(unet="tiny", rows=2, frames=8, h=32, w=32)),
    ("unet-tiny 2x16 32x32", "unet", dict(unet="tiny", rows=2, frames=16, h=32, w=32)),
    ("unet-tiny 4x25 32x32", "unet", dict(unet="tiny", rows=4, frames=25, h=32, w=32)),
    ("unet-mid 2x8 32x32", "unet", dict(unet="mid", rows=2, frames=8, h=32, w=32)),
    ("unet-mid 2x8 64x64", "unet", dict(unet="mid", rows=2, frames=8, h=64, w=64)),
    ("unet-mid 4x8 64x64", "unet", dict(unet="mid", rows=4, frames=8, h=64, w=64)),
    ("pipe-tiny-world 1x8 128x128", "pipe", dict(batch=1, frames=8, height=128, width=128, chunk=None, split=False)),
    ("pipe-tiny-world 1x8 256x256", "pipe", dict(batch=1, frames=8, height=256, width=256, chunk=None, split=False)),
    (
        "pipe-tiny-world 1x8 256x256 split",
        "pipe",
        dict(batch=1, frames=8, height=256, width=256, chunk=None, split=True),
    ),
    (
        "pipe-tiny-world 2x8 128x128 chunk 2",
        "pipe",
        dict(batch=2, frames=8, height=128, width=128, chunk=2, split=False),
    ),
]
SVD_ROWS = [
    ("unet-svd 2x8 8x8", "unet", dict(unet="svd", rows=2, frames=8, h=8, w=8)),
    ("unet-svd 4x8 8x8", "unet", dict(unet="svd", rows=4, frames=8, h=8, w=8)),
    ("unet-svd 2x14 8x8", "unet", dict(unet="svd", rows=2, frames=14, h=8, w=8)),
    ("unet-svd 4x14 8x8", "unet", dict(unet="svd", rows=4, frames=14, h=8, w=8)),
    ("unet-svd 2x8 32x32", "unet", dict(unet="svd", rows=2, frames=8, h=32, w=32)),
    ("decode-svd 2 frames 32x32", "decode", dict(frames=2, h=32, w=32)),
    ("decode-svd 4 frames 32x32", "decode", dict(frames=4, h=32, w=32)),
    ("decode-svd 2 frames 16x16", "decode", dict(frames=2, h=16, w=16)),
    ("encode-svd 2 images 256x256", "encode", dict(images=2, height=256, width=256)),
]
ROW_SETS = {"quick": QUICK_ROWS, "svd": SVD_ROWS, "all": QUICK_ROWS + SVD_ROWS}
LIVE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


# child: build, measure one call -------------------------------------------------------------------------------


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def measure_peak(run) -> int:
    """Peak resident bytes of ``run()`` above those resident before it (Linux: VmHWM reset by clear_refs)."""
    gc.collect()
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset the high-water mark to the current RSS
    result = run()
    peak = _status("VmHWM") - before
    del result
    return peak


def random_model(cls, config: dict):
    import torch

    with torch.device("meta"):
        model = cls(**config)
    model = model.to_empty(device="cpu").eval().requires_grad_(False)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.uniform_(-0.02, 0.02)
    return model


def child_unet(unet: str, rows: int, frames: int, h: int, w: int) -> dict:
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    from inbetween.attention import dual_mode, install_rotation

    model = random_model(UNetSpatioTemporalConditionModel, UNETS[unet])
    install_rotation(model)
    config = model.config
    sample = torch.randn(rows, frames, config.in_channels, h, w)
    context = torch.randn(rows, 1, config.cross_attention_dim)
    time_ids = torch.randn(rows, 3)
    sigma = torch.tensor(1.0)

    def run():
        with torch.no_grad(), dual_mode(model):
            return model(sample, sigma, context, time_ids, return_dict=False)[0]

    return {"peak": measure_peak(run)}


def child_decode(frames: int, h: int, w: int) -> dict:
    import torch
    from diffusers import AutoencoderKLTemporalDecoder

    vae = random_model(AutoencoderKLTemporalDecoder, SVD_VAE)
    latents = torch.randn(frames, SVD_VAE["latent_channels"], h, w)

    def run():
        with torch.no_grad():
            return vae.decode(latents, num_frames=frames).sample

    return {"peak": measure_peak(run)}


def child_encode(images: int, height: int, width: int) -> dict:
    import torch
    from diffusers import AutoencoderKLTemporalDecoder

    vae = random_model(AutoencoderKLTemporalDecoder, SVD_VAE)
    pixels = torch.rand(images, 3, height, width) * 2 - 1

    def run():
        with torch.no_grad():
            return vae.encode(pixels).latent_dist.mode()

    return {"peak": measure_peak(run)}


def child_pipe(batch: int, frames: int, height: int, width: int, chunk: int | None, split: bool) -> dict:
    import torch

    from inbetween import InbetweenPipeline
    from inbetween.hub import TINY_WORLD_FOLDER

    pipe = InbetweenPipeline.from_pretrained(str(TINY_WORLD_FOLDER))
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    first = torch.rand(batch, 3, height, width, generator=generator)
    last = torch.rand(batch, 3, height, width, generator=generator)

    def run():
        return pipe(
            first,
            last,
            height=height,
            width=width,
            num_frames=frames,
            num_inference_steps=1,
            noise_injection_steps=0,
            max_guidance_scale=3.0,
            decode_chunk_size=chunk,
            split_guidance_batch=split,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).frames

    return {"peak": measure_peak(run)}


CHILDREN = {"unet": child_unet, "decode": child_decode, "encode": child_encode, "pipe": child_pipe}


# parent: estimate, run the children, print the table ----------------------------------------------------------


def estimate(kind: str, args: dict, cpu_heap: bool) -> int:
    """The estimate of the same forward (or call), from the same configs, with nothing allocated."""
    from inbetween import memory

    if kind == "unet":
        import torch
        from diffusers import UNetSpatioTemporalConditionModel

        with torch.device("meta"):  # the full config, defaults included
            config = dict(UNetSpatioTemporalConditionModel(**UNETS[args["unet"]]).config)
        return memory.unet_forward_bytes(
            config, args["rows"], args["frames"], args["h"], args["w"], 4, cpu_heap=cpu_heap
        )
    if kind == "decode":
        return memory.decode_forward_bytes(SVD_VAE, args["frames"], args["h"], args["w"], 4, cpu_heap=cpu_heap)
    if kind == "encode":
        return memory.encode_forward_bytes(
            SVD_VAE, args["images"], args["height"], args["width"], 4, cpu_heap=cpu_heap
        )
    if kind == "pipe":
        from inbetween.hub import TINY_WORLD_FOLDER
        from inbetween.layout import BatchLayout

        unet_config = json.loads((TINY_WORLD_FOLDER / "unet" / "config.json").read_text())
        vae_config = json.loads((TINY_WORLD_FOLDER / "vae" / "config.json").read_text())
        layout = BatchLayout.plan(True, ("forward", "backward"), True, args["split"])
        return memory.estimate_call_memory(
            unet_config,
            vae_config,
            batch_size=args["batch"],
            num_frames=args["frames"],
            height=args["height"],
            width=args["width"],
            rows_per_pair=layout.rows_per_pair,
            calls=len(layout.calls),
            decode_chunk_size=args["chunk"],
            dtype_bytes=4,
            cpu_heap=cpu_heap,
        ).peak_bytes
    raise ValueError(kind)


def run_child(kind: str, args: dict, env: dict, threads: int | None) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps({"kind": kind, "args": args})]
    environment = {**os.environ, **env, "PYTHONPATH": str(REPO / "src")}
    if threads:
        environment["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"child {kind} {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", choices=sorted(ROW_SETS), default="all")
    parser.add_argument("--only", help="run the rows whose name contains this")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the children (default: torch's)")
    parser.add_argument("--no-malloc", action="store_true", help="skip the default-malloc measurement")
    parser.add_argument("--out", help="also write the table (markdown) here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILDREN[spec["kind"]](**spec["args"])))
        return 0

    from inbetween.memory import format_bytes

    lines = [
        "| row | estimate | measured live | est / live | estimate, cpu_heap | measured malloc | est / malloc | s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for name, kind, row in ROW_SETS[args.rows]:
        if args.only and args.only not in name:
            continue
        start = time.perf_counter()
        guess, guess_heap = estimate(kind, row, cpu_heap=False), estimate(kind, row, cpu_heap=True)
        live = run_child(kind, row, LIVE_ENV, args.threads)["peak"]
        malloc = None if args.no_malloc else run_child(kind, row, {}, args.threads)["peak"]
        seconds = time.perf_counter() - start
        malloc_cells = ("-", "-") if malloc is None else (format_bytes(malloc), f"{guess_heap / malloc:.2f}")
        line = (
            f"| {name} | {format_bytes(guess)} | {format_bytes(live)} | {guess / live:.2f} | "
            f"{format_bytes(guess_heap)} | {malloc_cells[0]} | {malloc_cells[1]} | {seconds:.0f} |"
        )
        lines.append(line)
        print(line, flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
