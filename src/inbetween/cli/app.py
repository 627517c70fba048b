"""``inbetween app``: the browser app (gradio), serving one model on this machine."""

from __future__ import annotations

import argparse
import importlib.util
import signal

from ..errors import one_line
from ..hub import SVD_XT, TINY_WORLD
from .options import add_model_arguments, model_config_of, model_device_of

HELP = "the browser app: keyframes in, video out (needs `pip install 'inbetween[app]'`)"
DESCRIPTION = (
    "Serve a page where you add keyframes, choose the settings and get the video, its frames and the equivalent "
    "`inbetween interpolate` command; and one API endpoint, /interpolate (see the README). Only this machine can "
    "reach it unless --host says otherwise; a public link only with --share. Stop it with Ctrl-C: its temporary "
    "files are deleted."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(
        p,
        defaults={"model": None},
        description=f"--model defaults to `{SVD_XT}` with a CUDA GPU, else `{TINY_WORLD}`, the small offline model "
        "shipped with inbetween",
    )
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

    from ..app import serve

    model = model_config_of(args, model=args.model or (SVD_XT if torch.cuda.is_available() else TINY_WORLD))
    model_device_of(model)  # a device this machine lacks stops here, not on the page
    # Stop on SIGTERM as on Ctrl-C, and on Ctrl-C even when started in the background: the temporary files go too.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    try:
        serve(model, host=args.host, port=args.port, share=args.share)
    except OSError as exc:  # the port is taken, or the host is not an address of this machine
        reason = one_line(exc).split(". ")[0]  # gradio's first sentence; the rest is about its own settings
        raise ValueError(f"cannot serve on {args.host}:{args.port} ({reason}); pass another --port or --host") from exc
    except KeyboardInterrupt:
        pass
    return 0
