"""Keyframe pairs for evaluation: which two source frames to interpolate between, chosen once and reused.

A pair is two real frames `gap` source frames apart inside one shot (`shots` finds the cuts); the frames
between them are the ground truth the generated in-between video is compared with. Pairs are drawn per video
from a seed and the video's path, so the same folder always gives the same pairs and adding a video leaves the
other videos' pairs unchanged. Pairs of one video share no frame while its shots have room for them all.

Output frame i of N lies at source time start + i * gap / (N - 1). Only where that is a whole source frame is there
ground truth (`scored_frames`); the other output frames are never compared with a neighbouring frame instead.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..data import check_clip_frames, check_frame_sizes, find_sources, fit_frame
from ..files import atomic_output
from ..seeds import derive_seed
from ..video_io import count_frames, read_frames
from .shots import DETECTOR_SETTINGS, detect_shots

MANIFEST_FORMAT = "inbetween-keyframe-pairs"
MANIFEST_VERSION = 2  # 2: shots per video, pairs inside one shot, `allow_cuts` in the spec


def scored_frames(gap: int, num_frames: int) -> list[int]:
    """In-between output indices i (0 < i < num_frames - 1) whose time i * gap / (num_frames - 1) is a source frame.

    All of them when `gap` is a multiple of num_frames - 1 (gap 24 with 25 frames: 1..23); with gap 8 and 25
    frames every third (3, 6, ..., 21, i.e. source frames 1..7).
    """
    steps = num_frames - 1
    return [i for i in range(1, steps) if i * gap % steps == 0]


def _check_scored(gap: int, num_frames: int) -> None:
    if num_frames < 3 or scored_frames(gap, num_frames):
        return
    steps = num_frames - 1
    near = [g for g in range(max(1, gap - steps), gap + steps + 1) if math.gcd(g, steps) > 1]
    nearest = sorted(sorted(near, key=lambda g: (abs(g - gap), g))[:2])
    raise ValueError(
        f"`gap` {gap} with `num_frames` {num_frames}: no in-between output frame falls on a source frame "
        f"(frame i is at source time i*{gap}/{steps}), so nothing could be scored; use a gap sharing a factor "
        f"with num_frames - 1 = {steps} (nearest: {' or '.join(map(str, nearest))}), or a multiple of {steps} "
        "to score every frame"
    )


@dataclass(frozen=True)
class PairSpec:
    """How evaluation pairs are drawn and shown to the model; defaults are SVD's 25 frames at 1024x576."""

    num_frames: int = 25  # generated frames, both keyframes included
    gap: int | None = None  # source frames from first to last keyframe; None: num_frames - 1 (1:1 ground truth)
    pairs_per_video: int = 1
    height: int = 576
    width: int = 1024
    seed: int = 0
    allow_cuts: bool = False  # draw across shot cuts too (no cut detection): the behaviour before manifest v2

    def __post_init__(self) -> None:
        check_clip_frames(self.num_frames)
        if self.gap is not None and self.gap < 1:
            raise ValueError(f"`gap` must be at least 1 source frame, or None for num_frames - 1, got {self.gap}")
        if self.pairs_per_video < 1:
            raise ValueError(f"`pairs_per_video` must be at least 1, got {self.pairs_per_video}")
        check_frame_sizes(self.height, self.width)
        if self.seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {self.seed}")
        _check_scored(self.frame_gap, self.num_frames)

    @property
    def frame_gap(self) -> int:
        """Source frames from the first keyframe to the last: `gap`, or num_frames - 1 when `gap` is None."""
        return self.num_frames - 1 if self.gap is None else self.gap

    @property
    def scored(self) -> list[int]:
        """The in-between output indices with ground truth (`scored_frames`)."""
        return scored_frames(self.frame_gap, self.num_frames)


@dataclass(frozen=True)
class KeyframePair:
    """Source frames `start` and `start + gap` of video or frame folder `source`, named `name`."""

    source: str
    start: int
    gap: int
    name: str


@dataclass(frozen=True)
class VideoShots:
    """A video or frame folder that pairs were drawn from: its frame count and shots, [start, stop) each."""

    source: str
    frames: int
    shots: tuple[tuple[int, int], ...]

    def shot_of(self, start: int, stop: int) -> tuple[int, int] | None:
        """The shot holding frames `start` to `stop` inclusive, or None when a cut lies between them."""
        return next((shot for shot in self.shots if shot[0] <= start and stop < shot[1]), None)


def _source_rng(seed: int, key: str) -> np.random.Generator:
    # Each video's draw depends on the run's seed and its path alone, so adding a video changes no other draw.
    return np.random.default_rng(derive_seed(seed, key))


def _relative_key(source: Path, root: Path) -> str:
    return source.relative_to(root).as_posix() if source != root and source.is_relative_to(root) else source.name


def _placements(size: int, length: int, count: int) -> int:
    """Ways to put `count` disjoint `length`-frame spans into `size` frames: C(size - count (length - 1), count)."""
    return math.comb(size - count * (length - 1), count) if count * length <= size else 0


def _pick(rng: np.random.Generator, weights: list[int]) -> int:
    """Index i with probability weights[i] / sum(weights) (exact integers; 63 random bits)."""
    target = sum(weights) * int(rng.integers(0, 2**63)) >> 63
    for index, weight in enumerate(weights):
        if target < weight:
            return index
        target -= weight
    raise AssertionError("weights must not all be zero")


def _draw_starts(rng: np.random.Generator, shots: list[range], length: int, count: int) -> list[int]:
    """`count` distinct starts of `length`-frame spans that each lie inside one of `shots`, sorted.

    While the shots hold `count` disjoint spans the spans share no frame, and every such placement is equally
    likely (the number of spans per shot is drawn from the exact placement counts, then the spans within each
    shot). Beyond that room, the remaining starts are drawn uniformly from the other valid ones, and overlap.
    At most as many starts as there are valid ones.
    """
    sizes = [len(shot) for shot in shots]
    valid = [start for shot in shots for start in range(shot.start, shot.stop - length + 1)]
    count = min(count, len(valid))
    disjoint = min(count, sum(size // length for size in sizes))
    # ways[i][j]: placements of j disjoint spans in shots[i:].
    ways = [[0] * (disjoint + 1) for _ in range(len(shots) + 1)]
    ways[-1][0] = 1
    for i in range(len(shots) - 1, -1, -1):
        for j in range(disjoint + 1):
            ways[i][j] = sum(
                _placements(sizes[i], length, a) * ways[i + 1][j - a] for a in range(min(j, sizes[i] // length) + 1)
            )
    starts: list[int] = []
    left = disjoint
    for i, shot in enumerate(shots):
        weights = [_placements(sizes[i], length, a) * ways[i + 1][left - a] for a in range(left + 1)]
        here = _pick(rng, weights)
        if here:  # `here` sorted slots among size - here (length - 1); slot k starts after k earlier spans
            slots = np.sort(rng.choice(sizes[i] - here * (length - 1), here, replace=False))
            starts += [shot.start + int(slot) + k * (length - 1) for k, slot in enumerate(slots)]
        left -= here
    if count > disjoint:
        taken = set(starts)
        rest = [start for start in valid if start not in taken]
        starts += [rest[int(k)] for k in rng.choice(len(rest), count - disjoint, replace=False)]
    return sorted(starts)


def draw_pairs(root: str | os.PathLike, spec: PairSpec = PairSpec()) -> tuple[list[KeyframePair], list[VideoShots]]:
    """Draw up to `spec.pairs_per_video` keyframe pairs from every video or frame folder under `root`.

    Every pair lies inside one shot (cuts found by `shots.detect_shots`; `spec.allow_cuts`: the whole
    video is one shot). Pairs of one video share no frame while its shots have room (see `_draw_starts`), drawn
    from a generator seeded by (`spec.seed`, the source's path relative to `root`). Sources without a shot of
    `spec.frame_gap + 1` frames are skipped with one warning; videos whose pairs had to overlap get one warning.
    Returns the pairs sorted by source and start, and every source's shots (skipped ones included).
    Raises FileNotFoundError / ValueError when nothing fits.
    """
    root, gap = Path(root), spec.frame_gap
    sources = find_sources(root)
    stems = [source.stem for source in sources]
    pairs: list[KeyframePair] = []
    videos: list[VideoShots] = []
    short: list[str] = []
    crowded: list[str] = []
    for source, stem in zip(sources, stems, strict=True):
        frames = count_frames(source)
        shots = [range(frames)] if spec.allow_cuts else detect_shots(source, frames)
        videos.append(VideoShots(str(source), frames, tuple((shot.start, shot.stop) for shot in shots)))
        room = [shot for shot in shots if len(shot) >= gap + 1]
        if not room:
            longest = max((len(shot) for shot in shots), default=0)
            short.append(f"{source} ({frames} frames" + ("" if spec.allow_cuts else f", longest shot {longest}") + ")")
            continue
        key = _relative_key(source, root)
        if stems.count(stem) > 1:  # same stem in two folders: name by the relative path to stay unique
            stem = key.removesuffix(source.suffix if source.is_file() else "").replace("/", "-")
        starts = _draw_starts(_source_rng(spec.seed, key), room, gap + 1, spec.pairs_per_video)
        disjoint = sum(len(shot) // (gap + 1) for shot in room)
        if len(starts) > disjoint:
            crowded.append(f"{source} ({len(starts)} pairs, room for {disjoint} apart)")
        pairs.extend(KeyframePair(str(source), start, gap, f"{stem}-{start}") for start in starts)
    within = "" if spec.allow_cuts else " in one shot"
    if short:
        warnings.warn(
            f"skipping {len(short)} videos without {gap + 1} frames{within}: {', '.join(short)}", stacklevel=2
        )
    if crowded:
        warnings.warn(
            f"pairs overlap in {len(crowded)} videos, so their scores are not independent: {', '.join(crowded)}; "
            "lower `pairs_per_video` or `gap`",
            stacklevel=2,
        )
    if not pairs:
        hint = "" if spec.allow_cuts else ", or allow pairs across shot cuts (allow_cuts=True, --allow-cuts)"
        raise ValueError(
            f"no keyframe pairs in `{root}`: {len(sources)} videos or frame folders, none with {gap + 1} frames"
            f"{within}; add longer videos or lower `gap`/`num_frames`{hint}"
        )
    return pairs, videos


def build_pairs(root: str | os.PathLike, spec: PairSpec = PairSpec()) -> list[KeyframePair]:
    """The pairs of `draw_pairs(root, spec)` (without the shots)."""
    return draw_pairs(root, spec)[0]


def _relative(path: str, folder: str) -> str:
    try:
        return Path(os.path.relpath(os.path.abspath(path), folder)).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return os.path.abspath(path)


def save_manifest(
    pairs: list[KeyframePair],
    spec: PairSpec,
    path: str | os.PathLike,
    overwrite: bool = False,
    videos: list[VideoShots] = (),
) -> Path:
    """Write `pairs`, `spec` and the `videos` they were drawn from atomically as JSON.

    Sources are stored relative to the manifest's folder. With `videos` (from `draw_pairs`) the manifest records
    every video's shots and the detector settings, and `load_manifest` checks each pair against its shot.
    """
    path = Path(path)
    folder = os.path.abspath(path.parent)
    rows = [{**asdict(pair), "source": _relative(pair.source, folder)} for pair in pairs]
    shots = [
        {"source": _relative(video.source, folder), "frames": video.frames, "shots": [list(s) for s in video.shots]}
        for video in videos
    ]
    document = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "spec": asdict(spec),
        "shot_detection": None if spec.allow_cuts else DETECTOR_SETTINGS,
        "videos": shots,
        "pairs": rows,
    }
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(document, indent=1) + "\n")
    return path


def read_manifest(path: str | os.PathLike) -> tuple[list[KeyframePair], PairSpec, list[VideoShots]]:
    """Pairs, spec and videos of a manifest written by `save_manifest`; sources resolved against its folder.

    Raises FileNotFoundError when it is missing, ValueError (one line) when it is not a v2 manifest or a pair
    is not inside a recorded shot of its video.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest `{path}` not found; write one with save_manifest(build_pairs(...), ...)")
    folder = path.parent
    try:
        document = json.loads(path.read_text())
        if document.get("format") != MANIFEST_FORMAT or document.get("version") != MANIFEST_VERSION:
            old = document.get("format") == MANIFEST_FORMAT and document.get("version") == 1
            note = ": drawn without shot-cut detection, its pairs may straddle cuts" if old else ""
            raise ValueError(f"format {document.get('format')!r} version {document.get('version')!r}{note}")
        spec = PairSpec(**document["spec"])
        names = {field.name for field in fields(KeyframePair)}
        pairs = [KeyframePair(**{key: row[key] for key in names}) for row in document["pairs"]]
        pairs = [KeyframePair(os.path.normpath(folder / p.source), p.start, p.gap, p.name) for p in pairs]
        videos = [
            VideoShots(os.path.normpath(folder / row["source"]), row["frames"], tuple(tuple(s) for s in row["shots"]))
            for row in document["videos"]
        ]
        by_source = {video.source: video for video in videos}
        for pair in pairs:
            video = by_source.get(pair.source)
            if video is None and videos:
                raise ValueError(f"pair {pair.name!r}: its source is not among the manifest's videos")
            if video is not None and video.shot_of(pair.start, pair.start + pair.gap) is None:
                raise ValueError(
                    f"pair {pair.name!r} (frames {pair.start}-{pair.start + pair.gap}) is not inside one shot"
                )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        reason = " ".join(str(exc).split())
        raise ValueError(
            f"manifest `{path}` is not a valid v{MANIFEST_VERSION} keyframe-pair manifest ({reason}); "
            "draw new pairs (delete it, or use a new --out / --manifest)"
        ) from exc
    return pairs, spec, videos


def load_manifest(path: str | os.PathLike) -> tuple[list[KeyframePair], PairSpec]:
    """Pairs and spec of a manifest written by `save_manifest` (`read_manifest` without the videos)."""
    pairs, spec, _ = read_manifest(path)
    return pairs, spec


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


def load_pair(
    pair: KeyframePair, spec: PairSpec, clip_offsets: list[int] | None = None
) -> dict[str, torch.Tensor | list[int]]:
    """Keyframes and ground truth of `pair`, resized and center-cropped like the model's input (`fit_frame`).

    Ground truth exists only for the output frames whose time falls on a source frame (`scored_frames`); no
    output frame is compared with a neighbouring source frame. Returns, with N = spec.num_frames, H, W =
    spec.height, spec.width, float32 tensors in [0, 1]:
        "first": (3, H, W) source frame `start`.
        "last": (3, H, W) source frame `start + gap`.
        "indices": the output indices i with ground truth, ascending: 0, the scored in-betweens, N - 1.
        "ground_truth": (len(indices), 3, H, W) source frame start + i * gap / (N - 1) for each i in "indices"
            (every frame start..start+gap when gap == N - 1); its first and last frames are the keyframes.
        "scored": "indices" without the keyframes: the in-between output frames that are scored.
        "clip" (with `clip_offsets`): (len(clip_offsets), 3, H, W) source frames start + offset.
    """
    _check_scored(pair.gap, spec.num_frames)
    steps = spec.num_frames - 1
    indices = [0, *scored_frames(pair.gap, spec.num_frames), steps]
    sources = [pair.start + i * pair.gap // steps for i in indices]
    clip = [pair.start + offset for offset in clip_offsets or []]
    wanted = sorted(set(sources + clip))
    images = _read_indices(pair.source, wanted)
    converted = torch.stack([fit_frame(image, spec.height, spec.width) for image in images])  # in [-1, 1]
    by_index = dict(zip(wanted, ((converted + 1.0) / 2.0).clamp(0.0, 1.0), strict=True))
    truth = torch.stack([by_index[index] for index in sources])
    loaded = {"first": truth[0], "last": truth[-1], "indices": indices, "ground_truth": truth, "scored": indices[1:-1]}
    if clip_offsets is not None:
        loaded["clip"] = torch.stack([by_index[index] for index in clip])
    return loaded


def blend(first: torch.Tensor, last: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Linear cross-fade baseline: frame i = (1 - t) first + t last, t = i / (num_frames - 1).

    `first`, `last`: (3, H, W) in any range; returns (num_frames, 3, H, W) of their dtype.
    """
    check_clip_frames(num_frames)
    t = torch.linspace(0.0, 1.0, num_frames, dtype=first.dtype, device=first.device).view(-1, 1, 1, 1)
    return (1.0 - t) * first + t * last
