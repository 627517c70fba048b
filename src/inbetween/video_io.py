"""Reading keyframes and writing/reading frame sequences as mp4, gif, webp or a folder of PNG frames.

Outputs are written atomically: into a hidden temporary sibling of the target, then renamed onto it, so a
crash or a bad frame never leaves a half-written file behind.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from functools import partial
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps, ImageSequence

from .config import FPS
from .errors import one_line
from .files import atomic_folder, atomic_output

OUTPUT_KINDS = ("mp4", "gif", "webp", "png")
_FILE_KINDS = {".mp4": "mp4", ".gif": "gif", ".webp": "webp"}
_PILLOW_ANIMATIONS = (".gif", ".webp")
_FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")

Frames = Sequence[Image.Image] | np.ndarray


def _av_message(exc: BaseException) -> str:
    # FFmpeg errors carry a numeric errno in str(); strerror alone reads better on one CLI line.
    return one_line(getattr(exc, "strerror", None) or exc)


def _open_rgb(path: Path, role: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()  # decode now so truncated/corrupt files fail here, not at first use
            # Phone photos store rotation in EXIF; honour it so the keyframe looks as it does in viewers.
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(
            f"cannot read {role} `{path}` as an image ({_av_message(exc)}); pass a valid PNG, JPEG or WebP file"
        ) from exc


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load a keyframe as a fully decoded RGB image (alpha is dropped, palettes and greyscale expanded)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"keyframe `{path}` not found; check the path and spelling")
    return _open_rgb(path, "keyframe")  # a folder fails here too, as "Is a directory"


def output_kind(path: str | os.PathLike) -> str:
    """Return the output kind for `path`: "mp4", "gif" or "webp" by extension, "png" for a frame folder.

    A folder is a path ending in a separator, a path without extension, or an existing directory with an
    unknown extension. A known extension wins over an existing directory so a misplaced folder is reported.
    """
    text = os.fspath(path)
    if text.endswith(("/", os.sep)):
        return "png"
    suffix = Path(text).suffix.lower()
    if suffix in _FILE_KINDS:
        return _FILE_KINDS[suffix]
    if not suffix or Path(text).is_dir():
        return "png"
    raise ValueError(
        f"unknown output extension `{suffix}` for `{text}`; use .mp4, .gif, .webp or a folder name for PNG frames"
    )


def _check_parent(target: Path, shown: str) -> None:
    parent = target.parent
    if not parent.exists():
        raise ValueError(f"folder `{parent}` for output `{shown}` does not exist; create it first")
    if not parent.is_dir():
        raise ValueError(f"`{parent}` for output `{shown}` is a file, not a folder; choose an output inside a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"folder `{parent}` for output `{shown}` is not writable; fix its permissions or use another")


def _check_existing(target: Path, kind: str, shown: str, overwrite: bool) -> None:
    if not os.path.lexists(target):
        return
    if kind == "png" and not target.is_dir():
        raise ValueError(f"output `{shown}` is a file but PNG frames need a folder; remove it or name another folder")
    if kind != "png" and target.is_dir():
        raise ValueError(f"output `{shown}` is a folder but .{kind} output is a file; remove it or pick another name")
    if not overwrite:
        raise FileExistsError(f"output `{shown}` already exists; pass --overwrite (overwrite=True) to replace it")


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> str:
    """Validate an output path before any expensive work and return its kind (one of `OUTPUT_KINDS`).

    Raises FileExistsError if it exists and `overwrite` is false, ValueError for an unknown extension, a
    missing, non-folder or unwritable parent, or an existing path of the wrong type (file vs. folder).
    """
    shown = os.fspath(path)
    kind = output_kind(path)
    target = Path(path)
    if target.name in ("", ".", ".."):
        raise ValueError(f"output `{shown}` does not name a file or folder; pass e.g. `out.mp4` or `frames/`")
    _check_parent(target, shown)
    _check_existing(target, kind, shown, overwrite)
    return kind


def _as_uint8_array(frames: np.ndarray) -> np.ndarray:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frame array has shape {frames.shape}; expected (N, H, W, 3) RGB")
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"frame array has dtype {frames.dtype}; pass uint8 in [0, 255] or floats in [0, 1]")
    low, high = float(frames.min()), float(frames.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"float frames span [{low:.3g}, {high:.3g}]; rescale them to [0, 1] (e.g. (x + 1) / 2)")
    return np.rint(frames * 255.0).astype(np.uint8)


def _as_rgb_images(frames: Frames) -> list[Image.Image]:
    if isinstance(frames, np.ndarray):
        frames = [Image.fromarray(frame) for frame in _as_uint8_array(frames)]
    images: list[Image.Image] = []
    for index, frame in enumerate(frames):
        if not isinstance(frame, Image.Image):
            raise ValueError(f"frame {index} is a {type(frame).__name__}; pass PIL images or one (N, H, W, 3) array")
        if images and frame.size != images[0].size:
            first = images[0]
            raise ValueError(
                f"frame {index} is {frame.width}x{frame.height} but frame 0 is {first.width}x{first.height}; "
                "resize all frames to one size"
            )
        images.append(frame if frame.mode == "RGB" else frame.convert("RGB"))
    if not images:
        raise ValueError("no frames to write; pass at least one frame")
    return images


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
    # 4:2:0 chroma needs even sides; replicating the edge keeps every input pixel (output may grow by 1 px).
    height, width = frame.shape[:2]
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def _write_mp4(images: list[Image.Image], path: Path, fps: Fraction) -> None:
    # "libx264" names only the encoder, so this tests for it; FFmpeg builds without GPL parts still have mpeg4.
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    first = _pad_to_even(np.asarray(images[0]))
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}  # visually lossless; the default 23 smears fine motion
        else:
            stream.bit_rate = 8_000_000
        for image in images:
            frame = av.VideoFrame.from_ndarray(_pad_to_even(np.asarray(image)), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush frames the encoder still buffers


def _write_pillow_animation(images: list[Image.Image], path: Path, fps: Fraction, **options: object) -> None:
    # Both formats store one duration per frame in milliseconds (GIF rounds further to 10 ms).
    duration = round(1000 / fps)
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0, **options)


def _write_png_folder(images: list[Image.Image], folder: Path) -> None:
    digits = max(4, len(str(len(images) - 1)))  # zero-padded so plain name order is frame order
    for index, image in enumerate(images):
        image.save(folder / f"frame_{index:0{digits}d}.png")


_FILE_WRITERS: dict[str, Callable[[list[Image.Image], Path, Fraction], None]] = {
    "mp4": _write_mp4,
    "gif": partial(_write_pillow_animation, format="GIF"),
    "webp": partial(_write_pillow_animation, format="WEBP", lossless=False, quality=90),
}


def write_video(frames: Frames, path: str | os.PathLike, fps: int = FPS, overwrite: bool = False) -> Path:
    """Write frames atomically as mp4, gif, webp or a folder of `frame_0000.png`, ... chosen by `path`.

    `frames` are PIL images or an (N, H, W, 3) array, uint8 or float in [0, 1]. Odd-sized mp4 frames are
    padded by one replicated row/column (H.264 4:2:0 needs even sides). GIF and WebP merge identical
    consecutive frames into one longer frame; use mp4 or PNG to keep every frame. Returns the output path.
    """
    if not fps > 0:  # also rejects NaN
        raise ValueError(f"fps must be positive, got {fps}; pass e.g. fps=7")
    kind = check_output_path(path, overwrite)
    rate = Fraction(fps).limit_denominator(1001)
    images = _as_rgb_images(frames)
    target = Path(path)
    if kind == "png":
        with atomic_folder(target, overwrite=True) as folder:
            _write_png_folder(images, folder)
    else:
        with atomic_output(target, overwrite=True) as file:
            _FILE_WRITERS[kind](images, file, rate)
    return target


def _natural_key(path: Path) -> list[int | str]:
    # "frame_10" after "frame_9": folders from other tools are often not zero-padded.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name.lower())]


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """The .png/.jpg/.jpeg files directly in `folder`, in frame order (natural name order, case-insensitive)."""
    return sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in _FRAME_SUFFIXES), key=_natural_key)


def _read_frame_folder(folder: Path) -> list[Image.Image]:
    files = list_frame_files(folder)
    if not files:
        raise ValueError(f"folder `{folder}` holds no .png or .jpg frames; point to a folder of frame images")
    return [_open_rgb(file, "frame") for file in files]


def _decode_with_pillow(path: Path) -> list[Image.Image]:
    with Image.open(path) as animation:
        return [frame.convert("RGB") for frame in ImageSequence.Iterator(animation)]


def _decode_with_pyav(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        return [frame.to_image() for frame in container.decode(video=0)]


def read_video(path: str | os.PathLike) -> list[Image.Image]:
    """Decode every frame of a video file, animated GIF/WebP, or folder of PNG/JPEG frames as RGB images."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video `{path}` not found; check the path and spelling")
    if path.is_dir():
        return _read_frame_folder(path)
    # Pillow composites GIF/WebP delta frames onto full frames; PyAV handles real video containers.
    decode = _decode_with_pillow if path.suffix.lower() in _PILLOW_ANIMATIONS else _decode_with_pyav
    try:
        frames = decode(path)
    except (av.FFmpegError, OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = _av_message(exc)
        raise ValueError(f"cannot read video `{path}` ({reason}); pass a valid mp4, webm, mov, gif or webp") from exc
    if not frames:
        raise ValueError(f"video `{path}` holds no frames; pass a video with at least one frame")
    return frames


def _cannot_read(path: Path, exc: BaseException) -> ValueError:
    return ValueError(
        f"cannot read video `{path}` ({_av_message(exc)}); pass a valid mp4, webm, mov, mkv or frame folder"
    )


@contextmanager
def open_video_stream(path: Path) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """The open container of a video file and its first video stream. A file without one raises a bare
    ``ValueError("no video stream")``, as PyAV's own errors come bare: each reader words the error for its caller."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        yield container, container.streams.video[0]


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames in a video file or frame folder, without decoding any frame.

    Uses the container's frame count when it stores one (mp4, mov) and otherwise counts the stream's packets
    (mkv, webm), which reads the file but decodes nothing. Raises ValueError for a file PyAV cannot open.
    """
    path = Path(path)
    if path.is_dir():
        return len(list_frame_files(path))
    try:
        with open_video_stream(path) as (container, stream):
            if stream.frames > 0:
                return stream.frames
            return sum(1 for packet in container.demux(stream) if packet.size > 0)  # size 0: end-of-stream flush
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _cannot_read(path, exc) from exc


def _timestamp_of(stream: av.VideoStream, index: int) -> int:
    """Timestamp (in `stream.time_base` units) of frame `index`, exact for a constant frame rate."""
    rate = stream.average_rate or stream.guessed_rate
    return (stream.start_time or 0) + math.floor(index / rate / stream.time_base)


def _decode_at(container: av.container.InputContainer, targets: range, seek: bool) -> list[Image.Image] | None:
    """Decode the frames at indices `targets`; None when a seek left the decoder past `targets[0]`."""
    stream = container.streams.video[0]
    origin, rate = stream.start_time or 0, stream.average_rate or stream.guessed_rate
    if seek:  # lands on the keyframe at or before the first target; timestamps then tell where we are
        container.seek(_timestamp_of(stream, targets[0]), stream=stream, backward=True)
    images: list[Image.Image] = []
    for counter, frame in enumerate(container.decode(stream)):
        if frame.pts is None or not rate:  # untimed: only decode order from the start says which frame this is
            if seek:
                return None
            position = counter
        else:
            # Timestamp -> index, so a variable frame rate video picks frames by time, the way players show them.
            position = round((frame.pts - origin) * stream.time_base * rate)
        if seek and counter == 0 and position > targets[0]:
            return None
        if position >= targets[len(images)]:
            images.append(frame.to_image())
            if len(images) == len(targets):
                break
    return images


def read_frames(path: str | os.PathLike, start: int, count: int, step: int = 1) -> list[Image.Image]:
    """Decode only frames `start, start + step, ...` (`count` of them) of a video file or frame folder as RGB.

    Video files seek to the nearest keyframe before `start` and decode from there, so the cost does not grow
    with `start`. Raises ValueError if the source cannot be read or ends before the last requested frame.
    """
    if start < 0 or count < 1 or step < 1:
        raise ValueError(f"need start >= 0, count >= 1 and step >= 1, got start={start}, count={count}, step={step}")
    path = Path(path)
    targets = range(start, start + count * step, step)
    if path.is_dir():
        images = [_open_rgb(file, "frame") for file in list_frame_files(path)[targets.start : targets.stop : step]]
    else:
        try:
            with open_video_stream(path) as (container, stream):
                can_seek = start > 0 and bool(stream.average_rate or stream.guessed_rate) and bool(stream.time_base)
                images = _decode_at(container, targets, seek=True) if can_seek else None
                if images is None:  # no seek possible, or it overshot: decode from the first frame instead
                    if can_seek:
                        container.seek(0)
                    images = _decode_at(container, targets, seek=False)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise _cannot_read(path, exc) from exc
    if len(images) < count:
        raise ValueError(
            f"`{path}` ends before frame {targets[-1]}; it holds fewer frames than its header or listing said"
        )
    return images
