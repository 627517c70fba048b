"""``inbetween demo``: the method at work offline, in under a minute on a laptop CPU.

The tiny-world model shipped with the package interpolates bundled held-out keyframe pairs of the toy world;
the demo writes every video and one comparison sheet whose rows are the ground truth, a linear cross-fade,
forward-only image-to-video, dual-directional sampling without fine-tuning, the full method under the paper's
sampling (the tiny world's few-step version of it), and the full method under the best measured preset
(:data:`BEST_PRESET`, with keyframe-exact ends). Each row's label gives its hit rate on that pair: an example, not
evidence (a few pairs cannot tell the methods apart); the methods' hit rates over 50 held-out pairs, with intervals,
are in docs/tiny_world/heldout (:func:`inbetween.toyworld.science.hit_rate_table`).

Its cost is the UNet's, per pair (a batch of ``pairs``): per video 10 rows for forward-only, 70 each for the two rows
under the paper's sampling (35 evaluations of two branches) and 148 for ``fast``; :data:`DEMO_PAIRS` pairs by default
(3 took 96 CPU seconds on one thread, 2 take 66).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..config import SamplingConfig
from ..evaluation.report import contact_sheet
from ..files import atomic_folder
from ..hub import TINY_WORLD
from ..video_io import write_video
from .candidates import DEMO_PAIRS, TINY_WORLD_SAMPLING
from .recipe import model_world
from .science import (
    CROSSFADE,
    DUAL_NO_FT,
    FORWARD_ONLY,
    FULL,
    WorldMethod,
    heldout_videos,
    interpolate_videos,
    load_tiny_world,
    score_pair,
)
from .world import WorldVideo

# The preset whose full-method row leads the tiny-world tables (docs/tiny_world/presets.md: hit rate 0.488 on the
# shipped model against 0.175 under the paper's sampling), run with keyframe-exact ends (fast's own setting).
BEST_PRESET = "fast"
DEMO_THREADS = 1  # torch threads while sampling (see run_demo)
BASELINES = (CROSSFADE, FORWARD_ONLY, DUAL_NO_FT)
GROUND_TRUTH = "ground truth"
ZOOM = 4  # the world is 32 px: videos and the sheet are enlarged with nearest-neighbour pixels to stay sharp


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def enlarge(frames: np.ndarray, zoom: int = ZOOM) -> np.ndarray:
    """``(..., H, W, 3)`` -> ``(..., zoom H, zoom W, 3)`` by pixel repetition."""
    return frames.repeat(zoom, axis=-3).repeat(zoom, axis=-2)


def comparison_sheet(
    rows: dict[str, np.ndarray], pair_names: list[str], hits: dict[str, list[float]] | None = None
) -> Image.Image:
    """One contact sheet per pair (``rows[name]`` is ``(P, N, H, W, 3)`` uint8), stacked under a title each; a row
    with ``hits[name]`` is labelled with that pair's hit rate."""
    hits = hits or {}

    def label(name: str, pair: int) -> str:
        return f"{name} (hit {hits[name][pair]:.2f})" if name in hits else name

    sheets = [
        contact_sheet({label(name, p): videos[p] for name, videos in rows.items()}, zoom=ZOOM)
        for p in range(len(pair_names))
    ]
    num_frames = next(iter(rows.values())).shape[1]
    title_height = 20
    page = Image.new("RGB", (sheets[0].width, len(sheets) * (sheets[0].height + title_height)), "white")
    draw = ImageDraw.Draw(page)
    for p, (sheet, name) in enumerate(zip(sheets, pair_names, strict=True)):
        top = p * (sheet.height + title_height)
        draw.text((4, top + 4), f"{name}: frames 0 to {num_frames - 1}, keyframes at both ends", fill="black")
        page.paste(sheet, (0, top + title_height))
    return page


def demo_rows(sampling: SamplingConfig) -> list[tuple[WorldMethod, str, SamplingConfig]]:
    """The sheet's model and baseline rows: ``(method, row label, sampling)``; the baselines and the paper's row under
    ``sampling``, the last row the full method under :data:`BEST_PRESET` over it with keyframe-exact ends."""
    best = replace(SamplingConfig.preset(BEST_PRESET, sampling), exact_ends=True)
    rows = [(method, method.name, sampling) for method in BASELINES]
    rows.append((FULL, f"{FULL.name}, paper's sampling", sampling))
    rows.append((FULL, f"{FULL.name}, {BEST_PRESET} + exact ends", best))
    return rows


def hit_rates(videos: np.ndarray, truth: list[WorldVideo]) -> list[float]:
    """The hit rate of each of ``videos`` ``(P, N, H, W, 3)`` against its ground truth (nan: no ball scored)."""
    return [score_pair(v, t)["hit_rate"] for v, t in zip(videos, truth, strict=True)]


def run_demo(
    out: str | Path = "inbetween-demo",
    pairs: int = DEMO_PAIRS,
    sampling: SamplingConfig = TINY_WORLD_SAMPLING,
    seed: int = 0,
    model: str = TINY_WORLD,
    overwrite: bool = False,
) -> Path:
    """Interpolate ``pairs`` bundled pairs with every demo row (:func:`demo_rows` over ``sampling``) into the folder
    ``out`` (written whole, atomically); returns ``out``."""
    if pairs < 1:
        raise ValueError(f"`--pairs` must be at least 1, got {pairs}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"`{out}` already exists; pass --overwrite to replace it or choose another --out")
    pipe, adapters = load_tiny_world(model)
    videos = heldout_videos(pairs, world=model_world(model))
    rows = {GROUND_TRUTH: np.stack([v.frames for v in videos])}
    hits = {}
    threads = torch.get_num_threads()
    # One thread: the 32 px model's ops are too small to split, and on a shared machine a second thread spins. On the
    # 2-core machine at load 3-5: 2 pairs took 283 CPU seconds (5 min 10 s) with torch's default of 2 threads; 3
    # pairs took 85 CPU seconds (1 min 56 s) with one.
    torch.set_num_threads(DEMO_THREADS)
    try:
        for method, label, config in demo_rows(sampling):
            rows[label] = interpolate_videos(pipe, adapters, method, videos, config, seed)
            hits[label] = hit_rates(rows[label], videos)
    finally:
        torch.set_num_threads(threads)
    names = [f"pair {i} (world seed {v.seed})" for i, v in enumerate(videos)]
    with atomic_folder(out, overwrite=overwrite) as tmp:
        for i, video in enumerate(videos):
            Image.fromarray(video.frames[0]).save(tmp / f"pair{i}-first.png")
            Image.fromarray(video.frames[-1]).save(tmp / f"pair{i}-last.png")
            for name, frames in rows.items():
                write_video(enlarge(frames[i]), tmp / f"pair{i}-{slug(name)}.mp4", fps=4)
        comparison_sheet(rows, names, hits).save(tmp / "comparison.png")
    return out
