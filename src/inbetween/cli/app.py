"""``inbetween app``: the browser app (gradio), serving one model on this machine."""

from __future__ import annotations

import argparse
import importlib.util
import signal

from ..config import DTYPE_NAMES
from ..errors import one_line
from ..hub import SVD_XT, TINY_WORLD

HELP = "the browser app: keyframes in, video out (needs `pip install 'inbetween[app]'`)"
DESCRIPTION = (
    "Serve a page where you add keyframes, choose the settings and get the video, its frames and the equivalent "
    "`inbetween interpolate` command; and one API endpoint, /interpolate (see the README). Only this machine can "
    "reach it unless --host says otherwise; a public link only with --share. Stop it with Ctrl-C: its temporary "
    "files are deleted."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model and hardware")
    m.add_argument(
        "--model",
        help=f"Hub id or folder of an SVD model, or `{TINY_WORLD}` (default: `{SVD_XT}` with a CUDA GPU, else "
        f"`{TINY_WORLD}`, the small offline model shipped with inbetween)",
    )
    m.add_argument("--variant", help="weights variant, e.g. fp16")
    m.add_argument("--adapter", metavar="PATH", help="backward adapter .safetensors (see convert-checkpoint)")
    m.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), default="auto", help="default: %(default)s")
    m.add_argument(
        "--dtype", choices=("auto", *DTYPE_NAMES), default="auto", help="auto: float16 on cuda, float32 elsewhere"
    )
    m.add_argument("--cpu-offload", action="store_true", help="keep models in CPU memory until used (cuda only)")
    s = p.add_argument_group("server")
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 opens it to your network (default: %(default)s)",
    )
    s.add_argument("--port", type=int, default=7860, help="default: %(default)s")
    s.add_argument("--share", action="store_true", help="also make a public gradio.live link (default: none)")


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise ValueError("the app needs gradio, which is not installed; run `pip install 'inbetween[app]'`")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"`--port` must be in 0-65535, got {args.port}")
    import torch

    from ..app import ModelSpec, serve

    model = args.model or (SVD_XT if torch.cuda.is_available() else TINY_WORLD)
    spec = ModelSpec(model, args.adapter, args.variant, args.device, args.dtype, args.cpu_offload)
    # Stop on SIGTERM as on Ctrl-C, and on Ctrl-C even when started in the background: the temporary files go too.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    try:
        serve(spec, host=args.host, port=args.port, share=args.share)
    except OSError as exc:  # the port is taken, or the host is not an address of this machine
        reason = one_line(exc).split(". ")[0]  # gradio's first sentence; the rest is about its own settings
        raise ValueError(f"cannot serve on {args.host}:{args.port} ({reason}); pass another --port or --host") from exc
    except KeyboardInterrupt:
        pass
    return 0
