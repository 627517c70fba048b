"""Config dataclasses as flat options: the flag of a field, errors in flag names, and nested configs flattened to
one dict (the form of the command line, the app's form and settings files) and back.

Works on any config dataclass whose fields carry ``flag`` metadata where the flag is not ``--field-name``; imports
nothing of the package, so the CLI can use it before torch loads.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import fields, replace


def flag_of(field: dataclasses.Field) -> str:
    """The command-line flag of a config field: its ``flag`` metadata, else ``--field-name``."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def with_flag_names(message: str, config_class: type) -> str:
    """Rename backticked config fields (`num_inference_steps`) to the flags that set them (`--steps`)."""
    flags = {field.name: flag_of(field) for field in dataclasses.fields(config_class)}
    return re.sub(r"`([a-z_]+)`", lambda m: f"`{flags.get(m[1], '--' + m[1].replace('_', '-'))}`", message)


def nested_config_fields(config_class: type) -> dict[str, type]:
    """The fields of ``config_class`` that are themselves config dataclasses (their options are flattened into
    the parent's command-line flags)."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in fields(config_class) if dataclasses.is_dataclass(hints[f.name])}


def flat_option_names(config_class: type) -> list[str]:
    """The option names of ``config_class`` with nested configs flattened, as the command-line flags are."""
    nested = nested_config_fields(config_class)
    names = []
    for f in fields(config_class):
        names.extend(flat_option_names(nested[f.name]) if f.name in nested else [f.name])
    return names


def flat_values(config: object) -> dict[str, object]:
    """A config instance's option values, nested configs flattened (the inverse of :func:`config_from_flat`)."""
    values = {}
    for f in fields(config):
        value = getattr(config, f.name)
        values.update(flat_values(value) if dataclasses.is_dataclass(value) else {f.name: value})
    return values


def config_from_flat(config_class: type, values: dict):
    """``config_class`` from one flat dict of option values, nested configs included (the form the CLI and
    settings files have): ``EvalConfig`` from ``{"data": ..., "num_inference_steps": 25}``. Missing nested
    options keep the nested default's values."""
    nested = nested_config_fields(config_class)
    own = {f.name for f in fields(config_class)} - set(nested)
    unknown = set(values) - set(flat_option_names(config_class))
    if unknown:
        raise ValueError(
            f"unknown option {', '.join(f'`{name}`' for name in sorted(unknown))} for {config_class.__name__}"
        )
    kwargs = {name: values[name] for name in own if name in values}
    for name, kind in nested.items():
        declared = next(f for f in fields(config_class) if f.name == name)
        if declared.default_factory is not dataclasses.MISSING:
            base = declared.default_factory()
        else:
            base = kind() if declared.default is dataclasses.MISSING else declared.default
        options = {f.name: values[f.name] for f in fields(kind) if f.name in values}
        kwargs[name] = replace(base, **options)
    return config_class(**kwargs)
