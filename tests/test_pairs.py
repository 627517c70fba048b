"""Tests for inbetween.evaluation.pairs and .shots: pairs inside shots, drawn deterministically and apart,
manifests, ground truth only where a source frame exists, and the blend baseline."""

from __future__ import annotations

import json
import sys
import warnings
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from clips import HEIGHT, WIDTH, frame_number, square_clip
from PIL import Image

from inbetween.evaluation.pairs import (
    KeyframePair,
    PairSpec,
    _draw_starts,
    blend,
    build_pairs,
    draw_pairs,
    load_manifest,
    load_pair,
    read_manifest,
    save_manifest,
    scored_frames,
)
from inbetween.evaluation.shots import detect_cuts, shots
from inbetween.video_io import write_video

SPEC = PairSpec(num_frames=5, height=HEIGHT, width=WIDTH)


def cut_clip(frames: int, cut: int) -> np.ndarray:
    """`square_clip(frames)` whose background turns blue from frame `cut` on: a hard cut, the square moving on."""
    clip = square_clip(frames)
    background = (clip == 40).all(axis=-1)
    background[:cut] = False
    clip[background] = (40, 90, 200)
    return clip


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
    assert PairSpec(num_frames=14, gap=26).frame_gap == 26
    assert not PairSpec().allow_cuts
    for bad in ({"num_frames": 1}, {"gap": 0}, {"pairs_per_video": 0}, {"height": 570}, {"seed": -1}):
        with pytest.raises(ValueError, match=f"`{next(iter(bad))}`"):
            PairSpec(**bad)


def test_scored_frames_are_those_on_a_source_frame() -> None:
    assert scored_frames(24, 25) == list(range(1, 24))  # the paper's setting: every in-between frame
    assert scored_frames(48, 25) == list(range(1, 24))  # any multiple of num_frames - 1
    assert scored_frames(8, 25) == [3, 6, 9, 12, 15, 18, 21]  # source frames 1..7
    assert scored_frames(10, 25) == [12]  # only the middle, 5 source frames in
    assert scored_frames(4, 5) == [1, 2, 3] and scored_frames(6, 5) == [2] and scored_frames(2, 5) == [2]
    for gap, num_frames in ((4, 25), (8, 3), (5, 8)):
        for i in range(1, num_frames - 1):  # the rule itself: time i * gap / (N - 1) is a whole source frame
            assert (i in scored_frames(gap, num_frames)) == ((i * gap) % (num_frames - 1) == 0)


@pytest.mark.parametrize("gap, num_frames", [(7, 25), (25, 25), (3, 5), (30, 14)])
def test_a_setting_that_scores_nothing_is_refused(gap: int, num_frames: int) -> None:
    with pytest.raises(ValueError, match=rf"`gap` {gap} with `num_frames` {num_frames}: no in-between") as info:
        PairSpec(num_frames=num_frames, gap=gap)
    message = str(info.value)
    assert "\n" not in message and "use a gap sharing a factor" in message
    suggested = [int(g) for g in message.split("(nearest: ")[1].split(")")[0].split(" or ")]
    assert suggested and all(scored_frames(g, num_frames) for g in suggested)


def test_pairs_are_deterministic_distinct_and_in_range(videos: Path) -> None:
    spec = PairSpec(num_frames=5, pairs_per_video=3, height=HEIGHT, width=WIDTH, seed=7)
    pairs = build_pairs(videos, spec)
    assert pairs == build_pairs(videos, spec)
    assert set(starts(pairs)) == {"a.mp4", "b.mp4", "frames"}
    for name, found in starts(pairs).items():
        assert len(set(found)) == 3 and found == sorted(found)
        assert all(0 <= start <= (30 if name == "frames" else 40) - 5 for start in found)
        assert all(b - a >= 5 for a, b in pairwise(found)), f"{name}: pairs {found} share frames"
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
    message = r"skipping 1 videos without 20 frames in one shot: .*short\.mp4 \(19 frames, longest shot 19\)$"
    with pytest.warns(UserWarning, match=message) as record:
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
    assert loaded["indices"] == [0, 2, 4] and loaded["scored"] == [2]  # output frames 1, 3 fall between frames
    assert [frame_number(f) for f in loaded["ground_truth"]] == [start, start + 5, start + 10]


def test_manifest_round_trip_and_overwrite(videos: Path, tmp_path: Path) -> None:
    spec = PairSpec(num_frames=5, gap=10, pairs_per_video=2, height=HEIGHT, width=WIDTH, seed=11)
    pairs, videos_shots = draw_pairs(videos, spec)
    path = save_manifest(pairs, spec, tmp_path / "pairs.json", videos=videos_shots)
    stored = json.loads(path.read_text())
    assert stored["version"] == 2 and stored["pairs"][0]["source"] == "videos/a.mp4"  # relative to the manifest
    assert stored["videos"][0] == {"source": "videos/a.mp4", "frames": 40, "shots": [[0, 40]]}
    assert stored["shot_detection"]["library"] == "PySceneDetect" and stored["spec"]["allow_cuts"] is False
    assert load_manifest(path) == (pairs, spec)
    assert read_manifest(path) == (pairs, spec, videos_shots)
    with pytest.raises(FileExistsError, match="already exists"):
        save_manifest(pairs[:1], spec, path)
    assert load_manifest(path)[0] == pairs  # untouched by the refused write
    save_manifest(pairs[:1], spec, path, overwrite=True)
    assert load_manifest(path)[0] == pairs[:1]


def test_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_manifest(tmp_path / "missing.json")
    for text in ("{not json", '{"format": "other", "version": 2}', '{"format": "inbetween-keyframe-pairs"}'):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match="not a valid v2 keyframe-pair manifest") as info:
            load_manifest(tmp_path / "bad.json")
        assert "\n" not in str(info.value) and "draw new pairs" in str(info.value)
    old = {"format": "inbetween-keyframe-pairs", "version": 1, "spec": {}, "pairs": []}
    (tmp_path / "bad.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="version 1: drawn without shot-cut detection"):
        load_manifest(tmp_path / "bad.json")
    good = {"format": "inbetween-keyframe-pairs", "version": 2, "spec": {"num_frames": 1}, "videos": [], "pairs": []}
    (tmp_path / "bad.json").write_text(json.dumps(good))
    with pytest.raises(ValueError, match="num_frames"):
        load_manifest(tmp_path / "bad.json")
    # A pair across a recorded cut (a hand-edited or foreign manifest) is refused.
    straddling = {
        **good,
        "spec": {"num_frames": 5},
        "videos": [{"source": "a.mp4", "frames": 40, "shots": [[0, 20], [20, 40]]}],
        "pairs": [{"source": "a.mp4", "start": 17, "gap": 4, "name": "a-17"}],
    }
    (tmp_path / "bad.json").write_text(json.dumps(straddling))
    with pytest.raises(ValueError, match=r"pair 'a-17' \(frames 17-21\) is not inside one shot"):
        load_manifest(tmp_path / "bad.json")


@pytest.mark.parametrize("source", ["a.mp4", "frames"])
def test_load_pair_one_to_one(videos: Path, source: str) -> None:
    pair = KeyframePair(str(videos / source), start=13, gap=4, name="x")
    loaded = load_pair(pair, SPEC)
    truth = loaded["ground_truth"]
    assert truth.shape == (5, 3, HEIGHT, WIDTH) and truth.dtype == torch.float32
    assert 0.0 <= truth.min() and truth.max() <= 1.0 and truth.max() > 0.8
    assert [frame_number(frame) for frame in truth] == [13, 14, 15, 16, 17]
    assert loaded["indices"] == [0, 1, 2, 3, 4] and loaded["scored"] == [1, 2, 3]
    assert torch.equal(loaded["first"], truth[0]) and torch.equal(loaded["last"], truth[-1])


@pytest.mark.parametrize(
    "gap, indices, expected",
    [(8, [0, 1, 2, 3, 4], [13, 15, 17, 19, 21]), (10, [0, 2, 4], [13, 18, 23]), (2, [0, 2, 4], [13, 14, 15])],
)
def test_ground_truth_only_where_a_source_frame_is(videos: Path, gap: int, indices: list, expected: list) -> None:
    # gap 10 over 4 steps: output frames 1 and 3 lie at 2.5 and 7.5 source frames: no ground truth, not the
    # nearest frame (gap 2: frames 1, 3 at 0.5 and 1.5 would otherwise repeat frames 13 and 14).
    for source in ("a.mp4", "frames"):
        loaded = load_pair(KeyframePair(str(videos / source), start=13, gap=gap, name="x"), SPEC)
        assert loaded["indices"] == indices and loaded["scored"] == indices[1:-1]
        assert [frame_number(frame) for frame in loaded["ground_truth"]] == expected
        assert frame_number(loaded["first"]) == 13 and frame_number(loaded["last"]) == 13 + gap
    clip = load_pair(KeyframePair(str(videos / "a.mp4"), 13, gap, "x"), SPEC, clip_offsets=[0, 1, 1, gap])["clip"]
    assert [frame_number(frame) for frame in clip] == [13, 14, 14, 13 + gap]
    with pytest.raises(ValueError, match="`gap` 3 with `num_frames` 5"):
        load_pair(KeyframePair(str(videos / "a.mp4"), start=13, gap=3, name="x"), SPEC)


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


# shots ------------------------------------------------------------------------------------------------


def test_detector_finds_a_hard_cut_in_a_video_and_a_frame_folder(tmp_path: Path) -> None:
    write_video(cut_clip(40, 23), tmp_path / "cut.mp4")
    write_video(cut_clip(40, 23), tmp_path / "cut")  # frame folder
    write_video(square_clip(40), tmp_path / "calm.mp4")  # the square moves every frame: motion, not a cut
    assert detect_cuts(tmp_path / "cut.mp4") == [23]
    assert detect_cuts(tmp_path / "cut") == [23]
    assert detect_cuts(tmp_path / "calm.mp4") == []
    assert shots([23], 40) == [range(0, 23), range(23, 40)]
    assert shots([], 40) == [range(0, 40)] and shots([0, 40, 5, 5], 40) == [range(0, 5), range(5, 40)]


def test_pairs_never_straddle_a_cut(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    write_video(cut_clip(40, 17), root / "cut.mp4")
    write_video(cut_clip(40, 17), root / "cut-frames")
    for seed in range(6):
        spec = PairSpec(num_frames=5, pairs_per_video=6, height=HEIGHT, width=WIDTH, seed=seed)  # 5 frames each
        pairs, videos = draw_pairs(root, spec)
        assert [video.shots for video in videos] == [((0, 17), (17, 40))] * 2
        assert len(pairs) == 12
        for pair in pairs:  # inside [0, 17) or [17, 40): the cut is never between or at the keyframes
            assert pair.start + pair.gap < 17 or pair.start >= 17, pair
        for name, found in starts(pairs).items():  # room for 3 + 4 disjoint pairs: none shares a frame
            assert all(b - a >= 5 for a, b in pairwise(found)), f"{name}: {found}"


def test_video_without_a_long_enough_shot_is_skipped_unless_cuts_are_allowed(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    write_video(cut_clip(40, 20), root / "cut.mp4")  # two 20-frame shots
    write_video(square_clip(30), root / "calm.mp4")
    spec = PairSpec(num_frames=5, gap=24, height=HEIGHT, width=WIDTH)  # 25 frames a pair
    with pytest.warns(
        UserWarning,
        match=r"skipping 1 videos without 25 frames in one shot: .*cut\.mp4 \(40 frames, "
        r"longest shot 20\)$",
    ) as record:
        pairs = build_pairs(root, spec)
    assert len(record) == 1 and set(starts(pairs)) == {"calm.mp4"}
    with (
        pytest.raises(ValueError, match="no keyframe pairs .* in one shot; .* --allow-cuts"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        build_pairs(root / "cut.mp4", spec)
    # allow_cuts: the old behaviour, the whole video is one shot and the pair may straddle the cut.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no skip warning now
        loose, videos = draw_pairs(root / "cut.mp4", PairSpec(**{**spec.__dict__, "allow_cuts": True}))
    assert videos[0].shots == ((0, 40),) and len(loose) == 1 and loose[0].start < 20 < loose[0].start + 24


def test_missing_scenedetect_is_one_line_naming_the_extra(videos: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "scenedetect", None)  # import scenedetect now raises ImportError
    monkeypatch.setitem(sys.modules, "scenedetect.detectors", None)
    with pytest.raises(ImportError, match=r'pip install "inbetween\[eval\]"') as info:
        build_pairs(videos, SPEC)
    assert "\n" not in str(info.value)
    assert build_pairs(videos, PairSpec(**{**SPEC.__dict__, "allow_cuts": True}))  # no detection, no PySceneDetect


# drawing apart --------------------------------------------------------------------------------------


def test_spans_fill_the_room_exactly_when_there_is_just_enough() -> None:
    # 10 frames, two 5-frame spans: only [0, 5) + [5, 10) keeps them apart; a greedy draw would often block it.
    for seed in range(30):
        assert _draw_starts(np.random.default_rng(seed), [range(10)], 5, 2) == [0, 5]
    # Across shots: 3 + 1 + 2 spans of 4 frames fit in shots of 12, 5 and 9 frames; 6 are asked for.
    shot_list = [range(0, 12), range(12, 17), range(17, 26)]
    for seed in range(30):
        found = _draw_starts(np.random.default_rng(seed), shot_list, 4, 6)
        assert found == [0, 4, 8, 12, 17, 21] or (len(found) == 6 and _apart(found, 4, shot_list))


def _apart(starts_: list[int], length: int, shot_list: list[range]) -> bool:
    inside = all(any(s in shot and s + length - 1 in shot for shot in shot_list) for s in starts_)
    return inside and all(b - a >= length for a, b in pairwise(starts_))


def test_every_placement_apart_can_be_drawn() -> None:
    # Two 5-frame spans in 12 frames: starts (a, b) with b >= a + 5, b <= 7: six placements, all reachable.
    seen = {tuple(_draw_starts(np.random.default_rng(seed), [range(12)], 5, 2)) for seed in range(200)}
    assert seen == {(a, b) for a in range(8) for b in range(a + 5, 8)}


def test_random_shots_pairs_apart_inside_shots_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        cuts = sorted(rng.choice(np.arange(1, 80), rng.integers(0, 6), replace=False).tolist())
        shot_list = shots(cuts, 80)
        length, count = int(rng.integers(2, 20)), int(rng.integers(1, 8))
        room = sum(len(shot) // length for shot in shot_list)
        valid = sum(max(0, len(shot) - length + 1) for shot in shot_list)
        found = _draw_starts(np.random.default_rng(7), shot_list, length, count)
        assert found == _draw_starts(np.random.default_rng(7), shot_list, length, count)
        assert len(found) == min(count, valid) and len(set(found)) == len(found) and found == sorted(found)
        assert all(any(s in shot and s + length - 1 in shot for shot in shot_list) for s in found)
        if count <= room:
            assert _apart(found, length, shot_list), (shot_list, length, count, found)


def test_pairs_overlap_only_beyond_the_room_with_one_warning(videos: Path) -> None:
    spec = PairSpec(num_frames=5, gap=12, pairs_per_video=5, height=HEIGHT, width=WIDTH)  # 13 frames a pair
    with pytest.warns(UserWarning, match=r"pairs overlap in 3 videos.*a\.mp4 \(5 pairs, room for 3 apart\)") as record:
        pairs = build_pairs(videos, spec)
    assert len(record) == 1
    assert {name: len(found) for name, found in starts(pairs).items()} == {"a.mp4": 5, "b.mp4": 5, "frames": 5}
