"""``inbetween convert-checkpoint FINETUNED -o adapter.safetensors``: a full fine-tuned UNet as a backward adapter."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import DTYPE_NAMES
from ..errors import one_line
from ..hub import SVD

HELP = "turn a fine-tuned UNet into a backward adapter"
DESCRIPTION = "Store the W_v / W_o differences between FINETUNED and BASE as a backward adapter file."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("finetuned", metavar="FINETUNED", help="fine-tuned UNet or pipeline folder, or Hub id")
    p.add_argument("--base", default=SVD, help="the model it was fine-tuned from (default: %(default)s)")
    p.add_argument("--base-variant", help="weights variant of BASE, e.g. fp16")
    p.add_argument("-o", "--output", required=True, help="adapter file, e.g. backward_adapter.safetensors")
    p.add_argument(
        "--dtype",
        choices=("auto", *DTYPE_NAMES),
        default="auto",
        help="precision of the stored deltas; auto: that of BASE's weights, e.g. float16 with --base-variant fp16 "
        "(default: %(default)s)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def run(args: argparse.Namespace) -> int:
    from safetensors import SafetensorError

    from ..adapter import convert_full_unet_checkpoint

    output = Path(args.output)
    if output.suffix != ".safetensors":
        raise ValueError(f"adapter output `{output}` must end in .safetensors")
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"output `{output}` already exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise ValueError(f"folder `{output.parent}` for output `{output}` does not exist; create it first")
    try:
        adapter = convert_full_unet_checkpoint(args.finetuned, args.base, variant=args.base_variant, dtype=args.dtype)
    except SafetensorError as exc:
        raise ValueError(
            f"cannot read the UNet weights of `{args.finetuned}` or `{args.base}` "
            f"({one_line(exc)}); re-download or re-save them"
        ) from exc
    path = adapter.save(output, overwrite=args.overwrite)
    size = path.stat().st_size
    print(
        f"wrote {path}: {len(adapter.layers)} layers, {adapter.num_parameters:,} parameters, "
        f"{str(adapter.dtype).removeprefix('torch.')}, "
        + (f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB")
    )
    return 0
