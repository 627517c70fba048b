"""Keyframe sequences in the tiny world: joint sampling against independent segments and a cross-fade.

Long held-out world videos (``S`` segments of the model's ``N`` frames: 22 frames for 3 segments of 8) give the
keyframes at frames ``0, N - 1, 2 (N - 1), ...``; every method fills the frames between them:

- *joint*: :func:`inbetween.sequence.interpolate_sequence`, the segments one batch with shared boundary frames;
- *independent segments*: the same segments as a plain batch of pairs (the same seed, so the same noise draws),
  each decoded on its own and stitched by dropping the second copy of each boundary frame;
- *cross-fade*: each segment a linear blend of its keyframes.

Scores per sequence, from the ball centres the finder (:func:`~inbetween.toyworld.world.find_ball_centre`) matches
to each ground-truth ball (its colour and radius), over every frame that is not a keyframe:

- centre error (px) and hit rate, as in the science check (:mod:`inbetween.toyworld.science`);
- the velocity jump at the joins (px/frame): at a join frame ``t``, ``|(c[t+1] - c[t]) - (c[t] - c[t-1])|`` of the
  generated centres minus the same of the true centres (the true motion changes velocity too, by gravity and
  bounces), i.e. how far the generated motion's change of velocity at the join is from the truth's; the same
  quantity at the frames inside the segments is its reference;
- the pixels' jerk at the joins (grey levels): the mean absolute second difference in time,
  ``|f[t+1] - 2 f[t] + f[t-1]|``, at the join frames, next to the same inside the segments: defined wherever the
  ball finder fails, it shows a jump in the video at a join as a join value above the inside one (the ground
  truth's row is the reference);
- how far apart the two copies of each boundary frame are before stitching (grey levels; 0 where one frame is
  made for both).

Run it (about 30 minutes on 2 CPU cores):

    inbetween toyworld sequences --sequences 40 --out docs/sequences
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ..config import SamplingConfig
from ..evaluation.pairs import blend
from ..evaluation.report import contact_sheet, mean_interval
from ..files import atomic_output
from ..hub import TINY_WORLD
from ..options import flat_values
from ..pipeline import InbetweenPipeline
from ..sequence import interpolate_sequence, join_segments, keyframe_positions, sequence_length
from ..video_io import write_video
from .candidates import TINY_WORLD_SAMPLING
from .recipe import model_world
from .science import FULL, VISIBLE_FRACTION, _as_float, _as_uint8, heldout_videos, load_tiny_world
from .seeds import HELDOUT_SEEDS
from .world import WorldConfig, WorldVideo, find_ball_centre, visible_fraction

GROUND_TRUTH = "ground truth"
JOINT, INDEPENDENT, CROSSFADE = "joint (shared boundary frames)", "independent segments, stitched", "cross-fade"
SEQUENCE_METHODS = (JOINT, INDEPENDENT, CROSSFADE)
ZOOM = 3  # contact sheets: the world's 32 px frames enlarged by pixel repetition


@dataclass(frozen=True)
class SequenceResult:
    """One method's frames ``(L, H, W, 3)`` uint8 for one sequence, and how far apart the two copies of each
    boundary frame were before stitching (mean absolute grey levels; 0 where one frame serves both segments)."""

    frames: np.ndarray
    copies_gap: float


def long_world(world: WorldConfig, segments: int) -> WorldConfig:
    """``world`` with videos of ``segments`` segments of its own length, sharing their boundary frames."""
    return replace(world, num_frames=sequence_length(segments + 1, world.num_frames))


def interpolate_world_sequence(
    pipe: InbetweenPipeline,
    method: str,
    keyframes: np.ndarray,
    segment_frames: int,
    sampling: SamplingConfig,
    seed: int,
    loop: bool = False,
) -> SequenceResult:
    """``method``'s video through ``keyframes`` ``(n, H, W, 3)`` uint8, segments of ``segment_frames`` frames
    (the full method's sampling for the model methods; the backward adapter must be loaded)."""
    pixels = _as_float(keyframes)  # (n, 3, H, W) in [0, 1]
    firsts, lasts = (pixels, pixels.roll(-1, 0)) if loop else (pixels[:-1], pixels[1:])
    if method == CROSSFADE:
        segments = torch.stack([blend(a, b, segment_frames) for a, b in zip(firsts, lasts, strict=True)])
        return SequenceResult(_as_uint8(join_segments(segments, loop)), 0.0)
    size = keyframes.shape[1]
    config = replace(FULL.sampling(sampling), height=size, width=size, num_frames=segment_frames)
    generator = torch.Generator().manual_seed(seed)
    if method == JOINT:
        video = interpolate_sequence(pipe, pixels, config, loop=loop, generator=generator, output_type="pt")
        return SequenceResult(_as_uint8(video), 0.0)
    if method == INDEPENDENT:
        segments = _as_uint8(pipe(firsts, lasts, config, generator=generator, output_type="pt").frames)
        ends, starts = segments[:, -1], np.roll(segments, -1, 0)[:, 0]
        count = len(segments) if loop else len(segments) - 1
        gap = float(np.abs(ends[:count].astype(int) - starts[:count].astype(int)).mean())
        return SequenceResult(join_segments(torch.from_numpy(segments), loop).numpy(), gap)
    raise ValueError(f"unknown sequence method {method!r}; the methods are {', '.join(SEQUENCE_METHODS)}")


def found_centres(frames: np.ndarray, video: WorldVideo) -> np.ndarray:
    """``(L, B, 2)`` centres the finder matches to each ground-truth ball in ``frames``; NaN where it finds none or
    the ball is less than ``VISIBLE_FRACTION`` visible in the truth (not scored)."""
    visible = visible_fraction(video.centres, video.radii)  # (L, B)
    centres = np.full(video.centres.shape, np.nan)
    for t, frame in enumerate(frames):
        for ball, (colour, radius) in enumerate(zip(video.colours, video.radii, strict=True)):
            if visible[t, ball] >= VISIBLE_FRACTION:
                found = find_ball_centre(frame, colour, radius)
                if found is not None:
                    centres[t, ball] = found
    return centres


def velocity_jump_errors(centres: np.ndarray, truth: np.ndarray, frames: list[int]) -> list[float]:
    """``|Δv - Δv_true|`` (px/frame) at each of ``frames`` and ball where the ball is found at ``t - 1, t, t + 1``;
    ``Δv = (c[t+1] - c[t]) - (c[t] - c[t-1])``."""

    def jump(c: np.ndarray, t: int) -> np.ndarray:
        return c[t + 1] - 2 * c[t] + c[t - 1]  # (B, 2)

    errors = []
    for t in frames:
        difference = np.linalg.norm(jump(centres, t) - jump(truth, t), axis=-1)  # (B,), NaN where a centre is
        errors.extend(float(e) for e in difference if math.isfinite(e))
    return errors


def pixel_jerk(frames: np.ndarray, times: list[int]) -> float:
    """Mean absolute second difference in time ``|f[t+1] - 2 f[t] + f[t-1]|`` (grey levels) of uint8 ``(L, H, W,
    3)`` ``frames`` at ``times``."""
    video = frames.astype(np.float64)
    return float(np.mean([np.abs(video[t + 1] - 2 * video[t] + video[t - 1]).mean() for t in times]))


def score_sequence(result: SequenceResult, video: WorldVideo, segment_frames: int) -> dict[str, float]:
    """Per-sequence means over the frames that are not keyframes (see the module docstring); NaN where undefined."""
    length = len(video.frames)
    keys = keyframe_positions((length - 1) // (segment_frames - 1) + 1, segment_frames)
    between = [t for t in range(length) if t not in keys]
    visible = visible_fraction(video.centres, video.radii)[between] >= VISIBLE_FRACTION  # (F, B) scored balls
    centres = found_centres(result.frames, video)
    errors = np.linalg.norm(centres[between] - video.centres[between], axis=-1)  # (F, B), NaN where not found
    found = visible & np.isfinite(errors)
    hits = found & (errors <= video.radii[None])
    joins = velocity_jump_errors(centres, video.centres, keys[1:-1])
    inside = velocity_jump_errors(centres, video.centres, between)

    def mean(values) -> float:
        return float(np.mean(values)) if len(values) else math.nan

    return {
        "centre_error": mean(errors[found]),
        "hit_rate": float(hits.sum() / visible.sum()) if visible.any() else math.nan,
        "join_jump": mean(joins),
        "inside_jump": mean(inside),
        "join_jerk": pixel_jerk(result.frames, keys[1:-1]),
        "inside_jerk": pixel_jerk(result.frames, between),
        "copies_gap": result.copies_gap,
    }


METRICS = (
    ("centre_error", "centre error (px) ↓"),
    ("hit_rate", "hit rate ↑"),
    ("join_jump", "velocity jump at the joins, vs truth (px/frame) ↓"),
    ("inside_jump", "same inside the segments (px/frame) ↓"),
    ("join_jerk", "pixel jerk at the joins (grey levels)"),
    ("inside_jerk", "same inside the segments (grey levels)"),
    ("copies_gap", "boundary copies differ (grey levels)"),
)


def summary_table(results: Mapping[str, list[dict[str, float]]]) -> str:
    """Markdown: mean ± half-width of the 95 % Student-t interval over sequences (with the count where a metric
    is undefined for some)."""
    lines = ["| method | " + " | ".join(label for _, label in METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for name, scores in results.items():
        cells = []
        for key, _ in METRICS:
            values = [s[key] for s in scores if math.isfinite(s[key])]
            if not values:
                cells.append("n/a")
                continue
            mean, half = mean_interval(values)
            digits = 3 if key == "hit_rate" else 2
            cell = f"{mean:.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}")
            cells.append(cell + (f" (n={len(values)})" if len(values) < len(scores) else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sequence_sheet(rows: Mapping[str, np.ndarray], keyframes: list[int], wrap: bool = False) -> Image.Image:
    """A contact sheet (one row per video ``(L, H, W, 3)``) under a header of frame numbers, keyframes as ``K``;
    with ``wrap``, each row's first frame again after its last (where a loop continues)."""
    if wrap:
        rows = {name: np.concatenate([frames, frames[:1]]) for name, frames in rows.items()}
    sheet = contact_sheet(dict(rows), zoom=ZOOM)
    count, _, width = next(iter(rows.values())).shape[:3]  # columns, and the frame width before the zoom
    cell = width * ZOOM
    label_width = sheet.width - cell * count
    header = 16
    page = Image.new("RGB", (sheet.width, sheet.height + header), "white")
    page.paste(sheet, (0, header))
    draw = ImageDraw.Draw(page)
    for column in range(count):
        wraps = wrap and column == count - 1
        frame = 0 if wraps else column
        text = f"K{keyframes.index(frame) + 1}" if frame in keyframes else str(frame)
        draw.text(
            (label_width + column * cell + 4, 2),
            text + (" (wraps)" if wraps else ""),
            fill="red" if frame in keyframes else "black",
        )
    return page


def run_sequences(
    out: str | Path | None = None,
    model: str = TINY_WORLD,
    sequences: int = 40,
    segments: int = 3,
    sampling: SamplingConfig = TINY_WORLD_SAMPLING,
    seed: int = 0,
    first_seed: int = HELDOUT_SEEDS,
    overwrite: bool = False,
) -> str:
    """Score every method on ``sequences`` held-out long videos of ``segments`` segments; returns the Markdown
    table and, with ``out``, writes ``summary.md``, ``per_sequence.json``, ``sequence.png`` (the first sequence),
    ``loop.png`` and ``loop.gif`` (a loop through its first ``segments`` keyframes) there."""
    if sequences < 2:
        raise ValueError(f"`--sequences` must be at least 2 for an interval, got {sequences}")
    if segments < 2:
        raise ValueError(f"`--segments` must be at least 2 (a sequence has joins), got {segments}")
    names = ("summary.md", "per_sequence.json", "sequence.png", "loop.png", "loop.gif")
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (out / name).exists() and not overwrite:
                raise FileExistsError(f"`{out / name}` already exists; pass --overwrite to replace it")
    pipe, adapters = load_tiny_world(model)
    pipe.load_backward_adapter(adapters[FULL.adapter])
    world = model_world(model)
    segment_frames = world.num_frames
    videos = heldout_videos(sequences, first_seed, long_world(world, segments))
    keys = keyframe_positions(segments + 1, segment_frames)
    results: dict[str, list[dict[str, float]]] = {method: [] for method in (GROUND_TRUTH, *SEQUENCE_METHODS)}
    first_frames: dict[str, np.ndarray] = {}
    for index, video in enumerate(tqdm(videos, desc="tiny-world sequences", unit="sequence")):
        results[GROUND_TRUTH].append(score_sequence(SequenceResult(video.frames, 0.0), video, segment_frames))
        for method in SEQUENCE_METHODS:
            result = interpolate_world_sequence(
                pipe, method, video.frames[keys], segment_frames, sampling, seed + index
            )
            results[method].append(score_sequence(result, video, segment_frames))
            if index == 0:
                first_frames[method] = result.frames
    table = summary_table(results) + "\n\n" + paired_differences(results)
    if out is not None:
        loops = {
            method: interpolate_world_sequence(
                pipe, method, videos[0].frames[keys[:-1]], segment_frames, sampling, seed, loop=True
            ).frames
            for method in SEQUENCE_METHODS
        }
        settings = {"model": str(model), "sequences": sequences, "segments": segments, "first_seed": first_seed}
        settings |= {"seed": seed, "segment_frames": segment_frames, "video_frames": len(videos[0].frames)}
        write_results(out, results, settings | flat_values(sampling), videos, first_frames, loops, keys)
    return table


PAIRED = (
    ("join_jerk", "pixel jerk at the joins"),
    ("inside_jerk", "inside the segments"),
    ("centre_error", "centre error"),
    ("hit_rate", "hit rate"),
    ("join_jump", "velocity jump at the joins"),
)


def paired_differences(results: Mapping[str, list[dict[str, float]]], a: str = JOINT, b: str = INDEPENDENT) -> str:
    """``a - b`` per sequence (the same videos and the same noise draws), mean ± 95 % interval and count, for the
    :data:`PAIRED` metrics: one line of Markdown."""
    cells = []
    for key, label in PAIRED:
        pairs = [(x[key], y[key]) for x, y in zip(results[a], results[b], strict=True)]
        differences = [x - y for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
        if len(differences) < 2:
            cells.append(f"{label} n/a (n={len(differences)})")
            continue
        mean, half = mean_interval(differences)
        cells.append(f"{label} {mean:+.3f} ± {half:.3f} (n={len(differences)})")
    return f"Paired over the same sequences and noise, {a} minus {b}: " + "; ".join(cells) + "."


def summary_markdown(results: Mapping[str, list[dict[str, float]]], settings: dict, keys: list[int]) -> str:
    """``summary.md``: the table, the paired differences of the two model methods, how the table was made."""
    loop_length = (len(keys) - 1) * (settings["segment_frames"] - 1)
    return (
        f"# Keyframe sequences in the tiny world\n\n{summary_table(results)}\n\n{paired_differences(results)}\n\n"
        f"Mean ± 95 % Student-t interval over {settings['sequences']} held-out world videos of "
        f"{settings['video_frames']} frames (seeds from {settings['first_seed']}), keyframes at frames "
        f"{', '.join(map(str, keys))}: {settings['segments']} segments of {settings['segment_frames']} frames. "
        f"The loop through the first {len(keys) - 1} keyframes has {loop_length} frames. Settings: {settings}.\n"
    )


def write_results(
    out: Path,
    results: Mapping[str, list[dict[str, float]]],
    settings: dict,
    videos: list[WorldVideo],
    first: Mapping[str, np.ndarray],
    loops: Mapping[str, np.ndarray],
    keys: list[int],
) -> None:
    """The table and its settings, every score, and the pictures, each written atomically."""
    with atomic_output(out / "summary.md", overwrite=True) as tmp:
        tmp.write_text(summary_markdown(results, settings, keys))
    record = {"settings": settings, "seeds": [v.seed for v in videos], "results": results}
    with atomic_output(out / "per_sequence.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    rows = {GROUND_TRUTH: videos[0].frames, **first}
    with atomic_output(out / "sequence.png", overwrite=True) as tmp:
        sequence_sheet(rows, keys).save(tmp, format="PNG")
    with atomic_output(out / "loop.png", overwrite=True) as tmp:
        sequence_sheet(loops, keys[:-1], wrap=True).save(tmp, format="PNG")
    write_video(loops[JOINT].repeat(4, axis=1).repeat(4, axis=2), out / "loop.gif", fps=6, overwrite=True)
