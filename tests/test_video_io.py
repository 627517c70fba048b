"""Tests for inbetween.video_io: keyframe loading, output-path checks, atomic writes and read-back."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from inbetween import video_io
from inbetween.video_io import OUTPUT_KINDS, check_output_path, load_image, output_kind, read_video, write_video

# Measured worst per-frame mean abs error on this clip: mp4 (crf 18) 3.8, gif 2.5, webp (q90) 2.9.
# 6 leaves room for other encoder builds while still catching colour-space, channel-order or frame-order bugs.
LOSSY_MEAN_ABS_ERROR = 6.0


def moving_square(frames: int = 8, height: int = 48, width: int = 64) -> np.ndarray:
    """Smooth gradient background with a red square moving right, so every frame differs."""
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([x * 255 / (width - 1), y * 255 / (height - 1), np.full_like(x, 128.0)], axis=-1)
    clip = np.repeat(background[None], frames, axis=0)
    for index in range(frames):
        clip[index, 10:26, 4 + 5 * index : 20 + 5 * index] = (250, 40, 40)
    return clip.astype(np.uint8)


def as_array(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(image) for image in images]).astype(np.int16)


def entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def output_name(kind: str) -> str:
    return "frames" if kind == "png" else f"out.{kind}"


# --- round trips -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_round_trip_keeps_count_size_order_and_pixels(tmp_path: Path, kind: str) -> None:
    clip = moving_square()
    target = write_video(clip, tmp_path / output_name(kind), fps=7)
    assert target == tmp_path / output_name(kind)
    decoded = as_array(read_video(target))
    assert decoded.shape == clip.shape
    if kind == "png":
        np.testing.assert_array_equal(decoded, clip)
        return
    errors = np.abs(decoded - clip).mean(axis=(1, 2, 3))
    assert errors.max() < LOSSY_MEAN_ABS_ERROR, errors
    # Each decoded frame must be nearest to its own source frame: catches dropped, duplicated or reordered frames.
    distances = np.abs(decoded[:, None].astype(np.int32) - clip[None]).mean(axis=(2, 3, 4))
    assert list(distances.argmin(axis=1)) == list(range(len(clip)))


def test_mp4_uses_h264_at_requested_rate(tmp_path: Path) -> None:
    write_video(moving_square(), tmp_path / "out.mp4", fps=7)
    with av.open(str(tmp_path / "out.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == ("h264" if "libx264" in av.codecs_available else "mpeg4")
        assert stream.average_rate == 7
        assert stream.format.name == "yuv420p"


def test_mp4_pads_odd_sizes_by_replicating_the_edge(tmp_path: Path) -> None:
    clip = moving_square(frames=3, height=47, width=63)
    write_video(clip, tmp_path / "odd.mp4")
    decoded = as_array(read_video(tmp_path / "odd.mp4"))
    assert decoded.shape == (3, 48, 64, 3)
    assert np.abs(decoded[:, :47, :63] - clip).mean() < LOSSY_MEAN_ABS_ERROR
    assert np.abs(decoded[:, 47, :63] - clip[:, 46]).mean() < LOSSY_MEAN_ABS_ERROR  # padded row copies the last


def test_animation_frame_duration_follows_fps(tmp_path: Path) -> None:
    write_video(moving_square(), tmp_path / "out.webp", fps=8)
    write_video(moving_square(), tmp_path / "out.gif", fps=8)
    with Image.open(tmp_path / "out.webp") as webp, Image.open(tmp_path / "out.gif") as gif:
        webp.load()  # Pillow fills a WebP frame's duration only once it is decoded
        assert webp.info["duration"] == 125
        assert gif.info["duration"] == 120  # GIF stores centiseconds, so 125 ms rounds down
        assert webp.info.get("loop") == 0 and gif.info.get("loop") == 0


def test_png_folder_uses_zero_padded_frame_names(tmp_path: Path) -> None:
    write_video(moving_square(frames=3), tmp_path / "frames/")
    assert entries(tmp_path / "frames") == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]


def test_float_arrays_in_unit_range_are_scaled_to_uint8(tmp_path: Path) -> None:
    clip = moving_square(frames=2)
    write_video(clip.astype(np.float32) / 255.0, tmp_path / "frames")
    np.testing.assert_array_equal(as_array(read_video(tmp_path / "frames")), clip)


def test_pil_frames_in_other_modes_are_written_as_rgb(tmp_path: Path) -> None:
    frames = [Image.new("RGBA", (16, 8), (10, 20, 30, 0)), Image.new("L", (16, 8), 77)]
    write_video(frames, tmp_path / "frames")
    decoded = read_video(tmp_path / "frames")
    assert [image.mode for image in decoded] == ["RGB", "RGB"]
    assert decoded[0].getpixel((0, 0)) == (10, 20, 30)
    assert decoded[1].getpixel((0, 0)) == (77, 77, 77)


# --- invalid frames ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([], "no frames"),
        (np.zeros((0, 8, 8, 3), np.uint8), "no frames"),
        (np.zeros((2, 8, 8), np.uint8), "(N, H, W, 3)"),
        (np.full((2, 8, 8, 3), -1.0), "rescale them to [0, 1]"),
        (np.zeros((2, 8, 8, 3), np.int64), "dtype int64"),
        ([Image.new("RGB", (8, 8)), np.zeros((8, 8, 3))], "frame 1 is a ndarray"),
        ([Image.new("RGB", (64, 48)), Image.new("RGB", (64, 48)), Image.new("RGB", (32, 32))], "frame 2 is 32x32"),
    ],
)
def test_invalid_frames_raise_and_write_nothing(tmp_path: Path, frames: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        write_video(frames, tmp_path / "out.mp4")
    assert message in str(caught.value)
    assert entries(tmp_path) == []


@pytest.mark.parametrize("fps", [0, -3, float("nan")])
def test_non_positive_fps_is_rejected(tmp_path: Path, fps: float) -> None:
    with pytest.raises(ValueError, match="fps must be positive"):
        write_video(moving_square(frames=2), tmp_path / "out.gif", fps=fps)
    assert entries(tmp_path) == []


# --- output paths ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.mp4", "mp4"), ("A.MP4", "mp4"), ("x.Gif", "gif"), ("x.webp", "webp"), ("frames", "png"), ("v2.d/", "png")],
)
def test_output_kind_by_extension(name: str, kind: str) -> None:
    assert output_kind(name) == kind


def test_output_kind_treats_existing_folder_with_dot_as_png(tmp_path: Path) -> None:
    (tmp_path / "run.v2").mkdir()
    assert output_kind(tmp_path / "run.v2") == "png"


def test_unknown_extension_names_extension_path_and_fix() -> None:
    with pytest.raises(ValueError) as caught:
        output_kind("out.avi")
    assert str(caught.value) == (
        "unknown output extension `.avi` for `out.avi`; use .mp4, .gif, .webp or a folder name for PNG frames"
    )


def test_missing_parent_folder_is_reported(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.mp4"
    with pytest.raises(ValueError, match=r"folder `.*b` for output `.*out\.mp4` does not exist; create it first"):
        check_output_path(target)


def test_parent_that_is_a_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"notes\.txt` for output .* is a file, not a folder"):
        write_video(moving_square(frames=2), tmp_path / "notes.txt" / "out.mp4")


def test_unwritable_parent_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root can write anywhere, so simulate the permission answer instead of chmod-ing the folder.
    monkeypatch.setattr(video_io.os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match="is not writable"):
        check_output_path(tmp_path / "out.mp4")


@pytest.mark.parametrize("name", [".", "..", ""])
def test_output_must_name_a_file_or_folder(name: str) -> None:
    with pytest.raises(ValueError, match="does not name a file or folder"):
        check_output_path(name, overwrite=True)


def test_existing_file_where_png_folder_is_asked_is_rejected_even_with_overwrite(tmp_path: Path) -> None:
    (tmp_path / "frames").write_bytes(b"keep")
    with pytest.raises(ValueError, match="is a file but PNG frames need a folder"):
        write_video(moving_square(frames=2), tmp_path / "frames", overwrite=True)
    assert (tmp_path / "frames").read_bytes() == b"keep"


def test_existing_folder_where_mp4_is_asked_is_rejected_even_with_overwrite(tmp_path: Path) -> None:
    (tmp_path / "out.mp4").mkdir()
    with pytest.raises(ValueError, match=r"is a folder but \.mp4 output is a file"):
        write_video(moving_square(frames=2), tmp_path / "out.mp4", overwrite=True)
    assert (tmp_path / "out.mp4").is_dir()


# --- overwrite and atomicity -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_existing_output_is_refused_and_left_untouched(tmp_path: Path, kind: str) -> None:
    target = write_video(moving_square(frames=3), tmp_path / output_name(kind))
    before = {path: path.read_bytes() for path in [target, *tmp_path.rglob("*")] if path.is_file()}
    with pytest.raises(FileExistsError) as caught:
        write_video(moving_square(frames=5), target)
    assert str(caught.value) == f"output `{target}` already exists; pass --overwrite (overwrite=True) to replace it"
    assert {path: path.read_bytes() for path in [target, *tmp_path.rglob("*")] if path.is_file()} == before


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_overwrite_replaces_output_and_leaves_no_leftovers(tmp_path: Path, kind: str) -> None:
    target = write_video(moving_square(frames=8), tmp_path / output_name(kind))
    if kind == "png":
        (target / "stale.txt").write_text("from an older run")
    write_video(moving_square(frames=3), target, overwrite=True)
    assert len(read_video(target)) == 3
    assert entries(tmp_path) == [target.name]
    if kind == "png":
        assert entries(target) == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]


def test_file_is_encoded_into_hidden_sibling_then_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def recording_replace(source: str | os.PathLike, destination: str | os.PathLike) -> None:
        renames.append((Path(source), Path(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(video_io.os, "replace", recording_replace)
    write_video(moving_square(frames=2), tmp_path / "out.mp4")
    [(source, destination)] = renames
    assert destination == tmp_path / "out.mp4"
    assert source.parent == tmp_path
    assert source.name.startswith(".tmp-") and source.name.endswith(".out.mp4")


def fail_on_call(number: int, real: object) -> object:
    """Wrap `real` so its `number`-th call raises, simulating an encoder crash mid-way."""
    calls = []

    def wrapper(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == number:
            raise RuntimeError("encoder crashed")
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("overwrite", [False, True])
def test_mp4_failure_mid_write_leaves_no_partial_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    target = tmp_path / "out.mp4"
    if overwrite:
        target.write_bytes(b"previous video")
    monkeypatch.setattr(video_io, "_pad_to_even", fail_on_call(4, video_io._pad_to_even))
    with pytest.raises(RuntimeError, match="encoder crashed"):
        write_video(moving_square(), target, overwrite=overwrite)
    assert entries(tmp_path) == (["out.mp4"] if overwrite else [])
    if overwrite:
        assert target.read_bytes() == b"previous video"


@pytest.mark.parametrize("kind", ["mp4", "gif", "webp"])
def test_failure_after_encoding_removes_the_finished_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    seen_at_failure: list[list[str]] = []
    real_writer = video_io._FILE_WRITERS[kind]

    def write_then_fail(images: list[Image.Image], path: Path, fps: object) -> None:
        real_writer(images, path, fps)
        seen_at_failure.append(entries(tmp_path))
        raise RuntimeError("disk full")

    monkeypatch.setitem(video_io._FILE_WRITERS, kind, write_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_video(moving_square(), tmp_path / f"out.{kind}")
    [[temporary]] = seen_at_failure  # the temp file really existed, so its removal is what is tested here
    assert temporary.startswith(".tmp-") and temporary.endswith(f".out.{kind}")
    assert entries(tmp_path) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_png_failure_mid_write_leaves_no_partial_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    target = tmp_path / "frames"
    if overwrite:
        write_video(moving_square(frames=2), target)
    monkeypatch.setattr(Image.Image, "save", fail_on_call(3, Image.Image.save))
    with pytest.raises(RuntimeError, match="encoder crashed"):
        write_video(moving_square(), target, overwrite=overwrite)
    assert entries(tmp_path) == (["frames"] if overwrite else [])
    if overwrite:
        assert entries(target) == ["frame_0000.png", "frame_0001.png"]


# --- loading and reading -----------------------------------------------------------------------------------


def test_load_image_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "x.png"
    with pytest.raises(FileNotFoundError, match=f"keyframe `{missing}` not found"):
        load_image(missing)


@pytest.mark.parametrize("content", [b"this is not an image", None])
def test_load_image_unreadable_file(tmp_path: Path, content: bytes | None) -> None:
    bad = tmp_path / "bad.png"
    if content is None:  # a real PNG cut short: only a full decode notices
        Image.fromarray(moving_square(frames=1)[0]).save(bad)
        content = bad.read_bytes()[:-200]
    bad.write_bytes(content)
    with pytest.raises(ValueError) as caught:
        load_image(bad)
    message = str(caught.value)
    assert message.startswith(f"cannot read keyframe `{bad}` as an image (")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("mode", "color", "expected"),
    [("RGBA", (200, 100, 50, 0), (200, 100, 50)), ("L", 77, (77, 77, 77)), ("P", 0, (0, 0, 0))],
)
def test_load_image_converts_to_rgb(tmp_path: Path, mode: str, color: object, expected: tuple) -> None:
    Image.new(mode, (5, 3), color).save(tmp_path / "key.png")
    image = load_image(tmp_path / "key.png")
    assert image.mode == "RGB"
    assert image.size == (5, 3)
    assert image.getpixel((4, 2)) == expected


def test_load_image_applies_exif_rotation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (0, 128, 0)).save(tmp_path / "photo.jpg", exif=exif)
    assert load_image(tmp_path / "photo.jpg").size == (20, 40)


def test_read_video_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="video `.*nope.mp4` not found"):
        read_video(tmp_path / "nope.mp4")


@pytest.mark.parametrize("name", ["bad.mp4", "bad.gif", "bad.webp"])
def test_read_video_unreadable_file_names_it(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"garbage bytes")
    with pytest.raises(ValueError, match=f"cannot read video `.*{name}`") as caught:
        read_video(tmp_path / name)
    assert "\n" not in str(caught.value)


def test_read_video_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no .png or .jpg frames"):
        read_video(tmp_path)


def test_read_video_folder_sorts_frame_numbers_naturally(tmp_path: Path) -> None:
    for number in (10, 2, 1):
        Image.new("RGB", (4, 4), (number, 0, 0)).save(tmp_path / f"{number}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [image.getpixel((0, 0))[0] for image in read_video(tmp_path)] == [1, 2, 10]
