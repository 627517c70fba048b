"""Tests for inbetween.pairs: deterministic pair drawing, manifests, ground-truth loading and the blend baseline."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from clips import HEIGHT, WIDTH, frame_number, square_clip
from PIL import Image

from inbetween.pairs import KeyframePair, PairSpec, blend, build_pairs, load_manifest, load_pair, save_manifest
from inbetween.video_io import write_video

SPEC = PairSpec(num_frames=5, height=HEIGHT, width=WIDTH)


def make_davis(root: Path, name: str, frames: int) -> Path:
    folder = root / "JPEGImages" / "480p" / name
    folder.mkdir(parents=True)
    for index, frame in enumerate(square_clip(frames)):
        Image.fromarray(frame).save(folder / f"{index:05d}.jpg", quality=95)
    return folder


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    root.mkdir()
    write_video(square_clip(40), root / "a.mp4")
    write_video(square_clip(40), root / "b.mp4")
    write_video(square_clip(30), root / "frames")  # a folder of frame_0000.png, ...
    return root


def starts(pairs: list[KeyframePair]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for pair in pairs:
        found.setdefault(Path(pair.source).name, []).append(pair.start)
    return found


def test_spec_defaults_and_validation() -> None:
    assert PairSpec().frame_gap == 24
    assert PairSpec(num_frames=14).frame_gap == 13
    assert PairSpec(num_frames=14, gap=30).frame_gap == 30
    for bad in ({"num_frames": 1}, {"gap": 0}, {"pairs_per_video": 0}, {"height": 570}, {"seed": -1}):
        with pytest.raises(ValueError, match=f"`{next(iter(bad))}`"):
            PairSpec(**bad)


def test_pairs_are_deterministic_distinct_and_in_range(videos: Path) -> None:
    spec = PairSpec(num_frames=5, pairs_per_video=3, height=HEIGHT, width=WIDTH, seed=7)
    pairs = build_pairs(videos, spec)
    assert pairs == build_pairs(videos, spec)
    assert set(starts(pairs)) == {"a.mp4", "b.mp4", "frames"}
    for name, found in starts(pairs).items():
        assert len(set(found)) == 3 and found == sorted(found)
        assert all(0 <= start <= (30 if name == "frames" else 40) - 5 for start in found)
    assert all(pair.gap == 4 for pair in pairs)
    assert {pair.name for pair in pairs} == {f"{Path(p.source).stem}-{p.start}" for p in pairs}
    # Different paths seed different draws, so identical videos a and b do not get the same starts.
    assert starts(pairs)["a.mp4"] != starts(pairs)["b.mp4"]
    other = build_pairs(videos, PairSpec(num_frames=5, pairs_per_video=3, height=HEIGHT, width=WIDTH, seed=8))
    assert starts(other) != starts(pairs)


def test_adding_a_video_keeps_other_pairs(videos: Path) -> None:
    spec = PairSpec(num_frames=5, pairs_per_video=2, height=HEIGHT, width=WIDTH, seed=3)
    before = build_pairs(videos, spec)
    write_video(square_clip(40), videos / "0_new.mp4")  # sorts first, so order-dependent seeding would shift
    after = build_pairs(videos, spec)
    assert [pair for pair in after if not pair.source.endswith("0_new.mp4")] == before
    assert len(after) == len(before) + 2


def test_names_stay_unique_when_stems_clash(videos: Path) -> None:
    (videos / "more").mkdir()
    write_video(square_clip(40), videos / "more" / "a.mp4")
    names = [pair.name.rsplit("-", 1)[0] for pair in build_pairs(videos, SPEC)]
    assert names == ["a", "b", "frames", "more-a"]


def test_short_videos_skipped_with_one_warning(videos: Path) -> None:
    write_video(square_clip(19), videos / "short.mp4")
    write_video(square_clip(20), videos / "exact.mp4")
    spec = PairSpec(num_frames=20, height=HEIGHT, width=WIDTH)  # gap 19: needs 20 frames
    with pytest.warns(UserWarning, match=r"skipping 1 videos shorter than 20 frames: .*short\.mp4 \(19\)") as record:
        pairs = build_pairs(videos, spec)
    assert len(record) == 1
    assert starts(pairs)["exact.mp4"] == [0]  # exactly gap + 1 frames: one pair, from the first frame
    assert set(starts(pairs)) == {"a.mp4", "b.mp4", "exact.mp4", "frames"}
    with pytest.raises(ValueError, match="no keyframe pairs"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_pairs(videos, PairSpec(num_frames=50, height=HEIGHT, width=WIDTH))


def test_davis_layout(tmp_path: Path) -> None:
    make_davis(tmp_path, "bear", 12)
    make_davis(tmp_path, "camel", 12)
    pairs = build_pairs(tmp_path, PairSpec(num_frames=5, gap=10, height=HEIGHT, width=WIDTH))
    assert [Path(pair.source).name for pair in pairs] == ["bear", "camel"]
    assert all(pair.name.startswith(Path(pair.source).name + "-") and 0 <= pair.start <= 1 for pair in pairs)
    loaded = load_pair(pairs[0], PairSpec(num_frames=5, gap=10, height=HEIGHT, width=WIDTH))
    start = pairs[0].start
    assert [frame_number(f) for f in loaded["ground_truth"]] == [start + i for i in (0, 3, 5, 8, 10)]


def test_manifest_round_trip_and_overwrite(videos: Path, tmp_path: Path) -> None:
    spec = PairSpec(num_frames=5, gap=9, pairs_per_video=2, height=HEIGHT, width=WIDTH, seed=11)
    pairs = build_pairs(videos, spec)
    path = save_manifest(pairs, spec, tmp_path / "pairs.json")
    stored = json.loads(path.read_text())
    assert stored["version"] == 1 and stored["pairs"][0]["source"] == "videos/a.mp4"  # relative to the manifest
    assert load_manifest(path) == (pairs, spec)
    with pytest.raises(FileExistsError, match="already exists"):
        save_manifest(pairs[:1], spec, path)
    assert load_manifest(path)[0] == pairs  # untouched by the refused write
    save_manifest(pairs[:1], spec, path, overwrite=True)
    assert load_manifest(path)[0] == pairs[:1]


def test_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_manifest(tmp_path / "missing.json")
    for text in ("{not json", '{"format": "other", "version": 1}', '{"format": "inbetween-keyframe-pairs"}'):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match="not a v1 keyframe-pair manifest") as info:
            load_manifest(tmp_path / "bad.json")
        assert "\n" not in str(info.value)
    good = {"format": "inbetween-keyframe-pairs", "version": 1, "spec": {"num_frames": 1}, "pairs": []}
    (tmp_path / "bad.json").write_text(json.dumps(good))
    with pytest.raises(ValueError, match="num_frames"):
        load_manifest(tmp_path / "bad.json")


@pytest.mark.parametrize("source", ["a.mp4", "frames"])
def test_load_pair_one_to_one(videos: Path, source: str) -> None:
    pair = KeyframePair(str(videos / source), start=13, gap=4, name="x")
    loaded = load_pair(pair, SPEC)
    truth = loaded["ground_truth"]
    assert truth.shape == (5, 3, HEIGHT, WIDTH) and truth.dtype == torch.float32
    assert 0.0 <= truth.min() and truth.max() <= 1.0 and truth.max() > 0.8
    assert [frame_number(frame) for frame in truth] == [13, 14, 15, 16, 17]
    assert torch.equal(loaded["first"], truth[0]) and torch.equal(loaded["last"], truth[-1])


@pytest.mark.parametrize(
    "gap, expected", [(8, [13, 15, 17, 19, 21]), (10, [13, 16, 18, 21, 23]), (2, [13, 14, 14, 15, 15])]
)
def test_load_pair_resamples_other_gaps(videos: Path, gap: int, expected: list[int]) -> None:
    for source in ("a.mp4", "frames"):
        loaded = load_pair(KeyframePair(str(videos / source), start=13, gap=gap, name="x"), SPEC)
        assert [frame_number(frame) for frame in loaded["ground_truth"]] == expected
        assert frame_number(loaded["first"]) == 13 and frame_number(loaded["last"]) == 13 + gap


def test_load_pair_crops_like_the_model_input(videos: Path) -> None:
    pair = KeyframePair(str(videos / "frames"), start=0, gap=4, name="x")
    loaded = load_pair(pair, PairSpec(num_frames=5, height=32, width=32))
    assert loaded["ground_truth"].shape == (5, 3, 32, 32)
    # The 64x48 frame covers 32x32 at scale 2/3 then loses 5.3 px at each side: frame 0's square (x 0-7) is cut off.
    assert not (loaded["first"][0] - loaded["first"][1] > 0.5).any()


def test_blend() -> None:
    generator = torch.Generator().manual_seed(0)
    first, last = torch.rand(3, 8, 8, generator=generator), torch.rand(3, 8, 8, generator=generator)
    video = blend(first, last, 5)
    assert video.shape == (5, 3, 8, 8)
    assert torch.equal(video[0], first) and torch.equal(video[-1], last)
    torch.testing.assert_close(video[2], (first + last) / 2)
    torch.testing.assert_close(video[1], 0.75 * first + 0.25 * last)
    with pytest.raises(ValueError, match="`num_frames`"):
        blend(first, last, 1)
