"""``inbetween interpolate KEYFRAME KEYFRAME ... -o OUT``: the video through two or more keyframes, ``--loop`` back to
the first."""

from __future__ import annotations

import argparse
import typing

from ..config import SamplingConfig
from ..loading import check_keyframe_files, load_pipeline
from .options import (
    add_dataclass_arguments,
    add_model_arguments,
    add_preset_argument,
    errors_name_flags,
    library_output,
    model_config_of,
    model_device_of,
    sampling_values,
)

if typing.TYPE_CHECKING:
    from PIL import Image


HELP = "generate the video between two keyframes, or through several (--loop: back to the first)"
DESCRIPTION = (
    "Generate the video through the keyframes (all included): each consecutive pair is a segment of --num-frames "
    "frames that shares its boundary frame with the next, so n keyframes give (n-1)(N-1)+1 frames (--loop: n(N-1), "
    "with no frame repeated where it wraps). The segments are sampled together, their shared frames fused at every "
    "step."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "keyframes",
        metavar="KEYFRAME",
        nargs="+",
        help="two or more keyframes in order (PNG, JPEG, WebP), all of one aspect ratio",
    )
    p.add_argument("-o", "--output", required=True, help="out.mp4, out.gif, out.webp or a folder for PNG frames")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars or library warnings")
    p.add_argument("--seed", type=int, default=0, help="same seed, same video on any device (default: %(default)s)")
    add_dataclass_arguments(p.add_argument_group("sampling (defaults: the paper's and SVD's)"), SamplingConfig)
    add_preset_argument(p)
    p.add_argument("--output-fps", type=float, metavar="X", help="playback fps of the video (default: --fps)")
    add_sequence_arguments(p.add_argument_group("keyframe sequences"))
    p.add_argument(
        "--allow-oversize",
        action="store_true",
        help="run even when the estimated peak memory exceeds what is available (default: refuse, with the estimate)",
    )
    add_model_arguments(p)


def add_sequence_arguments(g: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    """``--loop``, ``--segment-batch``."""
    g.add_argument(
        "--loop",
        action="store_true",
        help="add the segment from the last keyframe back to the first: a seamless loop (GIF/WebP loop forever)",
    )
    g.add_argument(
        "--segment-batch",
        type=int,
        metavar="N",
        help="segments sampled together (default: all); fewer lower the peak memory to that of N pairs, each batch "
        "continuing from the last frame of the one before",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ..adapter import BackwardAdapter
    from ..dtypes import model_dtype
    from ..families import check_options_before_loading, default_config, size_rules_before_loading
    from ..hub import local_model_configs
    from ..memory import check_model_call
    from ..sequence import interpolate_sequence
    from ..video_io import check_output_path, load_image, write_video

    model = model_config_of(args)
    device = model_device_of(model)
    check_sequence_arguments(args)
    keyframes = [load_image(path) for path in args.keyframes]  # an unreadable one is named, before any work
    for path, keyframe in zip(args.keyframes[1:], keyframes[1:], strict=True):
        check_keyframe_files(args.keyframes[0], keyframes[0], path, keyframe)
    check_loop_files(args, keyframes)
    first = keyframes[0]
    segments = len(keyframes) if args.loop else len(keyframes) - 1
    rules = size_rules_before_loading(model.model)  # a model on disk fixes its size rules before it loads
    configs = local_model_configs(model.model)  # SVD's UNet and VAE configs, for the memory estimate
    height, width = rules.default_size(first, args.height, args.width)
    with errors_name_flags():
        values = sampling_values(args, default_config(model.model))  # Wan: its guidance, fps, native sampler
    config = sampling_config(dict(values, height=height, width=width), rules)
    with errors_name_flags():
        check_options_before_loading(model.model, config)
    if args.output_fps is not None and not args.output_fps > 0:
        raise ValueError(f"`--output-fps` must be positive, got {args.output_fps}")
    check_output_path(args.output, overwrite=args.overwrite)
    adapter = BackwardAdapter.load(model.adapter) if model.adapter else None
    dtype = model_dtype(model.dtype, device)
    if configs:  # refuse a call that cannot fit before spending minutes loading the model
        with errors_name_flags():
            check_model_call(
                *configs,
                config,
                device,
                dtype.itemsize,
                batch_size=min(args.segment_batch or segments, segments),  # one chunk of segments at a time
                allow_oversize=args.allow_oversize,
            )

    with library_output(quiet=args.quiet):
        pipe = load_pipeline(model, device, adapter, progress=not args.quiet)
        # A CPU generator draws the same numbers on every device, so a seed means one video everywhere.
        generator = torch.Generator(device="cpu").manual_seed(args.seed)
        with errors_name_flags():
            frames = interpolate_sequence(
                pipe,
                keyframes,
                config,
                loop=args.loop,
                generator=generator,
                segment_batch=args.segment_batch,
                allow_oversize=args.allow_oversize,
            )
    output_fps = args.output_fps or config.fps
    path = write_video(frames, args.output, fps=output_fps, overwrite=args.overwrite)
    line = f"wrote {path}: {len(frames)} frames, {frames[0].width}x{frames[0].height}, {output_fps:g} fps"
    if segments > 1:
        segment_frames = (len(frames) - (0 if args.loop else 1)) // segments + 1
        line += f" ({segments} segments of {segment_frames} frames"
        line += ", looping)" if args.loop else ")"
    print(line)
    return 0


def check_sequence_arguments(args: argparse.Namespace) -> None:
    """At least two keyframes, a positive ``--segment-batch`` (before any file is read)."""
    if len(args.keyframes) < 2:
        raise ValueError(
            f"got one keyframe (`{args.keyframes[0]}`); pass at least two, FIRST LAST, or more for a sequence"
        )
    if args.segment_batch is not None and args.segment_batch < 1:
        raise ValueError(f"`--segment-batch` must be at least 1, got {args.segment_batch}")


def check_loop_files(args: argparse.Namespace, keyframes: list[Image.Image]) -> None:
    """``--loop`` returns to the first keyframe by itself: a last keyframe that is the first one again is a mistake."""
    import os

    from ..sequence import same_image

    if not args.loop:
        return
    first, last = args.keyframes[0], args.keyframes[-1]
    if os.path.samefile(first, last) or same_image(keyframes[0], keyframes[-1]):
        raise ValueError(
            f"`--loop` returns to the first keyframe `{first}` by itself, but the last keyframe `{last}` is the same "
            "image; drop it from the list, or drop --loop"
        )


def sampling_config(values: dict, rules) -> SamplingConfig:
    """The validated sampling config, before the model loads (sizes and frame counts by the model's ``rules``, a
    :class:`~inbetween.families.base.SizeRules`); its errors name the flags the user typed."""
    with errors_name_flags():
        config = SamplingConfig(**values)
        rules.check(config)
    return config
