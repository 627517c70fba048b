"""Training clips for backward-motion fine-tuning (Wang et al., ICLR 2025, section 3.2), from your own videos or
frame folders.

A sample is a clip of `num_frames` frames taken every `stride` frames, plus the same clip reversed in time:
the backward branch learns on the reversed clip conditioned on the original clip's last frame, while the
frozen forward branch sees the original conditioned on its first frame.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .video_io import count_frames, list_frame_files, read_frames

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv")

# A few failed clips in a row are a bad file each; this many means something systemic (a drive went away).
_MAX_CONSECUTIVE_FAILURES = 8


def check_frame_size(name: str, value: int) -> None:
    """Raise unless ``value`` (a frame ``height`` or ``width``) is a positive multiple of the VAE's 8x downsampling."""
    if value > 0 and value % 8 == 0:
        return
    raise _multiple_of_8_error(name, value)


def check_frame_sizes(height: int, width: int) -> None:
    """:func:`check_frame_size` of a frame's ``height``, then of its ``width``."""
    check_frame_size("height", height)
    check_frame_size("width", width)


def check_clip_frames(num_frames: int) -> None:
    """Raise unless ``num_frames`` holds a first and a last frame: what a clip between two keyframes needs."""
    if num_frames < 2:
        raise ValueError(f"`num_frames` must be at least 2 (a first and a last frame), got {num_frames}")


def _multiple_of_8_error(name: str, value: int) -> ValueError:
    return ValueError(
        f"`{name}` must be a positive multiple of 8 (the VAE downsamples 8x), got {value}; "
        f"try {max(8, round(value / 8) * 8)}"
    )


@dataclass(frozen=True)
class ClipSpec:
    """What one training sample is; defaults are the paper's (section 3.2, 4): 14 frames, every 2nd, 1024x576."""

    num_frames: int = 14
    stride: int = 2
    height: int = 576
    width: int = 1024

    def __post_init__(self) -> None:
        check_clip_frames(self.num_frames)
        if self.stride < 1:
            raise ValueError(f"`stride` must be at least 1 (1 takes every frame), got {self.stride}")
        check_frame_sizes(self.height, self.width)

    @property
    def span(self) -> int:
        """Source frames one clip covers, first to last inclusive."""
        return (self.num_frames - 1) * self.stride + 1


def _as_roots(root: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    roots = [Path(root)] if isinstance(root, (str, os.PathLike)) else [Path(r) for r in root]
    for path in roots:
        if not path.exists():
            raise FileNotFoundError(f"training data `{path}` not found; pass a folder of videos or frame folders")
    return roots


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def find_sources(root: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Video files and frame folders under `root` (one or more folders or files), recursively, sorted.

    A frame folder is a directory directly holding at least one .png/.jpg/.jpeg. Names starting with "." are
    ignored: they are write_video's half-written temporaries or macOS "._name.mp4" metadata, never videos.
    """
    candidates: list[Path] = []
    for path in _as_roots(root):
        if path.is_file():
            candidates.append(path)
            continue
        for folder, subfolders, files in os.walk(path):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            candidates.extend(Path(folder, name) for name in files if not name.startswith("."))
            if list_frame_files(folder):
                candidates.append(Path(folder))
    # Keyed by resolved path so overlapping roots ("data", "data/cats") do not yield a video twice.
    found = {path.resolve(): path for path in candidates if path.is_dir() or _is_video(path)}
    return sorted(found.values())


def _name_list(paths: list[Path]) -> str:
    return ", ".join(str(path) for path in paths)


def fit_frame(image: Image.Image, height: int, width: int) -> torch.Tensor:
    """Resize `image` to cover (height, width) keeping its aspect, center-crop, and scale to [-1, 1].

    Returns a float32 tensor of shape (3, height, width). Cropping instead of padding or stretching keeps
    objects their true shape and puts no artificial borders in front of the model.
    """
    fitted = ImageOps.fit(image.convert("RGB"), (width, height), method=Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(fitted, dtype=np.float32)).permute(2, 0, 1)  # (3, H, W) in [0, 255]
    return pixels / 127.5 - 1.0


class ClipDataset(torch.utils.data.Dataset):
    """Non-overlapping clips from a folder of videos (mp4, mov, webm, mkv) and/or frame folders.

    The folder is scanned once: each source's frame count is read without decoding, and it yields clips
    starting at frames 0, span, 2 * span, ... (span = (num_frames - 1) * stride + 1), at most
    `clips_per_video` of them. Sources too short for one clip, and unreadable files, are skipped with one
    warning each naming them all. Only the frames of a requested clip are decoded, and the dataset keeps no
    open files, so it is safe to use with DataLoader workers.

    If a clip fails to decode later (a file changed or is corrupt past its header), `__getitem__` warns with
    the file's name and returns the next clip instead, so one bad file cannot end a long run; several
    failures in a row raise RuntimeError.

    Attributes:
        clips: (source path, start frame) of every clip, in index order (sorted paths, then start).
        sources: the usable videos and frame folders; skipped: the short or unreadable ones.

    Example:
        >>> dataset = ClipDataset("data/", ClipSpec(num_frames=14, stride=2, height=576, width=1024))
        >>> print(dataset.describe())  # e.g. "212 clips from 100 videos (3 skipped)"
    """

    def __init__(
        self,
        root: str | os.PathLike | Sequence[str | os.PathLike],
        spec: ClipSpec = ClipSpec(),  # frozen, so one shared default is safe
        clips_per_video: int | None = None,
    ) -> None:
        if clips_per_video is not None and clips_per_video < 1:
            raise ValueError(f"`clips_per_video` must be at least 1 or None (all clips), got {clips_per_video}")
        self.spec = spec
        self.clips: list[tuple[Path, int]] = []
        self.sources: list[Path] = []
        short: list[tuple[Path, int]] = []
        unreadable: list[Path] = []
        roots = _as_roots(root)
        for source in find_sources(roots):
            try:
                frames = count_frames(source)
            except ValueError:
                unreadable.append(source)
                continue
            count = frames // spec.span  # clips whose last frame is still inside the video
            if count == 0:
                short.append((source, frames))
                continue
            count = count if clips_per_video is None else min(count, clips_per_video)
            self.sources.append(source)
            self.clips.extend((source, i * spec.span) for i in range(count))
        self.skipped = [path for path, _ in short] + unreadable
        need = f"{spec.span} frames ({spec.num_frames} frames x stride {spec.stride})"
        if short:
            names = ", ".join(f"{path} ({frames})" for path, frames in short)
            warnings.warn(f"skipping {len(short)} videos shorter than {need}: {names}", stacklevel=2)
        if unreadable:
            warnings.warn(f"skipping {len(unreadable)} unreadable videos: {_name_list(unreadable)}", stacklevel=2)
        if not self.clips:
            kinds = ", ".join(suffix[1:] for suffix in VIDEO_SUFFIXES)
            raise ValueError(
                f"no training clips in `{_name_list(roots)}`: found 0 videos ({kinds}) or frame folders "
                f"with at least {need}; {len(short)} too short, {len(unreadable)} unreadable; add longer videos "
                "or lower `num_frames`/`stride`"
            )

    def __len__(self) -> int:
        return len(self.clips)

    def describe(self) -> str:
        """One line for logs, e.g. "212 clips from 100 videos (3 skipped)"."""
        return f"{len(self.clips)} clips from {len(self.sources)} videos ({len(self.skipped)} skipped)"

    def load_clip(self, index: int) -> torch.Tensor:
        """Decode clip `index` in original time order: float32 (N, 3, H, W) in [-1, 1]. Raises ValueError."""
        path, start = self.clips[index]
        spec = self.spec
        images = read_frames(path, start, spec.num_frames, spec.stride)
        return torch.stack([fit_frame(image, spec.height, spec.width) for image in images])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One training sample; N = num_frames, H, W = height, width, values float32 in [-1, 1].

        Returns:
            "clip": (N, 3, H, W) the clip in original time order (the trainer reverses its latents, not a copy of
                the pixels).
            "first_frame": (3, H, W) clip[0], the forward branch's condition.
            "last_frame": (3, H, W) clip[-1], the backward branch's condition.
            "index": 0-d int64, the index of the clip returned (differs from `index` only after a decode failure).
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        index %= len(self)
        errors: list[str] = []
        for attempt in range(min(len(self), _MAX_CONSECUTIVE_FAILURES)):
            current = (index + attempt) % len(self)
            try:
                clip = self.load_clip(current)  # (N, 3, H, W)
            except ValueError as exc:
                errors.append(str(exc))
                warnings.warn(f"skipping clip {current}: {exc}", stacklevel=2)
                continue
            return {
                "clip": clip,
                "first_frame": clip[0],
                "last_frame": clip[-1],
                "index": torch.tensor(current, dtype=torch.long),
            }
        raise RuntimeError(f"{len(errors)} clips in a row failed to decode, from clip {index}: {'; '.join(errors)}")
