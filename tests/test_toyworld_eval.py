"""The tiny-world science check: ball scores are right on known frames, the table and files are sound."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inbetween.cli import main
from inbetween.toyworld.candidates import TINY_WORLD_SAMPLING
from inbetween.toyworld.recipe import model_world
from inbetween.toyworld.science import (
    CROSSFADE,
    FORWARD_ONLY,
    OPTICAL_FLOW,
    ball_scores,
    heldout_videos,
    interpolate_videos,
    run_evaluation,
    score_pair,
    summary_table,
)
from inbetween.toyworld.seeds import HELDOUT_SEEDS
from inbetween.toyworld.world import find_ball_centre, generate_video


@pytest.fixture(scope="module")
def video():
    return heldout_videos(1)[0]


def test_heldout_videos_are_interesting_and_disjoint_from_training(video):
    videos = heldout_videos(5)
    assert [v.seed for v in videos] == sorted({v.seed for v in videos})
    assert all(v.seed >= HELDOUT_SEEDS for v in videos)
    assert videos[0].seed == video.seed  # deterministic
    assert videos[0].frames.shape == (8, 32, 32, 3)


def test_ground_truth_scores_as_perfect(video):
    balls = ball_scores(video.frames, video)
    assert balls.scored > 0 and balls.missed == 0 and balls.hits == balls.scored
    # The finder's own error on anti-aliased discs; a ball scored while partly hidden (>= 90 % visible) is off by
    # the centroid of its visible part, still under a pixel.
    assert np.median(balls.errors) < 0.2 and max(balls.errors) < 0.7
    scores = score_pair(video.frames, video)
    assert scores["hit_rate"] == 1 and scores["miss_rate"] == 0
    assert scores["psnr"] == 100 and scores["ssim"] == pytest.approx(1.0)


def test_ground_truth_is_found_in_every_heldout_pair():
    """Every ball visible enough to be scored is found, where it is, in 50 held-out pairs (the science check's)."""
    hits = scored = 0
    for video in heldout_videos(50):
        balls = ball_scores(video.frames, video)
        assert balls.missed == 0 and max(balls.errors) < 0.7, video.seed
        hits, scored = hits + balls.hits, scored + balls.scored
    assert hits == scored > 250


def test_frames_without_balls_are_all_misses(video):
    empty = np.repeat(video.frames[:1] * 0 + 128, len(video.frames), axis=0).astype(np.uint8)
    balls = ball_scores(empty, video)
    assert balls.errors == [] and balls.missed == balls.scored > 0 and balls.hits == 0
    scores = score_pair(empty, video)
    assert math.isnan(scores["centre_error"]) and scores["hit_rate"] == 0 and scores["miss_rate"] == 1


def _one_ball_video(far: bool = False, travel: tuple[float, float] | None = None):
    """A held-out video of one ball; with ``far``, its two keyframe discs do not overlap; with ``travel``
    ``(a, b)``, the ball moves between ``a`` px and ``b`` radii from keyframe to keyframe, and at most that far
    from the straight line in between."""
    config = model_world()
    for seed in range(HELDOUT_SEEDS, HELDOUT_SEEDS + 500):
        video = generate_video(seed, config)
        centres, radius = video.centres[:, 0], video.radii[0] if len(video.radii) == 1 else 0
        distance = np.hypot(*(centres[-1] - centres[0]))
        if len(video.radii) != 1 or (far and distance <= 2 * radius):
            continue
        if travel is not None:
            line = np.linspace(centres[0], centres[-1], len(centres))
            if not travel[0] <= distance <= travel[1] * radius or np.hypot(*(centres - line).T).max() > radius / 2:
                continue
        return video
    raise AssertionError("no such video")


@pytest.mark.parametrize("shift", [1, 2])
def test_a_shifted_ball_scores_its_shift(shift):
    video = _one_ball_video()
    shifted = np.roll(video.frames, shift, axis=2)  # to the right; the wrap-around is background-coloured
    balls = ball_scores(shifted, video)
    assert balls.scored > 0 and balls.missed == 0
    assert np.median(balls.errors) == pytest.approx(shift, abs=0.3)
    assert balls.hits == balls.scored  # within the radius (>= 3 px) of the true centre
    assert score_pair(shifted, video)["hit_rate"] == 1


def test_a_cross_fade_scores_no_ball_between_its_ghosts():
    """The cross-fade's middle frames hold two faded ghosts and no ball: every ball there is a miss, not a
    centre between the ghosts (the old finder found 78 % of them)."""
    video = _one_ball_video(far=True)
    fade = interpolate_videos(None, None, CROSSFADE, [video])[0]
    fade[[1, -2]] = 128  # leave only the middle 4 of the 6 in-between frames, where both ghosts are <= 5/7
    balls = ball_scores(fade, video)
    assert balls.scored >= 4 and balls.missed == balls.scored and balls.hits == 0
    assert score_pair(fade, video)["hit_rate"] == 0


def test_optical_flow_keeps_the_keyframes_and_carries_a_ball_that_moves_a_little():
    """The flow baseline warps the keyframes: they come back exactly, and a ball that moves less than its radius
    between them is found in place in the middle frame."""
    video = _one_ball_video(travel=(1.0, 1.0))
    frames = interpolate_videos(None, None, OPTICAL_FLOW, [video])[0]
    assert frames.shape == video.frames.shape and frames.dtype == np.uint8
    assert np.array_equal(frames[0], video.frames[0]) and np.array_equal(frames[-1], video.frames[-1])
    middle = len(frames) // 2
    found = find_ball_centre(frames[middle], video.colours[0], video.radii[0])
    assert found is not None and np.hypot(*(np.array(found) - video.centres[middle, 0])) <= video.radii[0]


def test_summary_table_has_one_row_per_method_with_intervals():
    results = {
        "a": [{"hit_rate": 1.0, "centre_error": 1.0, "miss_rate": 0.0, "psnr": 30.0, "ssim": 0.9}] * 3,
        "b": [
            {"hit_rate": h, "centre_error": x, "miss_rate": 0.5, "psnr": 20.0, "ssim": 0.5}
            for h, x in ((0.0, 1.0), (0.5, 2.0), (1.0, 3.0))
        ],
    }
    table = summary_table(results).splitlines()
    assert table[0].startswith("| method | hit rate ↑ | centre error (px) ↓ |")  # the headline first
    assert len(table) == 4
    assert table[2].startswith("| a | 1.000 ± 0.000 | 1.00 ± 0.00 | 0.000 ± 0.000 | 30.00 ± 0.00")
    assert table[3].startswith("| b | 0.500 ± 1.242 | 2.00 ± 2.48 |")  # t(0.975, 2) = 4.303, sd 1 (0.5), n 3


def test_run_evaluation_writes_the_table_and_per_pair_scores(tmp_path):
    first_seed = HELDOUT_SEEDS + 1000
    table = run_evaluation(
        tmp_path,
        pairs=2,
        sampling=replace(TINY_WORLD_SAMPLING, num_inference_steps=2),
        methods=(CROSSFADE, FORWARD_ONLY),
        first_seed=first_seed,
    )
    assert CROSSFADE.name in table and FORWARD_ONLY.name in table
    record = json.loads((tmp_path / "per_pair.json").read_text())
    assert len(record["results"][CROSSFADE.name]) == 2 and "hit_rate" in record["results"][CROSSFADE.name][0]
    assert record["seeds"] == [v.seed for v in heldout_videos(2, first_seed)] and record["seeds"][0] >= first_seed
    assert record["settings"]["first_seed"] == first_seed
    summary = (tmp_path / "summary.md").read_text()
    assert table in summary and f"seeds from {first_seed}" in summary
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_evaluation(
            tmp_path, pairs=2, sampling=replace(TINY_WORLD_SAMPLING, num_inference_steps=2), methods=(CROSSFADE,)
        )


def test_run_evaluation_resumes_with_the_rows_it_has(tmp_path, monkeypatch):
    from inbetween.toyworld import science

    sampling = replace(TINY_WORLD_SAMPLING, num_inference_steps=2)
    run_evaluation(tmp_path, pairs=2, sampling=sampling, methods=(CROSSFADE, FORWARD_ONLY))
    before = json.loads((tmp_path / "per_pair.json").read_text())["results"]
    evaluated = []
    evaluate = science.evaluate_methods
    monkeypatch.setattr(
        science, "evaluate_methods", lambda *a, **k: evaluated.extend(m.key for m in a[3]) or evaluate(*a, **k)
    )
    table = run_evaluation(tmp_path, pairs=2, sampling=sampling, methods=(OPTICAL_FLOW, CROSSFADE), resume=True)
    assert evaluated == ["flow"]  # the cross-fade and forward-only rows are kept, not re-run
    after = json.loads((tmp_path / "per_pair.json").read_text())
    assert after["results"][FORWARD_ONLY.name] == before[FORWARD_ONLY.name]
    assert set(after["results"]) == {CROSSFADE.name, FORWARD_ONLY.name, OPTICAL_FLOW.name}
    assert all(m.name in table for m in (CROSSFADE, FORWARD_ONLY, OPTICAL_FLOW))
    assert [m["key"] for m in after["methods"]] == ["crossfade", "forward-only", "flow"]
    with pytest.raises(ValueError, match=r"other settings \(num_inference_steps\)"):
        run_evaluation(tmp_path, pairs=2, sampling=replace(sampling, num_inference_steps=3), resume=True)
    with pytest.raises(ValueError, match=r"other settings \(pairs\)"):
        run_evaluation(tmp_path, pairs=3, sampling=sampling, methods=(CROSSFADE,), resume=True)


def test_run_evaluation_scores_only_heldout_seeds(capsys):
    with pytest.raises(ValueError, match="--first-seed"):
        run_evaluation(None, pairs=2, methods=(CROSSFADE,), first_seed=HELDOUT_SEEDS - 1)
    # The command passes --first-seed through (and fails before loading the model here).
    assert main(["toyworld", "evaluate", "--pairs", "2", "--first-seed", str(HELDOUT_SEEDS - 1)]) == 2
    assert f"--first-seed` must be a held-out seed, at least {HELDOUT_SEEDS}" in capsys.readouterr().err


def test_methods_are_chosen_by_key_and_keep_the_config_they_are_not_about():
    from inbetween.config import SamplingConfig
    from inbetween.toyworld.science import FULL, TIME_REVERSAL, world_methods

    assert [m.key for m in world_methods(["full", "crossfade"])] == ["full", "crossfade"]
    with pytest.raises(ValueError, match="unknown method `nope` for `--methods`"):
        world_methods(["nope"])
    vibid = SamplingConfig.preset("vibid")
    assert FULL.sampling(vibid) == vibid  # the full method is whatever the preset samples
    assert TIME_REVERSAL.sampling(SamplingConfig()).rotation is False


def test_the_evaluate_command_resumes_and_refuses_an_older_per_pair_json_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["toyworld", "evaluate", "--pairs", "2", "--steps", "2", "--out", str(out)]
    assert main([*args, "--methods", "crossfade"]) == 0
    first = json.loads((out / "per_pair.json").read_text())
    assert main([*args, "--methods", "crossfade,forward-only", "--resume"]) == 0
    after = json.loads((out / "per_pair.json").read_text())
    assert after["results"][CROSSFADE.name] == first["results"][CROSSFADE.name]
    assert set(after["results"]) == {CROSSFADE.name, FORWARD_ONLY.name}
    capsys.readouterr()
    assert main([*args, "--methods", "crossfade"]) == 2  # neither --resume nor --overwrite: nothing is replaced
    assert "--resume" in capsys.readouterr().err
    # A per_pair.json of an older version (a method field this one does not have) is one line, not a TypeError.
    after["methods"][0]["retired_option"] = 1
    (out / "per_pair.json").write_text(json.dumps(after))
    assert main([*args, "--methods", "crossfade", "--resume"]) == 2
    error = capsys.readouterr().err
    assert "is not a per_pair.json this version can go on from" in error and "--overwrite" in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1
    # Rows of a run from before a metric existed are shown with the rest (the new column blank for them).
    for rows in after["results"].values():
        for row in rows:
            row.pop("ends_psnr")
    assert "nan" in summary_table(after["results"]).splitlines()[2]


def test_hit_rate_table_joins_evaluate_folders_and_pairs_every_row_with_the_cross_fade(tmp_path):
    from inbetween.toyworld.science import hit_rate_table

    def folder(name: str, rows: dict[str, list[float]], seeds: list[int], fusion: str) -> str:
        settings = {"num_inference_steps": 10, "solver": "euler", "fusion": fusion, "exact_ends": fusion == "poe"}
        record = {
            "settings": settings,
            "seeds": seeds,
            "results": {k: [{"hit_rate": h} for h in v] for k, v in rows.items()},
        }
        (tmp_path / name).mkdir()
        (tmp_path / name / "per_pair.json").write_text(json.dumps(record))
        return str(tmp_path / name)

    base = folder(
        "base", {"linear cross-fade": [0.5, 0.0, 1.0], "forward-only I2V": [0.0, 0.0, 0.5]}, [7, 8, 9], "average"
    )
    full = folder("full", {"full method": [1.0, 0.5, math.nan]}, [7, 8, 9], "poe")
    table = hit_rate_table([base, full])
    assert "| full method | 10 steps, euler, poe, exact ends | 0.750 ± " in table
    assert "| +0.500 ± 0.000 |" in table  # paired on the two pairs both scored: +0.5 and +0.5
    assert "| linear cross-fade | 10 steps, euler, average | 0.500 ± 1.242 | – |" in table
    other = folder("other", {"full method": [1.0, 0.5, 0.0]}, [7, 8, 10], "poe")
    with pytest.raises(ValueError, match="other held-out pairs"):
        hit_rate_table([base, other])


def test_the_hitrates_command_prints_the_held_out_table(capsys):
    from inbetween.cli import main
    from inbetween.toyworld.science import hit_rate_table

    runs = [
        str(Path(__file__).parents[1] / "docs" / "tiny_world" / "heldout" / name) for name in ("baselines", "fast")
    ]
    assert main(["toyworld", "hitrates", *runs]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == hit_rate_table(runs).strip() and "full method" in printed
