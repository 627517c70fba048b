"""The ``inbetween`` command: parse arguments, call the library, print one line.

``inbetween interpolate FIRST LAST -o OUT`` generates the video between two keyframes;
``inbetween convert-checkpoint FINETUNED -o adapter.safetensors`` turns a full fine-tuned UNet into
a backward adapter; ``inbetween train`` fine-tunes one; ``inbetween evaluate --data VIDEOS --out RESULTS``
scores methods on keyframe pairs and writes a report. Mistakes are reported as one line
``inbetween: error: ...`` with exit code 2, before any model is loaded where possible;
``INBETWEEN_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .config import (
    DTYPE_NAMES,
    HELDOUT_SEEDS,
    TINY_WORLD_GUIDANCE,
    TINY_WORLD_STEPS,
    SamplingConfig,
    config_from_flat,
    flat_option_names,
    nested_config_fields,
)
from .errors import USER_ERRORS, one_line
from .hub import SVD, SVD_XT, TINY_WORLD

if typing.TYPE_CHECKING:
    import torch
    from PIL import Image

    from .pipeline import InbetweenPipeline

# Every library module is imported inside the command that needs it: `inbetween --help` loads no torch.

USER_ERROR_EXIT = 2
DEBUG_VARIABLE = "INBETWEEN_DEBUG"
# Pipeline configs in diffusers' layout; `_weight_files` adds one variant's weights, so a download skips the other
# variant and the Hub repo's single-file checkpoints (several GB each).
PIPELINE_CONFIGS = ["model_index.json", "*/*.json"]


# interpolate ----------------------------------------------------------------------------------


def _interpolate(args: argparse.Namespace) -> int:
    import torch

    from .adapter import BackwardAdapter
    from .dtypes import model_dtype
    from .hub import local_model_configs
    from .memory import check_model_call
    from .pipeline import DEFAULT_LONG_SIDE, SIZE_MULTIPLE, InbetweenPipeline, size_rules
    from .video_io import check_output_path, load_image, write_video

    first, last = load_image(args.first), load_image(args.last)
    _check_keyframes(args.first, first, args.last, last)
    configs = local_model_configs(args.model)  # a model on disk fixes its size rules before it loads
    long_side, multiple = size_rules(*configs) if configs else (DEFAULT_LONG_SIDE, SIZE_MULTIPLE)
    height, width = InbetweenPipeline.default_size(first, args.height, args.width, long_side, multiple)
    values = {name: getattr(args, name) for name in SamplingConfig.field_names()}
    config = _sampling_config(dict(values, height=height, width=width), size_multiple=multiple)
    if args.output_fps is not None and not args.output_fps > 0:
        raise ValueError(f"`--output-fps` must be positive, got {args.output_fps}")
    check_output_path(args.output, overwrite=args.overwrite)
    adapter = BackwardAdapter.load(args.adapter) if args.adapter else None
    device = _pick_device(args.device)
    dtype = model_dtype(args.dtype, device)
    if args.cpu_offload and device != "cuda":
        raise ValueError(f"`--cpu-offload` needs a CUDA GPU (device is {device}); drop it or use `--device cuda`")
    if configs:  # refuse a call that cannot fit before spending minutes loading the model
        with _errors_name_flags():
            check_model_call(*configs, config, device, dtype.itemsize, allow_oversize=args.allow_oversize)

    with _library_output(quiet=args.quiet):
        pipe = _load_pipeline(args.model, dtype=dtype, variant=args.variant)
        if adapter is not None:
            pipe.load_backward_adapter(adapter)
        if args.cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        pipe.set_progress_bar_config(disable=args.quiet)
        # A CPU generator draws the same numbers on every device, so a seed means one video everywhere.
        generator = torch.Generator(device="cpu").manual_seed(args.seed)
        with _errors_name_flags():
            frames = pipe(first, last, config, generator=generator, allow_oversize=args.allow_oversize).frames[0]
    output_fps = args.output_fps or args.fps
    path = write_video(frames, args.output, fps=output_fps, overwrite=args.overwrite)
    print(f"wrote {path}: {len(frames)} frames, {frames[0].width}x{frames[0].height}, {output_fps:g} fps")
    return 0


def _check_keyframes(first_path: str, first: Image.Image, last_path: str, last: Image.Image) -> None:
    from .pipeline import InbetweenPipeline

    try:
        InbetweenPipeline.check_keyframes(first, last)
    except ValueError as exc:  # the pipeline cannot know the file names; the user needs them to fix the files
        raise ValueError(
            f"keyframes `{first_path}` ({first.width}x{first.height}) and `{last_path}` "
            f"({last.width}x{last.height}): {exc}"
        ) from exc


def _sampling_config(values: dict, size_multiple: int) -> SamplingConfig:
    """The validated sampling config, before the model loads; its errors name the flags the user typed."""
    from .pipeline import InbetweenPipeline

    with _errors_name_flags():
        config = SamplingConfig(**values)
        InbetweenPipeline.check_inputs(config, output_type="pil", size_multiple=size_multiple)
    return config


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


@contextmanager
def _errors_name_flags() -> Iterator[None]:
    """The library's errors name options (`num_inference_steps`); the user typed flags (`--steps`)."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(_with_flag_names(str(exc), SamplingConfig)) from exc


def _with_flag_names(message: str, config_class: type) -> str:
    """Rename backticked config fields (`num_inference_steps`) to the flags that set them (`--steps`)."""
    flags = {field.name: _flag(field) for field in dataclasses.fields(config_class)}
    return re.sub(r"`([a-z_]+)`", lambda m: f"`{flags.get(m[1], '--' + m[1].replace('_', '-'))}`", message)


def _pick_device(name: str) -> str:
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ValueError(f"`--device {name}` is not available in this torch build or machine; use `--device cpu`")
    return name


def _load_pipeline(model: str, dtype: torch.dtype, variant: str | None) -> InbetweenPipeline:
    from .hub import resolve_model_folder
    from .pipeline import InbetweenPipeline

    folder = resolve_model_folder(model, allow_patterns=[*PIPELINE_CONFIGS, *_weight_files(variant)])
    try:
        return InbetweenPipeline.from_pretrained(str(folder), dtype=dtype, variant=variant)
    except (OSError, ValueError, KeyError) as exc:
        wanted = f"a Stable Video Diffusion folder or Hub id like `{SVD_XT}`"
        if variant:
            wanted += f" that has the `{variant}` variant"
        raise ValueError(f"cannot load an SVD pipeline from `{model}` ({one_line(exc)}); pass {wanted}") from exc


def _weight_files(variant: str | None) -> list[str]:
    if variant:
        return [f"*/*.{variant}.safetensors", f"*/*.{variant}-*.safetensors"]
    names = ("model", "diffusion_pytorch_model")
    return [pattern for name in names for pattern in (f"*/{name}.safetensors", f"*/{name}-*.safetensors")]


@contextmanager
def _library_output(quiet: bool) -> Iterator[None]:
    """With ``quiet``, silence warnings and loading bars of inbetween, diffusers and transformers; restore after."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    saved = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    own_logger = logging.getLogger(__package__)
    own_level = own_logger.level
    if quiet:
        own_logger.setLevel(logging.ERROR)
        for lib in libraries:
            lib.set_verbosity_error()
            lib.disable_progress_bar()
    try:
        yield
    finally:
        own_logger.setLevel(own_level)
        for lib, (verbosity, bar) in zip(libraries, saved, strict=True):
            lib.set_verbosity(verbosity)
            if bar:
                lib.enable_progress_bar()


# convert-checkpoint ---------------------------------------------------------------------------


def _convert(args: argparse.Namespace) -> int:
    from safetensors import SafetensorError

    from .adapter import convert_full_unet_checkpoint

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


# parser and entry point -----------------------------------------------------------------------


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``inbetween`` parser; with ``only``, the options of that command alone (the others are listed, not
    built), so that the modules that define them are imported only for the command that runs."""
    parser = argparse.ArgumentParser(
        prog="inbetween",
        description="Keyframe interpolation with Stable Video Diffusion (Generative Inbetweening, ICLR 2025).",
    )
    parser.add_argument("--version", action="version", version=f"inbetween {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    interpolate = commands.add_parser(
        "interpolate",
        help="generate the video between two keyframes",
        description="Generate the video from FIRST to LAST (both included).",
    )
    interpolate.set_defaults(run=_interpolate)
    if only in (None, "interpolate"):
        _add_interpolate_arguments(interpolate)
    convert = commands.add_parser(
        "convert-checkpoint",
        help="turn a fine-tuned UNet into a backward adapter",
        description="Store the W_v / W_o differences between FINETUNED and BASE as a backward adapter file.",
    )
    convert.set_defaults(run=_convert)
    if only in (None, "convert-checkpoint"):
        _add_convert_arguments(convert)
    train = commands.add_parser(
        "train",
        help="fine-tune a backward adapter on a folder of videos",
        description="Backward-motion fine-tuning of W_v / W_o (paper section 3.2). Several GPUs: "
        "`accelerate launch --num_processes N -m inbetween train ...` with the same options.",
    )
    train.set_defaults(run=_train)
    if only in (None, "train"):
        from .training import TrainConfig

        _add_dataclass_arguments(train, TrainConfig)
    evaluation = commands.add_parser(
        "evaluate",
        help="score methods on keyframe pairs from a folder of videos and write a report",
        description="Draw keyframe pairs from DATA (or reuse the manifest), run each method, score PSNR / SSIM / "
        "LPIPS / FID / FVD and write summary.md, per_pair.csv, per_frame.png and contact sheets into OUT. "
        "Re-running into OUT resumes. Several GPUs: `accelerate launch --num_processes N -m inbetween evaluate ...`.",
    )
    evaluation.set_defaults(run=_evaluate)
    if only in (None, "evaluate"):
        from .evaluation.harness import EvalConfig

        _add_dataclass_arguments(evaluation, EvalConfig)
    demo = commands.add_parser(
        "demo",
        help="see the method work offline in under a minute (the bundled tiny-world model)",
        description="Interpolate bundled toy-world keyframe pairs with the shipped tiny model; write the videos "
        "and a comparison sheet (ground truth, cross-fade, forward-only, dual without fine-tuning, full method).",
    )
    demo.set_defaults(run=_demo)
    demo.add_argument("--out", default="inbetween-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    demo.add_argument("--pairs", type=int, default=3, help="keyframe pairs (default: %(default)s)")
    _add_tiny_world_sampling_arguments(demo)
    toyworld = commands.add_parser(
        "toyworld",
        help="train the tiny-world model, or check the paper's claims with it",
        description="The toy world of bouncing balls: reproduce the shipped model, or evaluate the methods on it.",
    )
    world_commands = toyworld.add_subparsers(dest="toyworld_command", required=True, metavar="COMMAND")
    world_train = world_commands.add_parser(
        "train",
        help="train autoencoder, forward I2V model and backward adapter from a seed (resumable)",
        description="Three resumable stages into OUT (re-run the same command to resume); about two hours on 2 "
        "CPU cores. Settings: inbetween.toyworld.recipe.TinyWorldRecipe.",
    )
    world_train.set_defaults(run=_toyworld_train)
    world_train.add_argument("--out", required=True, help="run folder (checkpoints, logs, the model)")
    world_train.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    world_train.add_argument(
        "--install", action="store_true", help="copy the finished model into the package (what `tiny-world` loads)"
    )
    world_eval = world_commands.add_parser(
        "evaluate",
        help="hit rate, ball-centre error, miss rate, PSNR, SSIM of every method on held-out pairs",
        description="Interpolate held-out toy-world pairs with every method and print a table with 95 %% intervals.",
    )
    world_eval.set_defaults(run=_toyworld_evaluate)
    world_eval.add_argument("--model", default=TINY_WORLD, help="tiny-world model folder (default: %(default)s)")
    world_eval.add_argument("--pairs", type=int, default=50, help="held-out pairs (default: %(default)s)")
    world_eval.add_argument(
        "--first-seed",
        type=int,
        default=HELDOUT_SEEDS,
        help="first held-out seed: the pairs are the interesting videos from it up (default: %(default)s)",
    )
    _add_tiny_world_sampling_arguments(world_eval)
    world_eval.add_argument("--out", help="also write summary.md and per_pair.json here")
    world_eval.add_argument("--overwrite", action="store_true", help="replace files in OUT")
    return parser


def _add_tiny_world_sampling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=TINY_WORLD_STEPS, help="sampling steps (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=TINY_WORLD_GUIDANCE, help="max guidance, 1 = none (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same videos (default: %(default)s)")


def _add_dataclass_arguments(p: argparse.ArgumentParser, config_class: type, defaults: object | None = None) -> None:
    """One ``--flag`` per field of ``config_class``, typed and defaulted from the dataclass itself (or from the
    instance ``defaults``); nested configs are flattened."""
    hints = typing.get_type_hints(config_class)
    nested = nested_config_fields(config_class)
    for field in dataclasses.fields(config_class):
        if field.name in nested:  # a nested config's options are flags of their own, defaulted from this default
            group = p.add_argument_group(f"{field.name} options") if hasattr(p, "add_argument_group") else p
            default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
            _add_dataclass_arguments(group, nested[field.name], defaults=default)
            continue
        flag = _flag(field)
        kind = hints[field.name]
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        default = None if required else field.default
        if defaults is not None:
            default = getattr(defaults, field.name)
        help_text = "required" if required else "default: %(default)s"
        if "help" in field.metadata:
            help_text = field.metadata["help"]
            if not required and default is not None:  # a concrete default replaces the help's own default note
                help_text = re.sub(r" \(default: [^)]*\)$", "", help_text) + " (default: %(default)s)"
        extra = {key: field.metadata[key] for key in ("metavar", "choices") if key in field.metadata}
        if kind is bool:
            p.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        elif typing.get_origin(kind) is tuple:  # pairs of paths, repeatable
            p.add_argument(
                flag.removesuffix("s"),
                dest=field.name,
                nargs=2,
                action="append",
                default=[],
                metavar=("FIRST", "LAST"),
                help="repeatable",
            )
        else:
            base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
            p.add_argument(
                flag, dest=field.name, type=base, default=default, required=required, help=help_text, **extra
            )


def _train(args: argparse.Namespace) -> int:
    from .training import TrainConfig, train_backward

    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)}
    values["validation_pairs"] = tuple(tuple(pair) for pair in values["validation_pairs"])
    config = TrainConfig(**values)
    final = train_backward(config)
    print(f"wrote {final}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation.harness import EvalConfig, evaluate

    with _errors_name_flags():
        config = config_from_flat(EvalConfig, {name: getattr(args, name) for name in flat_option_names(EvalConfig)})
    summary = evaluate(config)
    if summary is not None:  # rank 0 of a launched run, or a plain run
        print(f"wrote {summary}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .toyworld.demo import run_demo

    out = run_demo(
        args.out,
        pairs=args.pairs,
        num_inference_steps=args.steps,
        seed=args.seed,
        overwrite=args.overwrite,
        guidance_scale=args.guidance,
    )
    print(
        f"wrote {out}/: comparison.png (rows: ground truth, cross-fade, forward-only, dual no fine-tuning, full "
        f"method), one mp4 per pair and method, and the keyframes as PNG"
    )
    print(f"try: inbetween interpolate {out}/pair0-first.png {out}/pair0-last.png -o pair0.mp4 --model {TINY_WORLD}")
    return 0


def _toyworld_train(args: argparse.Namespace) -> int:
    from .toyworld.recipe import TinyWorldRecipe, install_tiny_world, train_tiny_world

    model = train_tiny_world(args.out, TinyWorldRecipe(seed=args.seed))
    print(f"wrote {model} and {Path(args.out) / 'loss_curves.png'}")
    if args.install:
        print(f"installed into {install_tiny_world(model)}")
    return 0


def _toyworld_evaluate(args: argparse.Namespace) -> int:
    from .toyworld.science import run_evaluation

    table = run_evaluation(
        args.out,
        args.model,
        args.pairs,
        args.steps,
        args.seed,
        overwrite=args.overwrite,
        guidance_scale=args.guidance,
        first_seed=args.first_seed,
    )
    print(table)
    if args.out:
        print(f"wrote {args.out}/summary.md and per_pair.json")
    return 0


def _add_interpolate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("first", metavar="FIRST", help="first keyframe (PNG, JPEG, WebP)")
    p.add_argument("last", metavar="LAST", help="last keyframe, same aspect ratio as FIRST")
    p.add_argument("-o", "--output", required=True, help="out.mp4, out.gif, out.webp or a folder for PNG frames")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars or library warnings")
    p.add_argument("--seed", type=int, default=0, help="same seed, same video on any device (default: %(default)s)")
    _add_dataclass_arguments(p.add_argument_group("sampling (defaults: the paper's and SVD's)"), SamplingConfig)
    p.add_argument("--output-fps", type=float, metavar="X", help="playback fps of the video (default: --fps)")
    p.add_argument(
        "--allow-oversize",
        action="store_true",
        help="run even when the estimated peak memory exceeds what is available (default: refuse, with the estimate)",
    )
    m = p.add_argument_group("model and hardware")
    m.add_argument(
        "--model",
        default=SVD_XT,
        help=f"Hub id or folder of an SVD model, or `{TINY_WORLD}` (the small offline model shipped with inbetween; "
        "default: %(default)s)",
    )
    m.add_argument("--variant", help="weights variant, e.g. fp16")
    m.add_argument("--adapter", metavar="PATH", help="backward adapter .safetensors (see convert-checkpoint)")
    m.add_argument(
        "--device",
        choices=("auto", "cuda", "mps", "cpu"),
        default="auto",
        help="auto: cuda, else mps, else cpu (default: %(default)s)",
    )
    m.add_argument(
        "--dtype",
        choices=("auto", *DTYPE_NAMES),
        default="auto",
        help="auto: float16 on cuda, float32 elsewhere (default: %(default)s)",
    )
    m.add_argument("--cpu-offload", action="store_true", help="keep models in CPU memory until used (cuda only)")


def _add_convert_arguments(p: argparse.ArgumentParser) -> None:
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


def _is_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # loaded by any command that can run out of GPU memory
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (its first argument that is not an option), if any."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Run the ``inbetween`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(only=_command_of(argv) or "").parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 0
    try:
        return args.run(args)
    except USER_ERRORS as exc:
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        print(f"inbetween: error: {one_line(exc)}", file=sys.stderr)
        return USER_ERROR_EXIT
    except Exception as exc:
        if not _is_out_of_memory(exc) or os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        print(
            f"inbetween: error: out of memory ({one_line(exc)[:120]}); try --split-guidance-batch, "
            "--decode-chunk-size 2, --cpu-offload or a smaller --height/--width",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("inbetween: interrupted; no output written", file=sys.stderr)
        return 130
