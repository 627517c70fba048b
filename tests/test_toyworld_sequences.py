"""The tiny-world sequence measurement (inbetween.toyworld.sequences): its scores on known videos, its baselines."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from inbetween.sequence import sequence_length
from inbetween.toyworld.candidates import TINY_WORLD_SAMPLING
from inbetween.toyworld.recipe import model_world
from inbetween.toyworld.science import heldout_videos
from inbetween.toyworld.seeds import HELDOUT_SEEDS
from inbetween.toyworld.sequences import (
    CROSSFADE,
    GROUND_TRUTH,
    SEQUENCE_METHODS,
    SequenceResult,
    interpolate_world_sequence,
    long_world,
    run_sequences,
    score_sequence,
)

SEGMENT_FRAMES = model_world().num_frames  # the shipped model's: 8


@pytest.fixture(scope="module")
def videos():
    """Held-out world videos of 2 segments (one join, at frame N - 1)."""
    return heldout_videos(3, HELDOUT_SEEDS, long_world(model_world(), segments=2))


def test_long_world_videos_have_the_sequence_length(videos) -> None:
    assert all(len(v.frames) == sequence_length(3, SEGMENT_FRAMES) for v in videos)


def test_the_ground_truth_scores_as_the_finder_allows(videos) -> None:
    for video in videos:
        scores = score_sequence(SequenceResult(video.frames, 0.0), video, SEGMENT_FRAMES)
        assert scores["hit_rate"] == 1.0
        assert scores["centre_error"] < 0.65  # the finder's own error on true balls
        assert scores["join_jump"] < 1.0 and scores["copies_gap"] == 0.0


def test_a_frame_skipped_after_the_join_is_a_velocity_jump_of_one_frame_of_motion(videos) -> None:
    """Frames after the join moved one step ahead: the generated velocity out of the join is c[t+2] - c[t], the
    truth's c[t+1] - c[t], so the jump's error is the distance a ball travels in one frame there."""
    join = SEGMENT_FRAMES - 1
    for video in videos:
        skipped = np.concatenate([video.frames[: join + 1], video.frames[join + 2 :], video.frames[-1:]])
        scores = score_sequence(SequenceResult(skipped, 0.0), video, SEGMENT_FRAMES)
        travelled = np.linalg.norm(video.centres[join + 2] - video.centres[join + 1], axis=-1).mean()
        assert scores["join_jump"] == pytest.approx(travelled, abs=0.7)
        truth = score_sequence(SequenceResult(video.frames, 0.0), video, SEGMENT_FRAMES)
        assert scores["join_jerk"] > truth["join_jerk"]


@pytest.mark.parametrize("loop", [False, True], ids=["chain", "loop"])
def test_the_crossfade_sequence_has_one_frame_per_boundary(videos, loop: bool) -> None:
    keys = [0, SEGMENT_FRAMES - 1, 2 * (SEGMENT_FRAMES - 1)]
    result = interpolate_world_sequence(None, CROSSFADE, videos[0].frames[keys], SEGMENT_FRAMES, None, 0, loop)
    assert result.frames.shape == (sequence_length(3, SEGMENT_FRAMES, loop), 32, 32, 3)
    np.testing.assert_array_equal(result.frames[keys], videos[0].frames[keys])  # the keyframes, each once
    assert result.copies_gap == 0.0


@pytest.mark.slow
def test_the_measurement_writes_its_table_and_sheets(tmp_path) -> None:
    sampling = replace(TINY_WORLD_SAMPLING, num_inference_steps=1, noise_injection_steps=0)
    table = run_sequences(tmp_path, sequences=2, segments=2, sampling=sampling)
    for name in (GROUND_TRUTH, *SEQUENCE_METHODS):
        assert f"| {name} |" in table
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "loop.gif",
        "loop.png",
        "per_sequence.json",
        "sequence.png",
        "summary.md",
    ]
    with Image.open(tmp_path / "loop.gif") as gif:
        assert gif.n_frames == sequence_length(2, SEGMENT_FRAMES, loop=True) and gif.info.get("loop") == 0
