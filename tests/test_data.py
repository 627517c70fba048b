"""Tests for inbetween.data: scanning, clip indexing, strided lazy decoding, crop, skips and DataLoader use."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from clips import HEIGHT, WIDTH, frame_number, square_clip
from PIL import Image

from inbetween import video_io
from inbetween.data import ClipDataset, ClipSpec, find_sources, fit_frame
from inbetween.video_io import count_frames, read_frames, read_video, write_video


def write_with_pyav(path: Path, frames: np.ndarray, container_format: str, codec: str, gop: int = 4) -> Path:
    """Write with a short keyframe interval, so reading a late clip really seeks instead of decoding from 0."""
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg build has no {codec} encoder")
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=7)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.gop_size = gop
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


SMALL = ClipSpec(num_frames=4, stride=3, height=HEIGHT, width=WIDTH)  # span 10


def quiet_dataset(*args: object, **kwargs: object) -> ClipDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a test dataset that warns unexpectedly should fail loudly
        return ClipDataset(*args, **kwargs)


# --- ClipSpec ----------------------------------------------------------------------------------------------


def test_clip_spec_defaults_follow_the_paper() -> None:
    spec = ClipSpec()
    assert (spec.num_frames, spec.stride, spec.height, spec.width) == (14, 2, 576, 1024)
    assert spec.span == 27


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"num_frames": 1}, "num_frames"), ({"stride": 0}, "stride"), ({"height": 570}, "height"),
     ({"width": 0}, "width"), ({"height": -8}, "height")],
)  # fmt: skip
def test_clip_spec_rejects_bad_values_naming_the_field(kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`") as info:
        ClipSpec(**kwargs)
    assert "\n" not in str(info.value)


def test_multiple_of_8_error_suggests_a_fix() -> None:
    with pytest.raises(ValueError, match="got 570; try 568"):
        ClipSpec(height=570)


# --- indexing ----------------------------------------------------------------------------------------------


def test_clip_count_and_starts_follow_length_and_stride(tmp_path: Path) -> None:
    clip = square_clip(25)
    for frames in (10, 19, 20, 25):  # span 10 -> 1, 1, 2, 2 clips
        write_video(clip[:frames], tmp_path / f"v{frames:02d}.mp4")
    dataset = quiet_dataset(tmp_path, SMALL)
    assert [(path.name, start) for path, start in dataset.clips] == [
        ("v10.mp4", 0), ("v19.mp4", 0), ("v20.mp4", 0), ("v20.mp4", 10), ("v25.mp4", 0), ("v25.mp4", 10)
    ]  # fmt: skip
    assert len(dataset) == 6
    assert dataset.describe() == "6 clips from 4 videos (0 skipped)"

    capped = quiet_dataset(tmp_path, SMALL, clips_per_video=1)
    assert [start for _, start in capped.clips] == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="`clips_per_video`"):
        ClipDataset(tmp_path, SMALL, clips_per_video=0)


def test_scan_is_recursive_case_insensitive_and_ignores_hidden_files(tmp_path: Path) -> None:
    clip = square_clip(10)
    (tmp_path / "a" / "deeper").mkdir(parents=True)
    for name in ("a/deeper/x.MP4", "a/y.Mov", "b.WEBM", "c.mkv"):
        write_video(clip, tmp_path / "tmp.mp4")
        (tmp_path / "tmp.mp4").rename(tmp_path / name)
    write_video(clip, tmp_path / "a" / "frames")
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "._b.mp4").write_bytes(b"macOS metadata")
    (tmp_path / ".hidden").mkdir()
    write_video(clip, tmp_path / ".hidden" / "z.mp4")
    found = [path.relative_to(tmp_path).as_posix() for path in find_sources(tmp_path)]
    assert found == ["a/deeper/x.MP4", "a/frames", "a/y.Mov", "b.WEBM", "c.mkv"]
    # Overlapping roots and a single file as root list each source once.
    assert len(find_sources([tmp_path, tmp_path / "a", tmp_path / "a" / ".." / "c.mkv"])) == 5
    assert find_sources(tmp_path / "c.mkv") == [tmp_path / "c.mkv"]


# --- samples -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "png"])
def test_samples_take_every_stride_frame_in_order(tmp_path: Path, kind: str) -> None:
    write_video(square_clip(40), tmp_path / ("v.mp4" if kind == "mp4" else "frames"))
    dataset = quiet_dataset(tmp_path, SMALL)
    assert len(dataset) == 4
    for index in range(len(dataset)):
        sample = dataset[index]
        clip = sample["clip"]
        assert clip.shape == (4, 3, HEIGHT, WIDTH) and clip.dtype == torch.float32
        assert -1.0 <= clip.min() and clip.max() <= 1.0
        assert [frame_number(frame, low=-1.0) for frame in clip] == [10 * index + 3 * k for k in range(4)]
        assert set(sample) == {"clip", "first_frame", "last_frame", "index"}  # no reversed copy of the pixels
        assert torch.equal(sample["first_frame"], clip[0]) and torch.equal(sample["last_frame"], clip[-1])
        assert sample["index"].shape == () and sample["index"].dtype == torch.long and sample["index"] == index


@pytest.mark.parametrize(
    ("name", "container_format", "codec"),
    [("gop.mp4", "mp4", "libx264"), ("gop.mkv", "matroska", "libx264"), ("gop.webm", "webm", "libvpx"),
     ("gop.mov", "mov", "mpeg4")],
)  # fmt: skip
def test_read_frames_seeks_to_the_same_frames_as_a_full_decode(
    tmp_path: Path, name: str, container_format: str, codec: str
) -> None:
    path = write_with_pyav(tmp_path / name, square_clip(30), container_format, codec)
    assert count_frames(path) == 30  # mkv/webm store no count: this exercises packet counting
    everything = [np.asarray(image) for image in read_video(path)]
    for start, count, step in [(0, 3, 1), (13, 4, 3), (17, 5, 2), (29, 1, 1)]:
        images = read_frames(path, start, count, step)
        expected = everything[start : start + count * step : step]
        assert len(images) == count
        assert all(np.array_equal(np.asarray(got), want) for got, want in zip(images, expected, strict=True))
    with pytest.raises(ValueError, match="ends before frame 30"):
        read_frames(path, 27, 2, 3)


class CountingContainer:
    """Wraps a PyAV input container and counts the frames it decodes."""

    def __init__(self, inner: av.container.InputContainer, decoded: list[int]) -> None:
        self.inner, self.decoded = inner, decoded

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def __enter__(self) -> CountingContainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.inner.close()

    def decode(self, *args: object, **kwargs: object) -> Iterator[av.VideoFrame]:
        for frame in self.inner.decode(*args, **kwargs):
            self.decoded.append(frame.pts)
            yield frame


def test_read_frames_decodes_from_the_keyframe_before_the_clip_not_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_with_pyav(tmp_path / "gop.mkv", square_clip(40), "matroska", "libx264", gop=4)
    decoded: list[int] = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: CountingContainer(real_open(*args, **kwargs), decoded))
    images = read_frames(path, 33, 2, 3)  # frames 33 and 36; the keyframe before 33 is 32
    assert len(images) == 2
    assert len(decoded) == 5  # frames 32..36, not the 33 frames before the clip


def test_read_frames_recovers_when_a_seek_lands_past_the_first_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_with_pyav(tmp_path / "gop.mkv", square_clip(30), "matroska", "libx264", gop=4)
    expected = [np.asarray(image) for image in read_video(path)][9:19:3]
    timestamp_of = video_io._timestamp_of
    # Imprecise container indexes can land after the target; simulate one that lands two keyframes late.
    monkeypatch.setattr(video_io, "_timestamp_of", lambda stream, index: timestamp_of(stream, index + 8))
    images = read_frames(path, 9, 4, 3)
    assert all(np.array_equal(np.asarray(got), want) for got, want in zip(images, expected, strict=True))


@pytest.mark.parametrize(("source", "target"), [((64, 32), (32, 32)), ((32, 64), (32, 32)), ((128, 64), (24, 16))])
def test_frames_are_resized_to_cover_and_center_cropped(source: tuple[int, int], target: tuple[int, int]) -> None:
    width, height = source
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, :, 2] = 255  # blue outside the centered region of the target's aspect, which the crop must cut
    scale = min(width / target[0], height / target[1])
    kept_width, kept_height = round(target[0] * scale), round(target[1] * scale)
    y0, x0 = (height - kept_height) // 2, (width - kept_width) // 2
    pixels[y0 : y0 + kept_height, x0 : x0 + kept_width] = 128
    short = min(width, height)
    marker = short // 4
    cy, cx = height // 2, width // 2
    pixels[cy - marker // 2 : cy + marker // 2, cx - marker // 2 : cx + marker // 2] = (255, 0, 0)
    frame = fit_frame(Image.fromarray(pixels), height=target[1], width=target[0])
    assert frame.shape == (3, target[1], target[0]) and frame.dtype == torch.float32
    blue = (frame[2] - frame[0]) > 1.0
    assert blue.sum() == 0  # the sides (or top and bottom) were cut
    ys, xs = torch.nonzero((frame[0] - frame[2]) > 1.0, as_tuple=True)
    marker_height, marker_width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert abs(marker_height - marker_width) <= 1  # still square: aspect kept, not stretched
    assert abs((ys.float().mean() + 0.5) - target[1] / 2) <= 1 and abs((xs.float().mean() + 0.5) - target[0] / 2) <= 1


def test_fit_frame_maps_black_and_white_to_minus_one_and_one() -> None:
    black = fit_frame(Image.new("RGB", (16, 8), (0, 0, 0)), height=8, width=8)
    white = fit_frame(Image.new("L", (16, 8), 255), height=8, width=8)
    assert torch.all(black == -1.0) and torch.all(white == 1.0) and white.shape == (3, 8, 8)


# --- skips and errors --------------------------------------------------------------------------------------


def test_short_videos_are_skipped_with_one_warning_naming_them(tmp_path: Path) -> None:
    clip = square_clip(10)
    write_video(clip, tmp_path / "long.mp4")
    write_video(clip[:9], tmp_path / "short.mp4")
    write_video(clip[:3], tmp_path / "short_frames")
    with pytest.warns(UserWarning) as record:
        dataset = ClipDataset(tmp_path, SMALL)
    assert len(record) == 1
    message = str(record[0].message)
    assert "2 videos shorter than 10 frames (4 frames x stride 3)" in message
    assert "short.mp4 (9)" in message and "short_frames (3)" in message and "long.mp4" not in message
    assert dataset.describe() == "1 clips from 1 videos (2 skipped)"


def test_unreadable_files_are_reported_by_name_and_skipped(tmp_path: Path) -> None:
    write_video(square_clip(10), tmp_path / "good.mp4")
    (tmp_path / "bad.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (tmp_path / "notes.mov").write_text("this is not a video")
    with pytest.warns(UserWarning) as record:
        dataset = ClipDataset(tmp_path, SMALL)
    assert len(record) == 1
    message = str(record[0].message)
    assert "2 unreadable" in message and "bad.mp4" in message and "notes.mov" in message
    assert [path.name for path, _ in dataset.clips] == ["good.mp4"]
    assert dataset[0]["clip"].shape == (4, 3, HEIGHT, WIDTH)


def test_no_usable_clips_is_a_value_error_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no training clips in `.*empty`: found 0 videos \(mp4, mov, webm, mkv\)"):
        (tmp_path / "empty").mkdir()
        ClipDataset(tmp_path / "empty")
    write_video(square_clip(9), tmp_path / "only_short.mp4")
    with pytest.warns(UserWarning, match="only_short.mp4"), pytest.raises(ValueError, match="1 too short"):
        ClipDataset(tmp_path, SMALL)
    with pytest.raises(FileNotFoundError, match="`.*missing`"):
        ClipDataset(tmp_path / "missing")


def test_a_clip_that_fails_to_decode_warns_and_returns_the_next(tmp_path: Path) -> None:
    clip = square_clip(10)
    write_video(clip, tmp_path / "a.mp4")
    write_video(clip, tmp_path / "b.mp4")
    dataset = quiet_dataset(tmp_path, SMALL)
    (tmp_path / "a.mp4").write_bytes(b"truncated by a crashed copy")
    with pytest.warns(UserWarning, match="skipping clip 0: cannot read video `.*a.mp4`"):
        sample = dataset[0]
    assert sample["index"] == 1 and frame_number(sample["clip"][-1], low=-1.0) == 9
    (tmp_path / "b.mp4").unlink()
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="2 clips in a row failed to decode"):
        dataset[0]
    with pytest.raises(IndexError):
        dataset[2]


# --- DataLoader --------------------------------------------------------------------------------------------


def test_dataloader_workers_yield_the_same_samples_as_the_main_process(tmp_path: Path) -> None:
    write_video(square_clip(20), tmp_path / "a.mp4")
    write_video(square_clip(10), tmp_path / "frames")
    dataset = quiet_dataset(tmp_path, ClipSpec(num_frames=2, stride=2, height=24, width=32))
    assert len(dataset) == 6 + 3
    # No open handles or other unpicklable state: what a spawn-started worker receives.
    assert torch.equal(pickle.loads(pickle.dumps(dataset))[4]["clip"], dataset[4]["clip"])

    def load(workers: int) -> list[dict[str, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers)
        return list(loader)

    serial, parallel = load(0), load(2)
    assert len(serial) == len(parallel) == 5
    for one, two in zip(serial, parallel, strict=True):
        assert one.keys() == two.keys() and all(torch.equal(one[key], two[key]) for key in one)
    assert torch.cat([batch["index"] for batch in parallel]).tolist() == list(range(9))
