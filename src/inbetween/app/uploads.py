"""Keyframes from the browser, decoded safely: limits on size and pixel count, three formats, one-line errors.

An upload is untrusted input. Pillow is asked for PNG, JPEG or WebP only (no plugin that shells out, such as EPS),
the pixel count is checked from the header before any pixel is decoded (a decompression bomb is refused without
allocating it), and every decoding failure is a ``ValueError`` that names the file and the fix.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps

MAX_UPLOAD_MB = 32  # per file; the server refuses larger uploads before they reach Python
MAX_PIXELS = 50_000_000  # per keyframe: a 48-megapixel phone photo fits, a decompression bomb does not
MAX_KEYFRAMES = 16
FORMATS = ("PNG", "JPEG", "WEBP")
LIMITS = (
    f"up to {MAX_KEYFRAMES} keyframes, PNG, JPEG or WebP, at most {MAX_UPLOAD_MB} MB and "
    f"{MAX_PIXELS // 1_000_000} megapixels each"
)


def read_keyframe(path: str | os.PathLike, name: str | None = None) -> Image.Image:
    """The keyframe at ``path`` as a fully decoded RGB image, or a ``ValueError`` naming ``name`` (default: the
    file's name) and saying what to upload instead. EXIF rotation is applied; an animation gives its first frame."""
    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise ValueError(f"keyframe `{name}` is missing (the upload did not arrive); upload it again")
    size = path.stat().st_size
    if size > MAX_UPLOAD_MB * 1024 * 1024:
        raise ValueError(
            f"keyframe `{name}` is {size / 2**20:.0f} MB, above the {MAX_UPLOAD_MB} MB limit; upload a smaller file"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # our own limit below is lower anyway
            with Image.open(path, formats=FORMATS) as image:
                _check_pixels(image, name)
                image.load()  # decode now: a truncated or corrupt file fails here, not in the pipeline
                return ImageOps.exif_transpose(image).convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"keyframe `{name}` is too large to decode safely ({exc}); upload a smaller image") from exc
    except Image.UnidentifiedImageError as exc:
        raise ValueError(f"keyframe `{name}` is not a PNG, JPEG or WebP image; upload one of those") from exc
    except (OSError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        reason = " ".join(str(exc).replace(str(path), name).split())  # the server's paths are not the user's business
        raise ValueError(f"cannot decode keyframe `{name}` ({reason}); upload a valid PNG, JPEG or WebP file") from exc


def _check_pixels(image: Image.Image, name: str) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"keyframe `{name}` is {width}x{height} ({width * height / 1e6:.0f} megapixels), above the "
            f"{MAX_PIXELS // 1_000_000}-megapixel limit; downscale it first"
        )
    if width < 1 or height < 1:
        raise ValueError(f"keyframe `{name}` is {width}x{height}; upload an image with pixels")


def read_keyframes(paths: list[str | os.PathLike], names: list[str] | None = None) -> list[Image.Image]:
    """Every keyframe, in order, after checking their number (2 to ``MAX_KEYFRAMES``)."""
    if len(paths) < 2:
        raise ValueError(f"got {len(paths)} keyframe{'s' * (len(paths) != 1)}; upload at least two (first and last)")
    if len(paths) > MAX_KEYFRAMES:
        raise ValueError(f"got {len(paths)} keyframes, above the limit of {MAX_KEYFRAMES}; remove some")
    names = names or [Path(p).name for p in paths]
    return [read_keyframe(path, name) for path, name in zip(paths, names, strict=True)]
