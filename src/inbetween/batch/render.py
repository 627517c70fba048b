"""Render a shot list: one model load per process, each shot once, resumable, spread over processes or GPUs.

    inbetween batch shots.csv -o renders/ --model tiny-world --preset fast
    accelerate launch --num_processes 4 -m inbetween batch shots.csv -o renders/ --preset fast

Every process reads the same shot list and takes every ``num_processes``-th shot still to do; a shot's video goes
to ``OUT/<name>.<format>`` through a temporary file and a rename, so a killed run leaves no partial video, and a
re-run into ``OUT`` renders only the shots without one (``--overwrite`` renders them all again). Each finished or
failed shot leaves a record in ``OUT/records/``; process 0 merges them into ``OUT/summary.json``. A bad row or a
shot that fails is one line and the others go on. Same seed, same video: a shot's frames do not depend on which
process renders it or on the shots around it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SamplingConfig
from ..errors import USER_ERRORS, one_line
from ..files import write_json
from ..model_config import ModelConfig
from ..options import flat_values
from .shotlist import Shot, ShotError, read_shot_list

FORMATS = ("mp4", "gif", "webp", "png")
RECORDS, SUMMARY = "records", "summary.json"  # shotlist.RESERVED_NAMES keeps shots off them
RENDERED, DONE_BEFORE, FAILED = "rendered", "done before", "failed"


@dataclass(frozen=True)
class BatchConfig:
    """``inbetween batch``: every shot of ``shots`` rendered into ``out``. The sampling options (and ``--preset``)
    are every shot's unless its row sets them."""

    shots: str = field(
        metadata={"help": "the shot list, a .csv or .json file (see the README's Batch rendering)", "positional": True}
    )
    out: str = field(
        metadata={"help": "folder for the videos, records/ and summary.json; a re-run resumes", "short": "-o"}
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    format: str = field(
        default="mp4", metadata={"help": "mp4, gif, webp, or png (a folder of frames per shot)", "choices": FORMATS}
    )
    seed: int = field(default=0, metadata={"help": "every shot's seed unless its row sets one"})
    overwrite: bool = field(default=False, metadata={"help": "render every shot again, replacing its video"})
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    allow_oversize: bool = field(
        default=False, metadata={"help": "run shots whose estimated peak memory exceeds what is available"}
    )

    # The sampling options typed on the command line (field names): a row's preset does not undo them, as no
    # command's --preset does (the precedence: the row's options, these, the row's preset, then `sampling`).
    typed_options: frozenset[str] = field(default=frozenset(), metadata={"cli": False})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.typed_options) - set(SamplingConfig.field_names()))
        if unknown:
            raise ValueError(f"`typed_options` names {', '.join(unknown)}, which are not sampling options")
        if self.format not in FORMATS:
            raise ValueError(f"`format` must be one of {', '.join(FORMATS)}, got {self.format!r}")

    def output_of(self, shot: Shot) -> Path:
        suffix = "" if self.format == "png" else f".{self.format}"
        return Path(self.out) / f"{shot.name}{suffix}"


@dataclass(frozen=True)
class BatchSummary:
    """What a run did, per shot (``records``: one dict each, in shot-list order, bad rows included)."""

    path: Path
    records: list[dict]

    def count(self, status: str) -> int:
        return sum(record["status"] == status for record in self.records)

    @property
    def line(self) -> str:
        counts = ", ".join(f"{self.count(status)} {status}" for status in (RENDERED, DONE_BEFORE, FAILED))
        return f"wrote {self.path}: {len(self.records)} shots, {counts}"


def record_path(out: Path, name: str) -> Path:
    return out / RECORDS / f"{name}.json"


def records_written_since(out: Path, started: float) -> int:
    """Shot records of every process written since ``started`` (the progress across shots); another process's
    temporary record (a hidden name) is not one, and may be renamed away while this counts."""
    count = 0
    for path in (out / RECORDS).glob("[!.]*.json"):
        try:
            count += path.stat().st_mtime >= started
        except FileNotFoundError:
            pass
    return count


def remove_stale_temporaries(out: Path) -> None:
    """A killed run can leave the hidden temporary file of the video it was writing: remove ours
    (:func:`inbetween.files.temporary_sibling`'s names), before any process writes again."""
    for stale in [*out.glob(".tmp-*"), *out.glob(".old-*"), *(out / RECORDS).glob(".tmp-*")]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def load_shot_keyframes(shot: Shot) -> list:
    """The shot's keyframe images, each readable and all of one aspect (errors name the files)."""
    from ..loading import check_keyframe_files
    from ..video_io import load_image

    images = [load_image(path) for path in shot.keyframes]
    for path, image in zip(shot.keyframes[1:], images[1:], strict=True):
        check_keyframe_files(shot.keyframes[0], images[0], path, image)
    return images


def render_shot(pipe, shot: Shot, config: BatchConfig) -> dict:
    """Render one shot to its output; the record of what was done."""
    import torch

    from ..sequence import interpolate_sequence
    from ..video_io import write_video

    started = time.perf_counter()
    keyframes = load_shot_keyframes(shot)
    sampling = shot.sampling_config(config.sampling, config.typed_options)
    seed = config.seed if shot.seed is None else shot.seed
    generator = torch.Generator(device="cpu").manual_seed(seed)
    frames = interpolate_sequence(
        pipe, keyframes, sampling, loop=shot.loop, generator=generator, allow_oversize=config.allow_oversize
    )
    fps = sampling.fps if shot.output_fps is None else shot.output_fps
    path = write_video(frames, config.output_of(shot), fps=fps, overwrite=True)
    return dict(
        status=RENDERED,
        output=str(path),
        frames=len(frames),
        size=f"{frames[0].width}x{frames[0].height}",
        seed=seed,
        seconds=round(time.perf_counter() - started, 3),
        sampling={k: v for k, v in flat_values(sampling).items() if v is not None},
    )


def render_batch(config: BatchConfig) -> BatchSummary | None:
    """Render ``config``'s shot list (see the module docstring); the summary on process 0, ``None`` elsewhere."""
    import torch
    from tqdm.auto import tqdm

    from ..adapter import BackwardAdapter
    from ..loading import job_accelerator, load_pipeline, model_device

    model_device(config.model)  # a device this machine lacks: before anything is read
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"`{out}` is a file; give a folder for the videos")
    shots, bad_rows = read_shot_list(config.shots)  # every process: the same shots, and the same errors
    adapter = BackwardAdapter.load(config.model.adapter) if config.model.adapter else None
    accelerator = job_accelerator(config.model)
    device = model_device(config.model, accelerator)
    main = accelerator.is_main_process
    started = time.time()
    # Every process sees the same finished videos: none writes one before all have passed the barrier below.
    done = {shot.name for shot in shots if config.output_of(shot).exists() and not config.overwrite}
    todo = [shot for shot in shots if shot.name not in done]
    mine = todo[accelerator.process_index :: accelerator.num_processes]
    if main:
        (out / RECORDS).mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        for error in bad_rows:
            print(f"inbetween batch: {error}", file=sys.stderr)
    accelerator.wait_for_everyone()

    if mine:
        pipe = load_pipeline(config.model, device, adapter, progress=main)
        bar = tqdm(total=len(todo), desc="shots", unit="shot", disable=not main)
        for shot in mine:
            bar.set_postfix_str(shot.name)
            try:
                record = render_shot(pipe, shot, config)
            except Exception as exc:  # noqa: BLE001 - one shot's failure (bad input, out of memory) is its record
                record = dict(status=FAILED, message=one_line(exc))
                where = f"{Path(config.shots).name} row {shot.row} ({shot.name})"
                tqdm.write(f"inbetween batch: {where}: {record['message']}", file=sys.stderr)  # above the bar
                if not isinstance(exc, USER_ERRORS) and torch.cuda.is_available():
                    torch.cuda.empty_cache()
            write_json(record_path(out, shot.name), dict(name=shot.name, process=accelerator.process_index, **record))
            bar.n = records_written_since(out, started)
            bar.refresh()
        bar.close()
        del pipe
    accelerator.wait_for_everyone()
    if not main:
        return None
    return write_summary(config, shots, bad_rows, done)


def write_summary(config: BatchConfig, shots: list[Shot], bad_rows: list[ShotError], done: set[str]) -> BatchSummary:
    """Merge this run's records into ``OUT/summary.json`` (in shot-list order, bad rows by their row)."""
    out = Path(config.out)
    entries = []
    for shot in shots:
        if shot.name in done:
            entry = dict(name=shot.name, status=DONE_BEFORE, output=str(config.output_of(shot)))
        else:
            path = record_path(out, shot.name)
            if not path.is_file():
                raise RuntimeError(f"no record of shot {shot.name!r} after every process finished (`{path}`)")
            entry = json.loads(path.read_text())
        entries.append((shot.row, dict(row=shot.row, **entry)))
    for error in bad_rows:
        entries.append((error.row, dict(row=error.row, name=error.name, status=FAILED, message=str(error))))
    records = [entry for _, entry in sorted(entries, key=lambda item: item[0])]
    path = out / SUMMARY
    write_json(path, dict(shots=str(config.shots), model=config.model.model, records=records))
    return BatchSummary(path, records)
