"""The ``inbetween`` command: parse arguments, call the library, print one line.

``inbetween interpolate FIRST LAST -o OUT`` generates the video between two keyframes; ``inbetween batch SHOTS -o
OUT`` renders a shot list;
``inbetween convert-checkpoint FINETUNED -o adapter.safetensors`` turns a full fine-tuned UNet into
a backward adapter; ``inbetween train`` fine-tunes one; ``inbetween evaluate --data VIDEOS --out RESULTS``
scores methods on keyframe pairs and writes a report; ``inbetween demo`` and ``inbetween toyworld ...`` work in
the tiny world. Mistakes are reported as one line ``inbetween: error: ...`` with exit code 2, before any model is
loaded where possible; ``INBETWEEN_DEBUG=1`` shows the traceback instead.

Each command lives in a module of this package (its help, its arguments, its ``run``); :data:`COMMANDS` lists
them. Every library module is imported inside the command that runs: ``inbetween --help`` loads no torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from .. import __version__
from ..errors import USER_ERRORS, one_line
from . import app, batch, convert, interpolate, jobs, toyworld

USER_ERROR_EXIT = 2
DEBUG_VARIABLE = "INBETWEEN_DEBUG"


@dataclass(frozen=True)
class Command:
    """One (sub)command: its help line, description, argument builder and runner, or its own subcommands."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    run: Callable[[argparse.Namespace], int] | None = None
    subcommands: tuple[Command, ...] = ()


def command(name: str, module: ModuleType, part: str = "") -> Command:
    """The command ``name`` that ``module`` defines: its ``HELP``, ``DESCRIPTION``, ``add_arguments`` and ``run``, or,
    for a module of several commands, ``PART_HELP``, ``PART_DESCRIPTION``, ``add_part_arguments`` and ``run_part``."""
    prefix, suffix = (f"{part.upper()}_", f"_{part}") if part else ("", "")
    return Command(
        name,
        getattr(module, f"{prefix}HELP"),
        getattr(module, f"{prefix}DESCRIPTION"),
        getattr(module, f"add{suffix}_arguments"),
        getattr(module, f"run{suffix}"),
    )


# The command table: (name, the module that defines it, its part of that module).
COMMANDS = (
    command("interpolate", interpolate),
    command("batch", batch),
    command("convert-checkpoint", convert),
    command("train", jobs, "train"),
    command("evaluate", jobs, "evaluate"),
    command("demo", toyworld, "demo"),
    command("app", app),
    Command(
        "toyworld",
        toyworld.HELP,
        toyworld.DESCRIPTION,
        subcommands=tuple(
            command(part, toyworld, part) for part in ("train", "evaluate", "hitrates", "samplers", "sequences")
        ),
    ),
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``inbetween`` parser; with ``only``, the options of that command alone (the others are listed, not
    built), so that the modules that define them are imported only for the command that runs."""
    parser = argparse.ArgumentParser(
        prog="inbetween",
        description="Keyframe interpolation with image-to-video models, SVD and Wan (Generative Inbetweening, 2025).",
    )
    parser.add_argument("--version", action="version", version=f"inbetween {__version__}")
    _add_commands(parser, COMMANDS, dest="command", only=only)
    return parser


def _add_commands(parser: argparse.ArgumentParser, commands: tuple[Command, ...], dest: str, only: str | None) -> None:
    subparsers = parser.add_subparsers(dest=dest, required=True, metavar="COMMAND")
    for command in commands:
        p = subparsers.add_parser(command.name, help=command.help, description=command.description)
        if command.subcommands:
            wanted = only in (None, command.name)
            _add_commands(p, command.subcommands, dest=f"{command.name}_command", only=None if wanted else "")
            continue
        p.set_defaults(run=command.run)
        if only in (None, command.name):
            command.add_arguments(p)


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
