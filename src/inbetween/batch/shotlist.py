"""The shot list of ``inbetween batch``: one row per shot, its keyframe files in order and its own options.

CSV (a header row; ``keyframes`` separated by ``;``)::

    name,keyframes,preset,seed,loop,steps
    intro,a.png;b.png,fast,,,
    walk,c.png;d.png;e.png,,7,true,30

JSON: a list of objects, or ``{"shots": [...]}``, with ``keyframes`` a list::

    [{"name": "intro", "keyframes": ["a.png", "b.png"], "preset": "fast"}]

Columns: ``name`` (default: ``shot-<row>``; it names the output file, so letters, digits, ``-``, ``_`` and ``.``),
``keyframes``, and optionally ``preset``, ``seed``, ``loop``, ``output_fps`` and any sampling option by its field
or flag name (``num_inference_steps`` or ``steps``). Empty cells keep the command's value. Relative paths are
relative to the shot list's folder. A bad row is one :class:`ShotError` line; the other rows go on.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..config import PRESETS, SamplingConfig
from ..errors import one_line
from ..options import flag_of

KEYFRAME_SEPARATOR = ";"
SHOT_OPTIONS = ("preset", "seed", "loop", "output_fps")  # a row's options that are not sampling options
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
RESERVED_NAMES = ("records", "summary.json")  # inbetween.batch.render's RECORDS and SUMMARY


@dataclass(frozen=True)
class Shot:
    """One row: its ``name`` (the output's), keyframe files in order, and the options it sets."""

    name: str
    keyframes: tuple[str, ...]
    row: int  # 1-based, as a user counts the rows (CSV: the header is row 0)
    sampling: dict[str, object] = field(default_factory=dict)  # SamplingConfig options the row sets
    preset: str | None = None
    seed: int | None = None
    loop: bool = False
    output_fps: float | None = None

    def sampling_config(self, base: SamplingConfig, typed: frozenset[str] = frozenset()) -> SamplingConfig:
        """The row's options, over the options ``typed`` on the command line (their values in ``base``), over the
        row's preset, over ``base`` (the command's defaults and preset): a row's preset undoes no typed option, as
        no command's ``--preset`` does."""
        config = SamplingConfig.preset(self.preset, base) if self.preset else base
        return config.with_options(**{name: getattr(base, name) for name in typed} | self.sampling)


class ShotError(ValueError):
    """A bad row, as one line naming the file, the row and the shot; ``row`` is 1-based, ``name`` the row's (if
    any)."""

    def __init__(self, message: str, row: int, name: str | None = None) -> None:
        super().__init__(message)
        self.row, self.name = row, name


def sampling_fields() -> dict[str, dataclasses.Field]:
    """SamplingConfig's fields by field name and by flag name (``num_inference_steps`` and ``steps``)."""
    by_name = {f.name: f for f in dataclasses.fields(SamplingConfig)}
    by_flag = {flag_of(f).removeprefix("--").replace("-", "_"): f for f in by_name.values()}
    return by_flag | by_name


def _parse_value(text: object, kind: object, column: str) -> object:
    """A cell as ``kind`` (int, float, bool, str, or optional of one); JSON values pass through when they fit."""
    base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
    if not isinstance(text, str):
        if base is float and isinstance(text, int) and not isinstance(text, bool):
            return float(text)
        if isinstance(text, base) and not (base is int and isinstance(text, bool)):
            return text
        raise ValueError(f"`{column}` must be {base.__name__}, got {text!r}")
    if base is bool:
        if text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
        raise ValueError(f"`{column}` must be true or false, got {text!r}")
    try:
        return base(text)
    except ValueError:
        raise ValueError(f"`{column}` must be {base.__name__}, got {text!r}") from None


def parse_shot(values: dict[str, object], row: int, folder: Path) -> Shot:
    """One row's :class:`Shot` (raises ``ValueError`` naming the column at fault)."""
    values = {key.strip(): value.strip() if isinstance(value, str) else value for key, value in values.items() if key}
    values = {key: value for key, value in values.items() if value not in (None, "")}
    name = str(values.pop("name", f"shot-{row:03d}"))
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"name {name!r} cannot name a file; use letters, digits, -, _ and .")
    if name.lower() in RESERVED_NAMES:
        raise ValueError(f"name {name!r} is the output folder's own bookkeeping; choose another")
    keyframes = values.pop("keyframes", None)
    if keyframes is None:
        raise ValueError("no `keyframes`; give two or more files in order")
    if isinstance(keyframes, str):
        keyframes = [part.strip() for part in keyframes.split(KEYFRAME_SEPARATOR) if part.strip()]
    if not isinstance(keyframes, list) or not all(isinstance(k, str) for k in keyframes):
        raise ValueError(f"`keyframes` must be file names, got {keyframes!r}")
    if len(keyframes) < 2:
        raise ValueError(f"got {len(keyframes)} keyframe; give at least two")
    paths = tuple(str(path if (path := Path(k)).is_absolute() else folder / path) for k in keyframes)
    hints, by_column = typing.get_type_hints(Shot), sampling_fields()
    shot = dict(name=name, keyframes=paths, row=row)
    for column in SHOT_OPTIONS:
        if column in values:
            shot[column] = _parse_value(values.pop(column), hints[column], column)
    if shot.get("output_fps") is not None and not shot["output_fps"] > 0:
        raise ValueError(f"`output_fps` must be positive, got {shot['output_fps']}")
    if shot.get("preset") is not None and shot["preset"] not in PRESETS:
        raise ValueError(f"unknown preset {shot['preset']!r}; the presets are {', '.join(PRESETS)}")
    unknown = sorted(set(values) - set(by_column))
    if unknown:
        raise ValueError(
            f"unknown column {', '.join(f'`{c}`' for c in unknown)}; the columns are name, keyframes, "
            f"{', '.join(SHOT_OPTIONS)} and the sampling options"
        )
    sampling_hints = typing.get_type_hints(SamplingConfig)
    sampling = {}
    for column, value in values.items():
        option = by_column[column].name
        sampling[option] = _parse_value(value, sampling_hints[option], column)
    SamplingConfig.preset(shot.get("preset") or "paper", **sampling)  # a bad value fails here, with its row
    return Shot(**shot, sampling=sampling)


def _rows(path: Path) -> list[dict[str, object]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"shot list `{path}` is not UTF-8 text") from None
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"shot list `{path}` is not valid JSON: {exc}") from None
        rows = document.get("shots") if isinstance(document, dict) else document
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError(f'shot list `{path}` must be a list of objects (or {{"shots": [...]}})')
        return rows
    if path.suffix.lower() != ".csv":
        raise ValueError(f"shot list `{path}` must be a .csv or a .json file")
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "keyframes" not in [name.strip() for name in reader.fieldnames]:
        raise ValueError(f"shot list `{path}` needs a header row with a `keyframes` column")
    try:
        return list(reader)
    except csv.Error as exc:
        raise ValueError(f"shot list `{path}` is not valid CSV: {exc}") from None


def read_shot_list(path: str | Path) -> tuple[list[Shot], list[ShotError]]:
    """The shots of ``path`` and, for each bad row, a :class:`ShotError` (the file as a whole must be readable:
    a missing or malformed file raises ``ValueError``). Names must be unique: a repeated one is an error of the
    later row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shot list `{path}` does not exist or is not a file")
    shots, errors, names = [], [], set()
    for row, values in enumerate(_rows(path), start=1):
        where = f"{path.name} row {row}"
        try:
            shot = parse_shot(values, row, path.parent)
            if shot.name in names:
                raise ValueError(f"name {shot.name!r} is used by an earlier row; names must be unique")
        except ValueError as exc:
            label = str(values.get("name") or "").strip() or None
            errors.append(ShotError(f"{where}{f' ({label})' if label else ''}: {one_line(exc)}", row, label))
            continue
        names.add(shot.name)
        shots.append(shot)
    return shots, errors
