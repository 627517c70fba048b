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

from .files import atomic_folder
from .hub import TINY_WORLD
from .toyworld_eval import (
    CROSSFADE,
    DUAL_NO_FT,
    FORWARD_ONLY,
    FULL,
    heldout_videos,
    interpolate_videos,
    load_tiny_world,
)
from .video_io import write_video

DEMO_METHODS = (CROSSFADE, FORWARD_ONLY, DUAL_NO_FT, FULL)
GROUND_TRUTH = "ground truth"
ZOOM = 4  # the world is 32 px: videos and the sheet are enlarged with nearest-neighbour pixels to stay sharp
LABEL_WIDTH = 190


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def enlarge(frames: np.ndarray, zoom: int = ZOOM) -> np.ndarray:
    """``(..., H, W, 3)`` -> ``(..., zoom H, zoom W, 3)`` by pixel repetition."""
    return frames.repeat(zoom, axis=-3).repeat(zoom, axis=-2)


def comparison_sheet(rows: dict[str, np.ndarray], pair_names: list[str]) -> Image.Image:
    """One block per pair, one row per method (``rows[name]`` is ``(P, N, H, W, 3)`` uint8), frames left to right."""
    first = next(iter(rows.values()))
    pairs, frames, height, width, _ = first.shape
    tile_h, tile_w, gap = height * ZOOM, width * ZOOM, 2
    block_h = len(rows) * (tile_h + gap) + 24
    sheet = Image.new("RGB", (LABEL_WIDTH + frames * (tile_w + gap), pairs * block_h), "white")
    draw = ImageDraw.Draw(sheet)
    for p in range(pairs):
        top = p * block_h
        draw.text((4, top + 4), f"{pair_names[p]}: frame 0 ... {frames - 1} (keyframes at both ends)", fill="black")
        for r, (name, videos) in enumerate(rows.items()):
            y = top + 24 + r * (tile_h + gap)
            draw.text((4, y + tile_h // 2 - 6), name, fill="black")
            for f in range(frames):
                sheet.paste(Image.fromarray(enlarge(videos[p, f])), (LABEL_WIDTH + f * (tile_w + gap), y))
    return sheet


def run_demo(
    out: str | Path = "inbetween-demo",
    pairs: int = 3,
    num_inference_steps: int = 25,
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
    pipe, adapter = load_tiny_world(model)
    videos = heldout_videos(pairs)
    rows = {GROUND_TRUTH: np.stack([v.frames for v in videos])}
    for method in DEMO_METHODS:
        rows[method.name] = interpolate_videos(pipe, adapter, method, videos, num_inference_steps, seed)
    names = [f"pair {i} (world seed {v.seed})" for i, v in enumerate(videos)]
    with atomic_folder(out, overwrite=overwrite) as tmp:
        for i, video in enumerate(videos):
            Image.fromarray(video.frames[0]).save(tmp / f"pair{i}-first.png")
            Image.fromarray(video.frames[-1]).save(tmp / f"pair{i}-last.png")
            for name, frames in rows.items():
                write_video(enlarge(frames[i]), tmp / f"pair{i}-{slug(name)}.mp4", fps=4)
        comparison_sheet(rows, names).save(tmp / "comparison.png")
    return out
