"""Tiny synthetic clips whose frames say which frame they are (for checking strides, order and crops)."""

from __future__ import annotations

import numpy as np
import torch

HEIGHT, WIDTH, CELL = 48, 64, 8  # the square steps one 8 px cell per frame: 8 x 6 = 48 distinct positions


def square_clip(frames: int) -> np.ndarray:
    """(frames, 48, 64, 3) uint8: a red 8x8 square whose cell encodes the frame number, on dark grey."""
    clip = np.full((frames, HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    per_row = WIDTH // CELL
    for index in range(frames):
        y, x = (index // per_row) * CELL, (index % per_row) * CELL
        clip[index, y : y + CELL, x : x + CELL] = (240, 30, 30)
    return clip


def frame_number(frame: torch.Tensor, low: float = 0.0) -> int:
    """The frame number encoded in a (3, H, W) frame with values in [low, 1] (0 or -1), from the red square's
    centroid, so lossy codecs still read right."""
    ys, xs = torch.nonzero(frame[0] - frame[1] > 0.5 * (1 - low), as_tuple=True)
    assert len(ys) > 0, "no red square in frame"
    row, col = round((ys.float().mean().item() - 3.5) / CELL), round((xs.float().mean().item() - 3.5) / CELL)
    return row * (WIDTH // CELL) + col
