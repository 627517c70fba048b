import json

import numpy as np
import pytest

from inbetween.data import ClipDataset, ClipSpec
from inbetween.toyworld.world import (
    WorldConfig,
    _render,
    find_ball_centre,
    generate_video,
    interpolation_pairs,
    is_interesting,
    visible_fraction,
    write_dataset,
)

SEEDS = range(12)


def _free_flight(bounces: np.ndarray, axis: int) -> np.ndarray:
    """(N - 2, B) mask of frames i + 1 with no hit on `axis` in the intervals (i, i + 1) and (i + 1, i + 2)."""
    hit = bounces[..., axis]
    return ~hit[:-1] & ~hit[1:]


def _vertical_energy(video, config: WorldConfig) -> np.ndarray:
    """(N, B) vertical kinetic + potential energy per unit mass; constant in free flight."""
    floor = config.size - video.radii
    return 0.5 * video.velocities[..., 1] ** 2 + config.gravity * (floor - video.centres[..., 1])


def test_same_seed_same_video_and_different_seed_differs():
    first, again, other = generate_video(7), generate_video(7), generate_video(8)
    for name in ("frames", "centres", "velocities", "bounces", "colours", "radii"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert first.frames.shape == (14, 32, 32, 3) and first.frames.dtype == np.uint8
    assert first.centres.shape == (14, len(first.radii), 2)
    assert not np.array_equal(first.frames, other.frames)


def test_vertical_motion_is_a_parabola_and_horizontal_speed_constant_between_hits():
    config = WorldConfig()
    checked_y = checked_x = 0
    for seed in SEEDS:
        video = generate_video(seed, config)
        y, x = video.centres[..., 1], video.centres[..., 0]
        second_y = y[2:] - 2 * y[1:-1] + y[:-2]  # (N - 2, B)
        free_y = _free_flight(video.bounces, 1)
        np.testing.assert_allclose(second_y[free_y], config.gravity, atol=1e-9)
        second_x = x[2:] - 2 * x[1:-1] + x[:-2]
        free_x = _free_flight(video.bounces, 0)
        np.testing.assert_allclose(second_x[free_x], 0.0, atol=1e-9)
        checked_y, checked_x = checked_y + free_y.sum(), checked_x + free_x.sum()
    # The bounce flags must leave most frames in free flight, or the checks above test nothing.
    assert checked_y > 100 and checked_x > 100


def test_balls_stay_inside_the_frame():
    config = WorldConfig(max_speed=6.0, gravity=1.0)  # fast balls hit walls often
    for seed in SEEDS:
        video = generate_video(seed, config)
        radii = video.radii[None, :, None]
        assert (video.centres >= radii - 1e-9).all() and (video.centres <= config.size - radii + 1e-9).all()
        assert video.bounces.any()


@pytest.mark.parametrize("restitution", [0.8, 1.0])
def test_floor_bounce_rebounds_with_restitution(restitution):
    config = WorldConfig(restitution=restitution)
    ratios = []
    for seed in SEEDS:
        video = generate_video(seed, config)
        energy = _vertical_energy(video, config)
        for ball in range(len(video.radii)):
            hits = np.nonzero(video.bounces[:, ball, 1])[0]
            # First floor hit, with a real fall before it (not a ball resting on the floor).
            if len(hits) and video.centres[hits[0], ball, 1] > config.size / 2 and energy[hits[0], ball] > 1.0:
                ratios.append(energy[hits[0] + 1, ball] / energy[hits[0], ball])
    assert len(ratios) >= 5
    # Rebound energy (the speed at contact squared) scales by restitution**2: 0.64 for 0.8; elastic keeps it.
    np.testing.assert_allclose(ratios, restitution**2, rtol=1e-6)


def test_find_ball_centre_recovers_ground_truth_when_balls_are_apart():
    errors = []
    for seed in range(30):  # three balls often overlap at 32 px, so look at more videos
        video = generate_video(seed)
        centres, radii = video.centres, video.radii
        for frame in range(len(video.frames)):
            gaps = np.linalg.norm(centres[frame, :, None] - centres[frame, None], axis=-1) - radii[:, None] - radii
            np.fill_diagonal(gaps, np.inf)
            if gaps.min() < 2:  # overlapping balls hide each other
                continue
            for ball, (colour, radius) in enumerate(zip(video.colours, radii, strict=True)):
                found = find_ball_centre(video.frames[frame], colour, radius)
                assert found is not None
                errors.append(np.hypot(*(np.array(found) - centres[frame, ball])))
    assert len(errors) > 100
    assert max(errors) < 0.5


def _draw(centres, radii, colours, size: int = 32, grey: float = 128.0) -> np.ndarray:
    """uint8 (H, W, 3): discs over a flat grey background, anti-aliased as the world draws them."""
    background = np.full((size, size, 3), grey)
    return _render(background, np.asarray(centres, float), np.asarray(radii, float), np.asarray(colours, np.uint8))


def test_find_ball_centre_misses():
    video = generate_video(0, WorldConfig(min_balls=1, max_balls=1))
    frame, radius = video.frames[0], video.radii[0]
    # A colour nowhere in the frame (the complement of a saturated ball is saturated, unlike the background).
    absent = np.array([255, 255, 255]) - video.colours[0]
    assert find_ball_centre(frame, absent, radius) is None
    red = [(255, 0, 0)]
    # Two whole balls of one colour far apart: which is the ball is a guess, a miss.
    twice = _draw([(8.0, 8.0), (24.0, 24.0)], [4.0, 4.0], red * 2)
    assert find_ball_centre(twice, red[0], 4.0) is None
    # One ball and a few stray pixels of its colour: the ball; a blob too small for the radius: a miss.
    one = _draw([(8.3, 9.6)], [4.0], red)
    one[25:27, 25:27] = red[0]
    assert find_ball_centre(one, red[0], 4.0) == pytest.approx((8.3, 9.6), abs=0.3)
    assert find_ball_centre(_draw([(8.3, 9.6)], [2.0], red), red[0], 4.0) is None


def test_a_cross_fade_ghost_is_never_a_ball():
    """The middle frames of a cross-fade between two non-overlapping positions hold two ghosts and no ball,
    whatever the colours: a ghost is at most 5/7 ball there, always farther than the tolerance from its colour."""
    config = WorldConfig(num_frames=8, min_balls=1, max_balls=1)
    weights = np.arange(8) / 7  # the share of the last frame in frame i, as inbetween.evaluation.pairs.blend
    checked = 0
    for seed in range(200):
        video = generate_video(seed, config)
        start, end, radius, colour = video.centres[0, 0], video.centres[-1, 0], video.radii[0], video.colours[0]
        if np.hypot(*(end - start)) <= 2 * radius:  # the two discs overlap: the overlap is ball-coloured
            continue
        first, last = video.frames[0].astype(float), video.frames[-1].astype(float)
        fade = np.rint((1 - weights[:, None, None, None]) * first + weights[:, None, None, None] * last)
        fade = fade.astype(np.uint8)
        for index in range(2, 6):  # the middle 4 of the 6 in-between frames: both ghosts at most 5/7
            assert find_ball_centre(fade[index], colour, radius) is None, (seed, index)
        # Frames 1 and 6 are 6/7 keyframe: that ball is still there.
        assert find_ball_centre(fade[1], colour, radius) == pytest.approx(tuple(start), abs=0.5)
        assert find_ball_centre(fade[6], colour, radius) == pytest.approx(tuple(end), abs=0.5)
        checked += 1
    assert checked > 50


def test_a_blend_of_two_balls_is_neither():
    hues = [(255, 0, 0), (255, 255, 0)]  # 60 degrees apart, the least the world allows with three balls
    one, other = _draw([(16.0, 16.0)], [5.0], hues[:1]), _draw([(16.0, 16.0)], [5.0], hues[1:])
    blended = ((one.astype(float) + other) / 2).round().astype(np.uint8)
    assert all(find_ball_centre(blended, colour, 5.0) is None for colour in hues)


def test_find_ball_centre_survives_a_one_pixel_blur_and_shift():
    """A Gaussian blur of sigma 1 px (each ball edge smeared) and a 1 px shift: every ball at least 90 %
    visible is still found, within a pixel of its centre after the blur and about 1 px off after the shift."""
    from scipy.ndimage import gaussian_filter

    blur_errors, shift_errors = [], []
    for seed in range(40):
        video = generate_video(seed, WorldConfig(num_frames=8))
        blurred = gaussian_filter(video.frames.astype(float), sigma=(0, 1, 1, 0)).round().astype(np.uint8)
        shifted = np.roll(video.frames, 1, axis=1)  # 1 px down; the wrapped row is background
        visible = visible_fraction(video.centres, video.radii)
        for frame in range(len(video.frames)):
            for ball, (colour, radius) in enumerate(zip(video.colours, video.radii, strict=True)):
                if visible[frame, ball] < 0.9:
                    continue
                truth = video.centres[frame, ball]
                for errors, frames in ((blur_errors, blurred), (shift_errors, shifted)):
                    found = find_ball_centre(frames[frame], colour, radius)
                    assert found is not None, (seed, frame, ball)
                    errors.append(np.hypot(*(np.array(found) - truth)))
    assert len(blur_errors) > 300
    assert max(blur_errors) < 1.0
    assert np.median(shift_errors) == pytest.approx(1.0, abs=0.05) and max(np.abs(np.subtract(shift_errors, 1))) < 0.7


def test_visible_fraction_is_the_uncovered_share_of_each_disc():
    radii = np.array([4.0, 4.0, 2.0])
    centres = np.array([[[10.0, 10.0], [16.0, 10.0], [10.0, 10.0]], [[5.0, 5.0], [25.0, 25.0], [15.0, 5.0]]])
    visible = visible_fraction(centres, radii)
    # Frame 0: ball 0 is covered by the lens of ball 1 (centres 6 apart) and by ball 2 (inside it, disjoint from
    # the lens); the last ball drawn is always whole. Frame 1: nothing overlaps.
    d, r = 6.0, 4.0
    lens = 2 * r**2 * np.arccos(d / (2 * r)) - d / 2 * np.sqrt(4 * r**2 - d**2)
    expected = 1 - (lens + np.pi * 2.0**2) / (np.pi * r**2)
    np.testing.assert_allclose(visible[0], [expected, 1.0, 1.0], atol=0.005)
    np.testing.assert_allclose(visible[1], 1.0)


def test_is_interesting_for_bounces_and_not_for_straight_lines():
    bouncing = next(generate_video(seed) for seed in SEEDS if generate_video(seed).bounces.any())
    assert is_interesting(bouncing)
    straight_config = WorldConfig(gravity=0.0, max_speed=0.3, min_balls=1, max_balls=1)
    straight = [generate_video(seed, straight_config) for seed in SEEDS]
    straight = [video for video in straight if not video.bounces.any()]
    assert straight
    assert not any(is_interesting(video) for video in straight)


def test_interpolation_pairs_skips_straight_videos():
    config = WorldConfig(gravity=0.0, max_speed=0.3, min_balls=1, max_balls=1)
    expected = [seed for seed in SEEDS if generate_video(seed, config).bounces.any()]
    assert 0 < len(expected) < len(SEEDS)  # the straight config still hits a wall now and then
    assert [video.seed for video in interpolation_pairs(SEEDS, config)] == expected


def test_write_dataset_is_read_by_clip_dataset(tmp_path):
    config = WorldConfig()
    folders = write_dataset(tmp_path / "world", [3, 5, 11], config)
    assert [folder.name for folder in folders] == ["video_00003", "video_00005", "video_00011"]
    truth = json.loads((folders[1] / "centres.json").read_text())
    np.testing.assert_allclose(truth["centres"], generate_video(5, config).centres)
    dataset = ClipDataset(tmp_path / "world", ClipSpec(num_frames=4, stride=2, height=32, width=32))
    assert len(dataset) == 3 * (14 // 7)  # span 7: clips at frames 0 and 7 of each 14-frame video
    sample = dataset[1]  # video 3, clip starting at frame 7: frames 7, 9, 11, 13
    expected = generate_video(3, config).frames[7::2].astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(sample["clip"].permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)
    with pytest.raises(FileExistsError):
        write_dataset(tmp_path / "world", [3], config)


def test_config_validation_is_one_line():
    with pytest.raises(ValueError, match="`restitution`"):
        WorldConfig(restitution=1.5)
    with pytest.raises(ValueError, match="`size`"):
        WorldConfig(size=10, max_radius=6.0)
