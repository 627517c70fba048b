"""The exact-denoiser world (inbetween.toyworld.exact): the enumerated videos, the closed-form denoisers against a
brute-force reference, the ideal answers, the scores, and ``inbetween toyworld samplers``."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from reference import evaluations_per_video

from inbetween.cli import main
from inbetween.config import BACKWARD, FORWARD, SamplingConfig
from inbetween.cost import unet_rows_per_video
from inbetween.toyworld.exact import study
from inbetween.toyworld.exact.config import ExactWorldConfig, SamplerStudyConfig
from inbetween.toyworld.exact.denoisers import exact_branch_denoiser
from inbetween.toyworld.exact.world import BALL_COLOUR, ExactWorld, build_exact_world
from inbetween.toyworld.world import find_ball_centre

SMALL = ExactWorldConfig(
    size=10, num_frames=5, radius=1.5, max_speed_x=1.0, speeds_x=3, min_speed_y=-1.0, max_speed_y=1.0, speeds_y=2
)
SMALL_FLAGS = [
    "--world-size", "10", "--world-frames", "5", "--radius", "1.5", "--max-speed-x", "1.0", "--speeds-x", "3",
    "--min-speed-y", "-1.0", "--max-speed-y", "1.0", "--speeds-y", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def small() -> ExactWorld:
    return build_exact_world(SMALL)


def brute_force_mean(x: torch.Tensor, videos: torch.Tensor, log_prior: torch.Tensor, allowed: torch.Tensor, sigma):
    """The posterior mean written out: every video materialised, ``sum_i softmax_i(-|x - v_i|^2 / 2 sigma^2 +
    log prior_i) v_i`` over the allowed ones, float64. x ``(B, N, C, H, W)``, videos ``(K, N, C, H, W)``."""
    flat_x, flat_v = x.double().flatten(1), videos.double().flatten(1)
    squared = torch.cdist(flat_x, flat_v, compute_mode="donot_use_mm_for_euclid_dist") ** 2  # (B, K), differences
    logits = (-squared / (2 * sigma**2) + log_prior).masked_fill(~allowed, -math.inf)
    return (logits.softmax(-1) @ flat_v).view_as(x)


def frames_equal(videos: torch.Tensor, frame: int, keyframes: torch.Tensor) -> torch.Tensor:
    """Bool ``(B, K)``: frame ``frame`` of each video equals keyframe b, compared as images."""
    return (videos[None, :, frame] == keyframes[:, None]).flatten(2).all(-1)


@pytest.mark.parametrize("fine_tuned", [True, False])
def test_exact_denoisers_equal_brute_force_posterior_means(small: ExactWorld, fine_tuned: bool):
    videos = small.videos()
    generator = torch.Generator().manual_seed(0)
    sources = torch.randperm(small.num_videos, generator=generator)[:12]
    first, last = small.paths[sources, 0], small.paths[sources, -1]
    first_images, last_images = small.atlas[first], small.atlas[last]
    model = exact_branch_denoiser(small, first, last, fine_tuned=fine_tuned, guided=True)
    everything = torch.ones(len(sources), small.num_videos, dtype=torch.bool)
    for sigma in (300.0, 3.0, 0.4, 0.05, 0.002):
        x = videos[sources] + sigma * torch.randn(videos[sources].shape, generator=generator)
        got = model(x, torch.tensor(sigma), (FORWARD, BACKWARD))
        expected_forward = brute_force_mean(x, videos, small.log_prior, frames_equal(videos, 0, first_images), sigma)
        if fine_tuned:  # a model of reversed videos conditioned on their first frame, in forward time
            expected_backward = brute_force_mean(
                x, videos, small.log_prior, frames_equal(videos, -1, last_images), sigma
            )
            expected_backward_uncond = brute_force_mean(x, videos, small.log_prior, everything, sigma)
        else:  # flip(D_forward_model(flip(x), first frame = last keyframe))
            expected_backward = brute_force_mean(
                x.flip(1), videos, small.log_prior, frames_equal(videos, 0, last_images), sigma
            ).flip(1)
            expected_backward_uncond = brute_force_mean(x.flip(1), videos, small.log_prior, everything, sigma).flip(1)
        expected_uncond = brute_force_mean(x, videos, small.log_prior, everything, sigma)
        for estimate, expected in (
            (got.cond[FORWARD], expected_forward),
            (got.cond[BACKWARD], expected_backward),
            (got.uncond[FORWARD], expected_uncond),
            (got.uncond[BACKWARD], expected_backward_uncond),
        ):
            torch.testing.assert_close(estimate.double(), expected, atol=2e-6, rtol=0)


def test_conditioning_excludes_videos_that_miss_the_keyframe(small: ExactWorld):
    source = torch.tensor([7])
    first, last = small.paths[source, 0], small.paths[source, -1]
    starts_elsewhere = torch.nonzero(small.paths[:, 0] != first[0])[0]  # a video the forward model must not draw
    x = small.videos(starts_elsewhere)
    sigma = torch.tensor(0.002)  # each model returns its own nearest allowed video
    estimates = {
        fine_tuned: exact_branch_denoiser(small, first, last, fine_tuned=fine_tuned, guided=True)(
            x, sigma, (FORWARD, BACKWARD)
        )
        for fine_tuned in (True, False)
    }
    assert torch.equal(estimates[True].uncond[FORWARD], x)  # the unconditional model may draw it
    assert not torch.allclose(estimates[True].cond[FORWARD], x)
    for fine_tuned, got in estimates.items():
        assert torch.allclose(got.cond[FORWARD][:, 0], small.atlas[first], atol=1e-6), fine_tuned
        assert torch.allclose(got.cond[BACKWARD][:, -1], small.atlas[last], atol=1e-6), fine_tuned
    # At a huge sigma the estimate is the prior mean of the allowed videos alone.
    huge = exact_branch_denoiser(small, first, last, fine_tuned=True, guided=False)(
        torch.zeros_like(x), torch.tensor(1e6), (FORWARD,)
    )
    allowed = small.paths[:, 0] == first[0]
    prior = small.log_prior[allowed].exp()
    expected = (prior[:, None] * small.videos()[allowed].double().flatten(1)).sum(0) / prior.sum()
    torch.testing.assert_close(huge.cond[FORWARD].double().flatten(), expected, atol=1e-5, rtol=0)


def hand_made_world(small: ExactWorld) -> ExactWorld:
    """Five 3-frame videos through atlas entries far apart (a, b, c, d, e at the corners and the centre)."""
    a, b, c, d, e = 0, 63, 7, 56, 27  # (1.5, 1.5), (8.5, 8.5), (1.5, 8.5), (8.5, 1.5), (4.5, 4.5)
    paths = torch.tensor([[a, e, b], [a, c, b], [a, e, d], [d, e, b], [b, e, a]])
    return replace(
        small, config=replace(small.config, num_frames=3), paths=paths, log_prior=torch.zeros(len(paths)).double()
    )


def test_ideal_answers_and_scores_on_a_hand_made_world(small: ExactWorld):
    world = hand_made_world(small)
    a, b, d = 0, 63, 56
    consistent = world.consistent(torch.tensor([a, d, a, b]), torch.tensor([b, b, d, a]))
    assert consistent.tolist() == [
        [True, True, False, False, False],
        [False, False, False, True, False],
        [False, False, True, False, False],
        [False, False, False, False, True],
    ]
    videos = world.videos()
    pair = torch.tensor([0, 0, 0])  # keyframes a -> b: videos 0 and 1 are the ideal answers
    outputs = torch.stack([videos[1], videos[2], 0.5 * (videos[0] + videos[1])])
    scores = study.score_outputs(world, outputs, pair, study.frame_tolerance(world))
    assert scores["consistent"].tolist() == [True, False, False]
    assert scores["world_video"].tolist() == [True, True, False]  # video 2 is a video, but ends elsewhere
    assert scores["distance"][0] == 0 and scores["distance"][1] > 0
    assert scores["found"].tolist() == [1.0, 1.0, 0.0]  # the blend of two balls is no ball
    assert scores["path_error"][0] == 0
    assert scores["half_transparent"].tolist() == [0.0, 0.0, 1.0]
    assert scores["nearest_video"][:2].tolist() == [1, 2]


def reversed_share(world: ExactWorld) -> float:
    """The share of the world's videos that, played backwards, are videos of the world."""
    forward = {tuple(path) for path in world.paths.tolist()}
    return sum(tuple(path[::-1]) in forward for path in world.paths.tolist()) / world.num_videos


def test_default_world_is_ambiguous_per_keyframe_and_not_time_symmetric():
    world = build_exact_world()
    firsts = torch.unique(world.paths[:, 0], return_counts=True)[1]
    assert len(firsts) == len(world.atlas) and int(firsts.min()) >= 2  # every frame starts several videos
    assert int(world.log_prior.exp().sum()) == len(world.config.lattice) ** 2 * 5 * 4  # one count per launch
    # Played backwards, a lossy bounce gains energy: fewer reversed videos are videos of the world than with an
    # elastic bounce (the launch grid also breaks the symmetry: the final velocity is rarely a launch velocity).
    elastic = build_exact_world(replace(world.config, restitution=1.0))
    assert reversed_share(world) < reversed_share(elastic) < 0.5
    for frame, centre in zip(world.atlas_uint8, world.centres, strict=True):
        assert find_ball_centre(frame, BALL_COLOUR, world.config.radius) == pytest.approx(tuple(centre), abs=1e-9)


def test_one_branch_samplers_draw_videos_of_their_own_set(small: ExactWorld):
    """Exact denoisers under the one sampler entry point: the forward branch alone ends on a video that starts at
    the first keyframe, the backward branch alone on one that ends at the last."""
    videos = study.draw_pairs(small, 16, seed=3)
    tolerance = study.frame_tolerance(small)
    rows = study.study_rows()
    outputs = {}
    for name, frame in ((study.FORWARD_ONLY, 0), (study.BACKWARD_ONLY, -1)):
        run = study.run_row(small, replace(rows[name], num_inference_steps=20), videos, seed=1)
        keyframes = small.atlas[small.paths[videos, frame]]
        assert (run.outputs[:, frame] - keyframes).abs().max() < 1e-4, name
        scores = study.score_outputs(small, run.outputs, videos, tolerance)
        assert scores["world_video"].all(), name
        outputs[name] = run.outputs
    again = study.run_row(small, replace(rows[study.FORWARD_ONLY], num_inference_steps=20), videos, seed=1)
    assert torch.equal(again.outputs, outputs[study.FORWARD_ONLY])  # same seed, same videos


def test_euler_on_the_ideal_denoiser_draws_ideal_answers(small: ExactWorld):
    """The ceiling of the study is reachable: the posterior mean given both keyframes, sampled with the one entry
    point, ends on a video through both keyframes for every pair."""
    videos = study.draw_pairs(small, 16, seed=2)
    config = replace(study.IDEAL_SAMPLING, num_inference_steps=20)
    run = study.run_row(small, config, videos, seed=0, ideal=True)
    assert study.score_outputs(small, run.outputs, videos, study.frame_tolerance(small))["consistent"].all()


def test_paper_sampler_is_the_product_of_experts_on_the_exact_world(small: ExactWorld):
    """With the paper's guidance (1 -> 3, symmetrised to 2 at every frame) the average fusion is
    0.5 (2 D_f - D_fu) + 0.5 (2 D_b - D_bu) = D_f + D_b - (D_fu + D_bu) / 2, the product of experts at g = 1."""
    videos = study.draw_pairs(small, 8, seed=0)
    paper = SamplingConfig.preset("paper", num_inference_steps=6)
    poe = replace(paper, fusion="poe", min_guidance_scale=1.0, max_guidance_scale=1.0)
    plain_average = replace(paper, min_guidance_scale=1.0, max_guidance_scale=1.0)
    runs = {name: study.run_row(small, c, videos, seed=0).outputs for name, c in [("paper", paper), ("poe", poe)]}
    torch.testing.assert_close(runs["paper"], runs["poe"], atol=1e-4, rtol=0)
    assert not torch.allclose(study.run_row(small, plain_average, videos, seed=0).outputs, runs["paper"], atol=1e-2)


def test_every_row_runs_and_costs_what_inbetween_cost_says(small: ExactWorld):
    videos = study.draw_pairs(small, 3, seed=0)
    for name, config in study.study_rows().items():
        config = replace(config, num_inference_steps=min(config.num_inference_steps, 4))
        run = study.run_row(small, config, videos, seed=0)
        assert run.outputs.shape == (3, *small.videos([0]).shape[1:]) and torch.isfinite(run.outputs).all(), name
        assert run.evaluations == evaluations_per_video(config), name
        assert run.unet_rows == unet_rows_per_video(config), name


def test_wilson_interval():
    low, high = study.wilson_interval(0, 200)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(1.96**2 / (200 + 1.96**2), rel=1e-4)
    low, high = study.wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)


def test_pairs_are_distinct_seeded_videos(small: ExactWorld):
    drawn = study.draw_pairs(small, 50, seed=4)
    assert len(set(drawn.tolist())) == 50 and torch.equal(drawn, study.draw_pairs(small, 50, seed=4))
    assert not torch.equal(drawn, study.draw_pairs(small, 50, seed=5))
    with pytest.raises(ValueError, match="at most"):
        study.draw_pairs(small, small.num_videos + 1, seed=0)


def test_command_writes_its_table_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    paper = SamplingConfig.preset("paper", num_inference_steps=4)
    rows = {
        study.FORWARD_ONLY: paper.with_options(sampler=FORWARD),
        study.BACKWARD_ONLY: replace(paper, fusion=BACKWARD, noise_injection_steps=0),
        study.AVERAGE: replace(paper, min_guidance_scale=1.0, max_guidance_scale=1.0),
        study.REFERENCE: paper,
    }
    monkeypatch.setattr(study, "study_rows", lambda: rows)
    out = tmp_path / "samplers"
    argv = ["toyworld", "samplers", "--pairs", "6", *SMALL_FLAGS, "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = (out / study.SUMMARY).read_text()
    for name in [*rows, study.IDEAL]:
        assert f"| {name} |" in summary and f"| {name} |" in printed
    assert "6 keyframe pairs" in summary and "When the branches disagree" in summary
    assert Image.open(out / study.SHEET).size[0] > 0
    before = (out / study.SUMMARY).stat().st_mtime_ns
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / study.SUMMARY).stat().st_mtime_ns == before
    assert main([*argv, "--overwrite"]) == 0
    assert main(["toyworld", "samplers", "--pairs", "1", *SMALL_FLAGS]) == 2
    assert "`--pairs`" in capsys.readouterr().err
    assert main(["toyworld", "samplers", "--world-size", "4"]) == 2
    assert "`--world-size`" in capsys.readouterr().err


def test_study_config_checks():
    with pytest.raises(ValueError, match="`pairs`"):
        SamplerStudyConfig(pairs=1)
    with pytest.raises(ValueError, match="`num_frames`"):
        ExactWorldConfig(num_frames=2)
    assert np.array(SMALL.lattice).tolist() == list(range(1, 9))


def test_soft_keyframe_conditioning_weighs_every_video_by_its_frames_distance_to_the_keyframe(small: ExactWorld):
    softness = 12.0
    soft = replace(small, config=replace(small.config, keyframe_softness=softness))
    videos = small.videos()
    generator = torch.Generator().manual_seed(1)
    sources = torch.randperm(small.num_videos, generator=generator)[:6]
    first, last = small.paths[sources, 0], small.paths[sources, -1]
    model = exact_branch_denoiser(soft, first, last, fine_tuned=True, guided=False)

    def log_weight(keyframes: torch.Tensor, frame: int) -> torch.Tensor:  # (B, K), written out over the videos
        rmse = ((videos[None, :, frame] - small.atlas[keyframes][:, None]) * 127.5).pow(2).flatten(2).mean(-1).sqrt()
        weight = -(rmse.double() ** 2) / (2 * softness**2)
        return weight.masked_fill(weight < -20, -math.inf)  # left out below exp(-20) of the keyframe's own frame

    for sigma in (30.0, 0.5, 0.002):
        x = videos[sources] + sigma * torch.randn(videos[sources].shape, generator=generator)
        got = model(x, torch.tensor(sigma), (FORWARD, BACKWARD))
        for estimate, prior in (
            (got.cond[FORWARD], small.log_prior + log_weight(first, 0)),
            (got.cond[BACKWARD], small.log_prior + log_weight(last, -1)),
        ):
            everything = torch.isfinite(prior)
            expected = brute_force_mean(x, videos, prior.masked_fill(~everything, 0.0), everything, sigma)
            torch.testing.assert_close(estimate.double(), expected, atol=2e-5, rtol=0)
    # A neighbouring first frame is drawn too: at the first keyframe's own frame the estimate is no longer exact.
    far = exact_branch_denoiser(soft, first, last, fine_tuned=True, guided=False)(
        torch.zeros_like(videos[sources]), torch.tensor(1e6), (FORWARD,)
    )
    assert not torch.allclose(far.cond[FORWARD][:, 0], small.atlas[first], atol=1e-3)


def test_keyframe_softness_is_checked():
    with pytest.raises(ValueError, match="`keyframe_softness` must be 0 or more"):
        ExactWorldConfig(keyframe_softness=-1.0)
