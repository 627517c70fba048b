"""``inbetween batch SHOTS -o OUT``: every shot of a shot list, one model load per process, resumable; over several
GPUs or processes with ``accelerate launch``."""

from __future__ import annotations

import argparse
import typing

from ..config import SamplingConfig
from ..options import config_from_flat, flat_option_names
from .options import (
    EXPLICIT,
    add_dataclass_arguments,
    add_preset_argument,
    errors_name_flags,
    library_output,
    model_device_of,
)

if typing.TYPE_CHECKING:
    from ..batch import BatchConfig

HELP = "render a shot list (CSV or JSON of keyframe files and per-shot options) into a folder, resumably"
DESCRIPTION = (
    "Render every shot of SHOTS into OUT with one model load per process: OUT/<name>.mp4 per shot, records/ and "
    "summary.json. A re-run into OUT renders only the shots without a video; a bad row or a failed shot is one line "
    "and the others go on (exit status 1 if any failed). Several GPUs or processes: "
    "`accelerate launch --num_processes N -m inbetween batch ...` with the same options: each shot once."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..batch import BatchConfig

    add_dataclass_arguments(p, BatchConfig)
    add_preset_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars or library warnings")


def run(args: argparse.Namespace) -> int:
    from ..batch import render_batch

    config = batch_config(args)
    model_device_of(config.model)
    with library_output(quiet=args.quiet):
        summary = render_batch(config)
    if summary is None:  # not process 0 of a launched run
        return 0
    print(summary.line)
    return 1 if summary.count("failed") else 0


def batch_config(args: argparse.Namespace) -> BatchConfig:
    """The job of the parsed flags, with the sampling options typed on the command line named (a row's preset does
    not undo them); its errors name the flags."""
    from ..batch import BatchConfig

    typed = frozenset(getattr(args, EXPLICIT, ())) & set(SamplingConfig.field_names())
    values = {name: getattr(args, name) for name in flat_option_names(BatchConfig) if name != "typed_options"}
    with errors_name_flags():
        return config_from_flat(BatchConfig, values | {"typed_options": typed})
