"""Keyframe pairs for evaluation: which two source frames to interpolate between, chosen once and reused.

A pair is two real frames `gap` source frames apart; the frames between them are the ground truth the
generated in-between video is compared with. Pairs are drawn per video from a seed and the video's path, so
the same folder always gives the same pairs and adding a video leaves the other videos' pairs unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .data import check_frame_size, find_sources, fit_frame
from .files import atomic_output
from .video_io import count_frames, read_frames

MANIFEST_FORMAT = "inbetween-keyframe-pairs"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class PairSpec:
    """How evaluation pairs are drawn and shown to the model; defaults are SVD's 25 frames at 1024x576."""

    num_frames: int = 25  # generated frames, both keyframes included
    gap: int | None = None  # source frames from first to last keyframe; None: num_frames - 1 (1:1 ground truth)
    pairs_per_video: int = 1
    height: int = 576
    width: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_frames < 2:
            raise ValueError(f"`num_frames` must be at least 2 (a first and a last frame), got {self.num_frames}")
        if self.gap is not None and self.gap < 1:
            raise ValueError(f"`gap` must be at least 1 source frame, or None for num_frames - 1, got {self.gap}")
        if self.pairs_per_video < 1:
            raise ValueError(f"`pairs_per_video` must be at least 1, got {self.pairs_per_video}")
        for name in ("height", "width"):
            check_frame_size(name, getattr(self, name))
        if self.seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {self.seed}")

    @property
    def frame_gap(self) -> int:
        """Source frames from the first keyframe to the last: `gap`, or num_frames - 1 when `gap` is None."""
        return self.num_frames - 1 if self.gap is None else self.gap


@dataclass(frozen=True)
class KeyframePair:
    """Source frames `start` and `start + gap` of video or frame folder `source`, named `name`."""

    source: str
    start: int
    gap: int
    name: str


def _source_rng(seed: int, key: str) -> np.random.Generator:
    # A stable digest (not hash(), which is salted per process) so each video's draw depends on its path alone.
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def _relative_key(source: Path, root: Path) -> str:
    return source.relative_to(root).as_posix() if source != root and source.is_relative_to(root) else source.name


def build_pairs(root: str | os.PathLike, spec: PairSpec = PairSpec()) -> list[KeyframePair]:
    """Draw `spec.pairs_per_video` distinct keyframe pairs from every video or frame folder under `root`.

    Sources with fewer than `spec.frame_gap + 1` frames are skipped with one warning. Start positions are
    uniform over the valid ones, from a generator seeded by (`spec.seed`, the source's path relative to
    `root`). Returns pairs sorted by source and start. Raises FileNotFoundError / ValueError when nothing fits.
    """
    root, gap = Path(root), spec.frame_gap
    sources = find_sources(root)
    stems = [source.stem for source in sources]
    pairs: list[KeyframePair] = []
    short: list[str] = []
    for source, stem in zip(sources, stems, strict=True):
        frames = count_frames(source)
        if frames < gap + 1:
            short.append(f"{source} ({frames})")
            continue
        key = _relative_key(source, root)
        if stems.count(stem) > 1:  # same stem in two folders: name by the relative path to stay unique
            stem = key.removesuffix(source.suffix if source.is_file() else "").replace("/", "-")
        draw = _source_rng(spec.seed, key).choice(frames - gap, min(spec.pairs_per_video, frames - gap), replace=False)
        pairs.extend(KeyframePair(str(source), int(start), gap, f"{stem}-{start}") for start in sorted(draw))
    if short:
        warnings.warn(f"skipping {len(short)} videos shorter than {gap + 1} frames: {', '.join(short)}", stacklevel=2)
    if not pairs:
        raise ValueError(
            f"no keyframe pairs in `{root}`: {len(sources)} videos or frame folders, none with {gap + 1} frames; "
            "add longer videos or lower `gap`/`num_frames`"
        )
    return pairs


def save_manifest(pairs: list[KeyframePair], spec: PairSpec, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write `pairs` and `spec` atomically as JSON; sources are stored relative to the manifest's folder."""
    path = Path(path)
    folder = os.path.abspath(path.parent)
    rows = []
    for pair in pairs:
        try:
            source = Path(os.path.relpath(os.path.abspath(pair.source), folder)).as_posix()
        except ValueError:  # another drive on Windows: no relative path exists
            source = os.path.abspath(pair.source)
        rows.append({**asdict(pair), "source": source})
    document = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "spec": asdict(spec), "pairs": rows}
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(document, indent=1) + "\n")
    return path


def load_manifest(path: str | os.PathLike) -> tuple[list[KeyframePair], PairSpec]:
    """Read a manifest written by `save_manifest`; relative sources are resolved against its folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest `{path}` not found; write one with save_manifest(build_pairs(...), ...)")
    try:
        document = json.loads(path.read_text())
        if document.get("format") != MANIFEST_FORMAT or document.get("version") != MANIFEST_VERSION:
            raise ValueError(f"format {document.get('format')!r} version {document.get('version')!r}")
        spec = PairSpec(**document["spec"])
        names = {field.name for field in fields(KeyframePair)}
        pairs = [KeyframePair(**{key: row[key] for key in names}) for row in document["pairs"]]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        reason = " ".join(str(exc).split())
        raise ValueError(
            f"manifest `{path}` is not a v{MANIFEST_VERSION} keyframe-pair manifest ({reason}); rebuild it"
        ) from exc
    folder = path.parent
    return [
        KeyframePair(os.path.normpath(folder / pair.source), pair.start, pair.gap, pair.name) for pair in pairs
    ], spec


def ground_truth_indices(start: int, gap: int, num_frames: int) -> list[int]:
    """Source frame nearest to each of `num_frames` evenly spaced times from `start` to `start + gap`.

    Ties round up; integer arithmetic, so the choice never depends on float error or on `start`.
    """
    steps = num_frames - 1
    return [start + (2 * i * gap + steps) // (2 * steps) for i in range(num_frames)]


def _read_indices(source: str, indices: list[int]) -> list:
    """Decode exactly the frames at sorted `indices` (repeats allowed), in order."""
    wanted = sorted(set(indices))
    steps = set(np.diff(wanted).tolist())
    if len(steps) <= 1:  # evenly spaced (or one frame): a single strided read
        images = read_frames(source, wanted[0], len(wanted), steps.pop() if steps else 1)
    elif Path(source).is_dir():  # frame files open individually at no extra cost
        images = [read_frames(source, index, 1)[0] for index in wanted]
    else:  # a video decodes the frames in between anyway; one pass beats a seek per frame
        every = read_frames(source, wanted[0], wanted[-1] - wanted[0] + 1)
        images = [every[index - wanted[0]] for index in wanted]
    by_index = dict(zip(wanted, images, strict=True))
    return [by_index[index] for index in indices]


def load_pair(pair: KeyframePair, spec: PairSpec) -> dict[str, torch.Tensor]:
    """Keyframes and ground truth of `pair`, resized and center-cropped like the model's input (`fit_frame`).

    Returns float32 tensors in [0, 1]; N = spec.num_frames, H, W = spec.height, spec.width:
        "first": (3, H, W) source frame `start`.
        "last": (3, H, W) source frame `start + gap`.
        "ground_truth": (N, 3, H, W) the source frames nearest to N evenly spaced times from first to last
            (exactly frames start..start+gap when gap == N - 1); its first and last frames are the keyframes.
    """
    indices = ground_truth_indices(pair.start, pair.gap, spec.num_frames)
    images = _read_indices(pair.source, indices)
    frames = torch.stack([fit_frame(image, spec.height, spec.width) for image in images])  # (N, 3, H, W) in [-1, 1]
    frames = ((frames + 1.0) / 2.0).clamp(0.0, 1.0)
    return {"first": frames[0], "last": frames[-1], "ground_truth": frames}


def blend(first: torch.Tensor, last: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Linear cross-fade baseline: frame i = (1 - t) first + t last, t = i / (num_frames - 1).

    `first`, `last`: (3, H, W) in any range; returns (num_frames, 3, H, W) of their dtype.
    """
    if num_frames < 2:
        raise ValueError(f"`num_frames` must be at least 2 (a first and a last frame), got {num_frames}")
    t = torch.linspace(0.0, 1.0, num_frames, dtype=first.dtype, device=first.device).view(-1, 1, 1, 1)
    return (1.0 - t) * first + t * last
