"""Input checks and resizing shared by the evaluation networks (images and videos in [-1, 1])."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Tolerance for rounding or interpolation overshoot; [0, 255] or badly scaled inputs are far outside it.
_RANGE_SLACK = 1e-2


def _check_range(x: torch.Tensor, name: str) -> None:
    lo, hi = x.min().item(), x.max().item()
    if lo < -1 - _RANGE_SLACK or hi > 1 + _RANGE_SLACK:
        raise ValueError(
            f"`{name}` must be in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]; map [0, 1] frames with 2 * x - 1."
        )


def check_images(x: torch.Tensor, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is a (B, 3, H, W) floating tensor in [-1, 1]."""
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"`{name}` must be float images of shape (B, 3, H, W), got {x.dtype} {tuple(x.shape)}.")
    _check_range(x, name)


def check_videos(x: torch.Tensor, min_frames: int = 1, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is a (B, 3, T, H, W) floating tensor in [-1, 1] with T >= ``min_frames``."""
    if x.ndim != 5 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"`{name}` must be float videos of shape (B, 3, T, H, W), got {x.dtype} {tuple(x.shape)}.")
    if x.shape[2] < min_frames:
        raise ValueError(f"`{name}` needs at least {min_frames} frames (dim 2), got {x.shape[2]}.")
    _check_range(x, name)


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize, half-pixel centres, no antialiasing (as pytorch-fid): (B, C, H, W) -> (B, C, size, size)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def resize_videos(x: torch.Tensor, size: int) -> torch.Tensor:
    """Per-frame bilinear resize: (B, C, T, H, W) -> (B, C, T, size, size)."""
    b, c, t, h, w = x.shape
    if (h, w) == (size, size):
        return x
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (B*T, C, H, W)
    frames = resize_images(frames, size)
    return frames.reshape(b, t, c, size, size).permute(0, 2, 1, 3, 4)
