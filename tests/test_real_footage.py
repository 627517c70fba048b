"""The evaluation path on real camera footage: decode, draw keyframe pairs, load ground truth, score baselines."""

import numpy as np
import pytest
import torch
from real_footage import REAL_VIDEO_FRAMES, REAL_VIDEO_SIZE, real_video_path, shot_of

from inbetween.metrics import psnr
from inbetween.pairs import KeyframePair, PairSpec, blend, build_pairs, load_pair
from inbetween.video_io import count_frames, read_frames

# Full resolution; gap = num_frames - 1, so the ground truth is every source frame from first to last.
SPEC = PairSpec(num_frames=9, height=REAL_VIDEO_SIZE[1], width=REAL_VIDEO_SIZE[0])


def test_real_video_decodes():
    path = real_video_path()
    assert count_frames(path) == REAL_VIDEO_FRAMES
    frames = read_frames(path, 120, 3, step=4)
    assert [frame.size for frame in frames] == [REAL_VIDEO_SIZE] * 3
    assert not np.array_equal(np.asarray(frames[0]), np.asarray(frames[1]))  # real motion between them


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


# Mean PSNR (dB) over the 7 in-between frames, measured with opencv-python-headless 5.0 and PyAV 18:
#   215: slow camera pan over a parked bicycle: blend 27.65, flow 42.06.
#   120: a van drives across, a cyclist moves behind it: blend 28.27, flow 35.13.
#    45: a man walks past close to the camera, large occlusions: blend 19.95, flow 20.68 (flow cannot do better).
@pytest.mark.parametrize(
    "start, blend_db, flow_margin_db",
    [(215, 27.65, 10.0), (120, 28.27, 4.0), (45, 19.95, -1.0)],
    ids=["camera-pan", "moving-van", "walker-occlusion"],
)
def test_flow_and_blend_against_real_in_betweens(start, blend_db, flow_margin_db):
    pytest.importorskip("cv2", reason='OpenCV is missing: pip install "inbetween[test]"')
    from inbetween.flow import interpolate_flow

    path = real_video_path()
    pair = KeyframePair(str(path), start, SPEC.frame_gap, f"bikes-{start}")
    assert shot_of(pair.start, pair.start + pair.gap) is not None, "pair straddles a scene cut"
    frames = load_pair(pair, SPEC)
    truth = frames["ground_truth"]

    blended = blend(frames["first"], frames["last"], SPEC.num_frames)
    keyframes = [frames[name].permute(1, 2, 0).numpy() for name in ("first", "last")]
    flowed = torch.from_numpy(interpolate_flow(*keyframes, SPEC.num_frames)).permute(0, 3, 1, 2) / 255.0

    blend_score = psnr(blended[1:-1], truth[1:-1]).mean().item()
    flow_score = psnr(flowed[1:-1], truth[1:-1]).mean().item()
    # The blend score pins the ground truth: a frame off by one would move it well beyond 0.5 dB.
    assert blend_score == pytest.approx(blend_db, abs=0.5)
    assert flow_score > blend_score + flow_margin_db
    assert psnr(flowed[[0, -1]], truth[[0, -1]]).min() > 50.0  # keyframes kept (up to uint8 rounding)
