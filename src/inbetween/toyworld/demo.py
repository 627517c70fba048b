"""``inbetween demo``: the method at work offline, in under a minute on a laptop CPU.

The tiny-world model shipped with the package interpolates bundled held-out keyframe pairs of the toy world;
the demo writes every video and one comparison sheet whose rows are the ground truth, a linear cross-fade,
forward-only image-to-video, dual-directional sampling without fine-tuning, and the full method.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..config import TINY_WORLD_SAMPLING, SamplingConfig
from ..evaluation.report import contact_sheet
from ..files import atomic_folder
from ..hub import TINY_WORLD
from ..video_io import write_video
from .recipe import model_world
from .science import (
    CROSSFADE,
    DUAL_NO_FT,
    FORWARD_ONLY,
    FULL,
    heldout_videos,
    interpolate_videos,
    load_tiny_world,
)

DEMO_METHODS = (CROSSFADE, FORWARD_ONLY, DUAL_NO_FT, FULL)
GROUND_TRUTH = "ground truth"
ZOOM = 4  # the world is 32 px: videos and the sheet are enlarged with nearest-neighbour pixels to stay sharp


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def enlarge(frames: np.ndarray, zoom: int = ZOOM) -> np.ndarray:
    """``(..., H, W, 3)`` -> ``(..., zoom H, zoom W, 3)`` by pixel repetition."""
    return frames.repeat(zoom, axis=-3).repeat(zoom, axis=-2)


def comparison_sheet(rows: dict[str, np.ndarray], pair_names: list[str]) -> Image.Image:
    """One contact sheet per pair (``rows[name]`` is ``(P, N, H, W, 3)`` uint8), stacked under a title each."""
    sheets = [
        contact_sheet({name: videos[p] for name, videos in rows.items()}, zoom=ZOOM) for p in range(len(pair_names))
    ]
    title_height = 20
    page = Image.new("RGB", (sheets[0].width, len(sheets) * (sheets[0].height + title_height)), "white")
    draw = ImageDraw.Draw(page)
    for p, (sheet, name) in enumerate(zip(sheets, pair_names, strict=True)):
        top = p * (sheet.height + title_height)
        draw.text(
            (4, top + 4),
            f"{name}: frames 0 to {rows[GROUND_TRUTH].shape[1] - 1}, keyframes at both ends",
            fill="black",
        )
        page.paste(sheet, (0, top + title_height))
    return page


def run_demo(
    out: str | Path = "inbetween-demo",
    pairs: int = 3,
    sampling: SamplingConfig = TINY_WORLD_SAMPLING,
    seed: int = 0,
    model: str = TINY_WORLD,
    overwrite: bool = False,
) -> Path:
    """Interpolate ``pairs`` bundled pairs with every demo method into the folder ``out`` (written whole, atomically);
    returns ``out``."""
    if pairs < 1:
        raise ValueError(f"`--pairs` must be at least 1, got {pairs}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"`{out}` already exists; pass --overwrite to replace it or choose another --out")
    pipe, adapters = load_tiny_world(model)
    videos = heldout_videos(pairs, world=model_world(model))
    rows = {GROUND_TRUTH: np.stack([v.frames for v in videos])}
    for method in DEMO_METHODS:
        rows[method.name] = interpolate_videos(pipe, adapters, method, videos, sampling, seed)
    names = [f"pair {i} (world seed {v.seed})" for i, v in enumerate(videos)]
    with atomic_folder(out, overwrite=overwrite) as tmp:
        for i, video in enumerate(videos):
            Image.fromarray(video.frames[0]).save(tmp / f"pair{i}-first.png")
            Image.fromarray(video.frames[-1]).save(tmp / f"pair{i}-last.png")
            for name, frames in rows.items():
                write_video(enlarge(frames[i]), tmp / f"pair{i}-{slug(name)}.mp4", fps=4)
        comparison_sheet(rows, names).save(tmp / "comparison.png")
    return out
