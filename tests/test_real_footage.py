"""The evaluation path on real camera footage: decode, find the shots, draw keyframe pairs inside them, load ground
truth, score baselines."""

import warnings
from itertools import pairwise

import numpy as np
import pytest
import torch
from real_footage import REAL_VIDEO_FRAMES, REAL_VIDEO_SHOTS, REAL_VIDEO_SIZE, real_video_path, shot_of

from inbetween.evaluation.metrics import psnr
from inbetween.evaluation.pairs import KeyframePair, PairSpec, blend, build_pairs, draw_pairs, load_pair
from inbetween.evaluation.shots import detect_cuts
from inbetween.video_io import count_frames, read_frames

# Full resolution; gap = num_frames - 1, so the ground truth is every source frame from first to last.
SPEC = PairSpec(num_frames=9, height=REAL_VIDEO_SIZE[1], width=REAL_VIDEO_SIZE[0])
CUTS = [shot.start for shot in REAL_VIDEO_SHOTS[1:]]
# A method that interpolates at all must be much closer to the real in-betweens than to the frames of an unrelated
# shot: 3 dB is half the squared error (per hand-picked pair; on the mean over the drawn pairs, some of which are
# hard: a close walker fills the frame).
WRONG_PAIR_MARGIN_DB = 3.0


def test_real_video_decodes():
    path = real_video_path()
    assert count_frames(path) == REAL_VIDEO_FRAMES
    frames = read_frames(path, 120, 3, step=4)
    assert [frame.size for frame in frames] == [REAL_VIDEO_SIZE] * 3
    assert not np.array_equal(np.asarray(frames[0]), np.asarray(frames[1]))  # real motion between them


def test_detector_finds_the_measured_cuts(tmp_path):
    path = real_video_path()
    assert detect_cuts(path) == CUTS == [30, 76, 137, 187, 242]
    # The same footage as a folder of JPEG frames (DAVIS's layout), frames 180-249: the last two cuts, shifted.
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(read_frames(path, 180, 70)):
        frame.save(folder / f"{index:05d}.jpg", quality=90)
    assert detect_cuts(folder) == [187 - 180, 242 - 180]


@pytest.mark.parametrize("gap", [4, 8, 12, 24, 48])
def test_every_drawn_pair_lies_inside_one_shot(gap):
    path = real_video_path()
    spec = PairSpec(num_frames=5, gap=gap, pairs_per_video=6, height=64, width=64)
    room = sum(len(shot) // (gap + 1) for shot in REAL_VIDEO_SHOTS)  # disjoint (gap + 1)-frame spans
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning while there is room for 6 pairs apart
        if room < 6:
            warnings.filterwarnings("ignore", "pairs overlap", UserWarning)
        pairs, videos = draw_pairs(path, spec)
    assert videos[0].shots == tuple((shot.start, shot.stop) for shot in REAL_VIDEO_SHOTS)
    assert len(pairs) == 6
    for pair in pairs:
        assert shot_of(pair.start, pair.start + gap) is not None, f"{pair.name} (gap {gap}) straddles a cut"
    starts = [pair.start for pair in pairs]
    if room >= 6:
        assert all(b - a > gap for a, b in pairwise(starts)), f"pairs {starts} (gap {gap}) share frames"


def test_pairs_from_real_video():
    path = real_video_path()
    spec = PairSpec(num_frames=SPEC.num_frames, pairs_per_video=4, height=SPEC.height, width=SPEC.width)
    pairs = build_pairs(path, spec)
    assert len(pairs) == 4 and all(pair.gap == 8 and pair.start + 8 < REAL_VIDEO_FRAMES for pair in pairs)
    frames = load_pair(pairs[0], spec)
    truth = frames["ground_truth"]
    assert truth.shape == (9, 3, SPEC.height, SPEC.width) and truth.dtype == torch.float32
    assert 0.0 <= truth.min() and truth.max() <= 1.0
    torch.testing.assert_close(truth[0], frames["first"], rtol=0, atol=0)
    torch.testing.assert_close(truth[-1], frames["last"], rtol=0, atol=0)
    pixels = read_frames(path, pairs[0].start + 4, 1)[0]  # gap == num_frames - 1: frame i is source frame start + i
    torch.testing.assert_close(truth[4], torch.from_numpy(np.array(pixels)).permute(2, 0, 1) / 255.0)


def wrong_pair(pair: KeyframePair) -> KeyframePair:
    """A pair with the same gap from the middle of the next shot: its in-betweens are unrelated to `pair`'s."""
    shots = [shot for shot in REAL_VIDEO_SHOTS if len(shot) > pair.gap]
    own = next(i for i, shot in enumerate(shots) if pair.start in shot)
    other = shots[(own + 1) % len(shots)]
    return KeyframePair(pair.source, other.start + (len(other) - pair.gap - 1) // 2, pair.gap, "wrong")


def baseline_scores(pair: KeyframePair, spec: PairSpec) -> dict[str, float]:
    """Mean PSNR (dB) of blend and flow over the scored in-betweens, against the pair's and a wrong pair's truth."""
    from inbetween.evaluation.flow import interpolate_flow

    frames, wrong = load_pair(pair, spec), load_pair(wrong_pair(pair), spec)
    blended = blend(frames["first"], frames["last"], spec.num_frames)
    keyframes = [frames[name].permute(1, 2, 0).numpy() for name in ("first", "last")]
    flowed = torch.from_numpy(interpolate_flow(*keyframes, spec.num_frames)).permute(0, 3, 1, 2) / 255.0
    assert psnr(flowed[[0, -1]], frames["ground_truth"][[0, -1]]).min() > 50.0  # keyframes kept (uint8 rounding)
    scores = {}
    for name, video in (("blend", blended), ("flow", flowed)):
        scores[name] = psnr(video[frames["scored"]], frames["ground_truth"][1:-1]).mean().item()
        scores[f"{name} vs wrong"] = psnr(video[wrong["scored"]], wrong["ground_truth"][1:-1]).mean().item()
    return scores


def _print(pair: KeyframePair, scores: dict[str, float]) -> None:
    print(f"{pair.name}: " + ", ".join(f"{name} {value:.2f} dB" for name, value in scores.items()))


@pytest.fixture(scope="module")
def drawn_scores():
    """Blend and flow on every pair the shots have room for (25 pairs of gap 8, apart), at half resolution."""
    pytest.importorskip("cv2", reason='OpenCV is missing: pip install "inbetween[test]"')
    spec = PairSpec(num_frames=9, pairs_per_video=25, height=136, width=320)
    pairs = build_pairs(real_video_path(), spec)
    assert len(pairs) == 25
    return {pair: baseline_scores(pair, spec) for pair in pairs}


@pytest.mark.slow
def test_flow_beats_blend_on_average_over_pairs_inside_shots(drawn_scores):
    for pair, scores in drawn_scores.items():
        _print(pair, scores)
    flow = np.mean([scores["flow"] for scores in drawn_scores.values()])
    blended = np.mean([scores["blend"] for scores in drawn_scores.values()])
    print(f"mean over {len(drawn_scores)} pairs: blend {blended:.2f} dB, flow {flow:.2f} dB")
    assert flow > blended


@pytest.mark.slow
def test_blend_and_flow_far_above_a_wrong_pair_baseline(drawn_scores):
    for name in ("blend", "flow"):
        for pair, scores in drawn_scores.items():  # every pair: closer to its own in-betweens than to another shot's
            assert scores[name] > scores[f"{name} vs wrong"], (pair.name, scores)
        own = np.mean([scores[name] for scores in drawn_scores.values()])
        wrong = np.mean([scores[f"{name} vs wrong"] for scores in drawn_scores.values()])
        assert own > wrong + WRONG_PAIR_MARGIN_DB, (name, own, wrong)


# Hand-picked pairs inside one shot, each a kind of motion:
#   215: slow camera pan over a parked bicycle; 120: a van drives across, a cyclist moves behind it;
#    45: a man walks past close to the camera, large occlusions.
@pytest.mark.parametrize("start", [215, 120, 45], ids=["camera-pan", "moving-van", "walker-occlusion"])
def test_flow_and_blend_against_real_in_betweens(start):
    pytest.importorskip("cv2", reason='OpenCV is missing: pip install "inbetween[test]"')
    pair = KeyframePair(str(real_video_path()), start, SPEC.frame_gap, f"bikes-{start}")
    assert shot_of(pair.start, pair.start + pair.gap) is not None, "pair straddles a scene cut"
    scores = baseline_scores(pair, SPEC)
    _print(pair, scores)
    assert scores["flow"] >= scores["blend"]
    for name in ("blend", "flow"):
        assert scores[name] > scores[f"{name} vs wrong"] + WRONG_PAIR_MARGIN_DB


@pytest.mark.slow
def test_gap_8_at_the_default_size_flow_beats_blend():
    """`inbetween evaluate --gap 8 --pairs-per-video 3` on bikes.mp4: its pairs, frames and scored frames.

    With gap 8 and 25 frames only output frames 3, 6, ..., 21 (times k/8) have ground truth, and those are exactly
    the in-betweens of a 9-frame interpolation (the same t = k/8 for blend and flow), so 9 frames are computed.
    """
    pytest.importorskip("cv2", reason='OpenCV is missing: pip install "inbetween[test]"')
    from inbetween.evaluation.flow import interpolate_flow

    spec = PairSpec(gap=8, pairs_per_video=3)  # the default size and frame count: 1024x576, 25 frames
    pairs = build_pairs(real_video_path(), spec)
    assert spec.scored == [3, 6, 9, 12, 15, 18, 21]
    small = load_pair(pairs[0], PairSpec(gap=8, height=136, width=320))  # the 25 = 9-frame claim, cheaply
    keyframes = [small[name].permute(1, 2, 0).numpy() for name in ("first", "last")]
    np.testing.assert_array_equal(interpolate_flow(*keyframes, 25)[spec.scored], interpolate_flow(*keyframes, 9)[1:-1])
    nine = PairSpec(num_frames=9, height=spec.height, width=spec.width)
    results = {pair: baseline_scores(pair, nine) for pair in pairs}
    for pair, scores in results.items():
        assert shot_of(pair.start, pair.start + pair.gap) is not None
        _print(pair, scores)
    assert np.mean([s["flow"] for s in results.values()]) > np.mean([s["blend"] for s in results.values()])
