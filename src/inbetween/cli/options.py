"""Command-line options generated from the config dataclasses, and what every command shares: flag names in
errors, the model options, quiet library output, ``--preset``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import typing
from collections.abc import Iterator
from contextlib import contextmanager

from ..config import PRESETS, SamplingConfig
from ..model_config import MODEL_OPTIONS, ModelConfig
from ..options import flag_of, nested_config_fields, with_flag_names

EXPLICIT = "_explicit_options"  # the namespace attribute listing the options typed on the command line


@contextmanager
def errors_name_flags(config_class: type = SamplingConfig) -> Iterator[None]:
    """The library's errors name options (`num_inference_steps`); the user typed flags (`--steps`)."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(with_flag_names(str(exc), config_class)) from exc


def add_dataclass_arguments(p: argparse.ArgumentParser, config_class: type, defaults: object | None = None) -> None:
    """One ``--flag`` per field of ``config_class``, typed and defaulted from the dataclass itself (or from the
    instance ``defaults``); nested configs are flattened."""
    hints = typing.get_type_hints(config_class)
    nested = nested_config_fields(config_class)
    for field in dataclasses.fields(config_class):
        if field.metadata.get("cli") is False:  # set by the command itself, not a flag
            continue
        if field.name in nested:  # a nested config's options are flags of their own, defaulted from this default
            group = p.add_argument_group(f"{field.name} options") if hasattr(p, "add_argument_group") else p
            default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
            add_dataclass_arguments(group, nested[field.name], defaults=default)
            continue
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        default = None if required else field.default
        if defaults is not None:
            default = getattr(defaults, field.name)
        _add_field_argument(p, field, hints[field.name], default, required)


def add_model_arguments(
    p: argparse.ArgumentParser,
    defaults: dict[str, object] | None = None,
    only: tuple[str, ...] = MODEL_OPTIONS,
    description: str | None = None,
) -> None:
    """The :class:`~inbetween.model_config.ModelConfig` flags (``only`` those) in a "model and hardware" group,
    defaulted from the dataclass or ``defaults`` (a ``None`` default: the command decides, ``description`` says
    how)."""
    group = p.add_argument_group("model and hardware", description)
    hints = typing.get_type_hints(ModelConfig)
    for field in dataclasses.fields(ModelConfig):
        if field.name in only:
            default = (defaults or {}).get(field.name, field.default)
            _add_field_argument(group, field, hints[field.name], default, required=False)


def model_config_of(args: argparse.Namespace, **overrides: object) -> ModelConfig:
    """The validated model config of the flags :func:`add_model_arguments` added; its errors name the flags."""
    with errors_name_flags(ModelConfig):
        return ModelConfig(**{name: getattr(args, name) for name in MODEL_OPTIONS} | overrides)


def model_device_of(model: ModelConfig) -> str:
    """The device ``model`` runs on here (:func:`inbetween.loading.model_device`), asked before anything else a
    command does, as every command does; its errors name the flags."""
    from ..loading import model_device

    with errors_name_flags(ModelConfig):
        return model_device(model)


def _add_field_argument(
    p: argparse.ArgumentParser, field: dataclasses.Field, kind: type, default: object, required: bool
) -> None:
    flag = flag_of(field)
    help_text = "required" if required else "default: %(default)s"
    if "help" in field.metadata:
        help_text = field.metadata["help"]
        if not required and default is not None:  # a concrete default replaces the help's own default note
            help_text = re.sub(r" \(default: [^)]*\)$", "", help_text) + " (default: %(default)s)"
    extra = {key: field.metadata[key] for key in ("metavar", "choices") if key in field.metadata}
    base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
    if field.metadata.get("positional"):  # an operand, ``inbetween batch SHOTS``
        extra.setdefault("metavar", field.name.upper())
        nargs = {} if required else dict(nargs="?", default=default)
        p.add_argument(field.name, type=base, help=help_text, **nargs, **extra)
        return
    flags = (field.metadata["short"], flag) if "short" in field.metadata else (flag,)  # ``-o`` beside ``--out``
    if kind is bool:
        p.add_argument(*flags, dest=field.name, action=_ExplicitBool, default=default, help=help_text)
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
        p.add_argument(
            *flags,
            dest=field.name,
            type=base,
            default=default,
            required=required,
            help=help_text,
            action=_ExplicitStore,
            **extra,
        )


def _record_explicit(namespace: argparse.Namespace, dest: str) -> None:
    setattr(namespace, EXPLICIT, getattr(namespace, EXPLICIT, frozenset()) | {dest})


class _ExplicitStore(argparse.Action):
    """``store``, remembering that the option was typed (a ``--preset`` never overrides it)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        _record_explicit(namespace, self.dest)


class _ExplicitBool(argparse.BooleanOptionalAction):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        super().__call__(parser, namespace, values, option_string)
        _record_explicit(namespace, self.dest)


def add_preset_argument(p: argparse.ArgumentParser, ignored: tuple[str, ...] = ()) -> None:
    """``--preset NAME``: the sampling options of :data:`inbetween.config.PRESETS` as defaults; options typed on
    the command line win, before or after it. ``ignored``: options the preset leaves alone here (they are the
    command's own choice)."""
    names = ", ".join(PRESETS)
    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        action=_PresetAction,
        ignored=ignored,
        help=f"named sampler settings ({names}; see README 'Which sampler?'); other flags override it",
    )


class _PresetAction(argparse.Action):
    def __init__(self, option_strings, dest, ignored: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.ignored = ignored

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        typed = getattr(namespace, EXPLICIT, frozenset())
        for name, value in PRESETS[values].items():
            if name not in typed and name not in self.ignored:
                setattr(namespace, name, value)


def sampling_values(args: argparse.Namespace, base: SamplingConfig) -> dict[str, object]:
    """The sampling options of a command line over ``base`` (the model family's defaults): the options typed, or set
    by ``--preset``, applied to ``base`` as :meth:`SamplingConfig.with_options` applies them (a sampler typed frees
    what the base's sampler fixed); every other option is ``base``'s."""
    chosen = set(getattr(args, EXPLICIT, frozenset()))
    if getattr(args, "preset", None):
        chosen |= set(PRESETS[args.preset])
    config = base.with_options(**{name: getattr(args, name) for name in sorted(chosen) if hasattr(base, name)})
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


@contextmanager
def library_output(quiet: bool) -> Iterator[None]:
    """With ``quiet``, silence warnings and loading bars of inbetween, diffusers and transformers; restore after."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    saved = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    own_logger = logging.getLogger(__package__.rpartition(".")[0])
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
