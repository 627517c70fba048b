"""A tiny seeded world of bouncing balls: short videos whose true motion is known exactly.

Balls fly under gravity and lose energy at every bounce (restitution < 1), so a clip played backwards is
not a valid forward clip: the science check the backward adapter needs. Coordinates are pixels with x to
the right and y down; pixel column j covers x in [j, j + 1), so a frame of `size` pixels spans [0, size].
"""

from __future__ import annotations

import colorsys
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import atomic_folder

_SUPERSAMPLE = 2  # samples per pixel side for the disc edges; 2 is enough for centroids well under 0.5 px


@dataclass(frozen=True)
class WorldConfig:
    """How videos are drawn. Lengths are pixels, time is frames (gravity in px/frame^2)."""

    size: int = 32
    num_frames: int = 14  # SVD's clip length
    min_balls: int = 1
    max_balls: int = 3
    min_radius: float = 3.0
    max_radius: float = 6.0
    gravity: float = 0.35  # ~7 px of sag over 13 frames: a clear arc at 32 px
    restitution: float = 0.8  # < 1 so time reversal is visible (rebounds get lower)
    max_speed: float = 2.0  # initial velocity per axis is uniform in [-max_speed, max_speed] px/frame
    substeps: int = 4  # a bounce lands within a quarter frame of the true contact time
    background_grid: int = 2  # corner colours per side of the bilinear background; 2 is one smooth gradient

    def __post_init__(self) -> None:
        if self.num_frames < 2:
            raise ValueError(f"`num_frames` must be at least 2 (a first and a last frame), got {self.num_frames}")
        if not 1 <= self.min_balls <= self.max_balls:
            raise ValueError(f"need 1 <= `min_balls` <= `max_balls`, got {self.min_balls} and {self.max_balls}")
        if not 0 < self.min_radius <= self.max_radius:
            raise ValueError(f"need 0 < `min_radius` <= `max_radius`, got {self.min_radius} and {self.max_radius}")
        if 2 * self.max_radius >= self.size:
            raise ValueError(f"`size` must exceed 2 * `max_radius` = {2 * self.max_radius}, got {self.size}")
        if self.gravity < 0 or self.max_speed < 0:
            raise ValueError(f"`gravity` and `max_speed` must be >= 0, got {self.gravity} and {self.max_speed}")
        if not 0 <= self.restitution <= 1:
            raise ValueError(f"`restitution` must be in [0, 1] (0.8 loses energy per bounce), got {self.restitution}")
        if self.substeps < 1 or self.background_grid < 2:
            raise ValueError(
                f"need `substeps` >= 1, `background_grid` >= 2, got {self.substeps}, {self.background_grid}"
            )


@dataclass(frozen=True)
class WorldVideo:
    """One generated video, N = num_frames, B = balls.

    frames: uint8 (N, H, W, 3). centres: float64 (N, B, 2) ball centres (x, y) in pixels.
    velocities: float64 (N, B, 2) px/frame at each frame. bounces: bool (N - 1, B, 2), whether ball b hit a
    wall in x (column 0) or the floor/ceiling in y (column 1) between frames i and i + 1.
    colours: uint8 (B, 3), drawn in this order (later balls cover earlier ones). radii: float64 (B,).
    """

    seed: int
    frames: np.ndarray
    centres: np.ndarray
    velocities: np.ndarray
    bounces: np.ndarray
    colours: np.ndarray
    radii: np.ndarray


def _ball_colours(rng: np.random.Generator, count: int) -> np.ndarray:
    # Fully saturated hues spaced at least 1/(2 * count) apart: far from each other and from the grey-ish background.
    hue0 = rng.random()
    hues = (hue0 + (np.arange(count) + rng.uniform(-0.25, 0.25, count)) / count) % 1.0
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(h, 1.0, 1.0)] for h in hues], dtype=np.uint8)


def _background(rng: np.random.Generator, config: WorldConfig) -> np.ndarray:
    """Bilinear gradient over a (G, G) grid of low-saturation colours: float64 (H, W, 3) in [0, 255]."""
    grid = config.background_grid
    grey = rng.uniform(70, 185, (grid, grid, 1))
    corners = grey + rng.uniform(-20, 20, (grid, grid, 3))  # a slight tint keeps it far from saturated balls
    u = (np.arange(config.size) + 0.5) / config.size * (grid - 1)
    i = np.minimum(u.astype(int), grid - 2)
    f = (u - i)[:, None]
    rows = corners[i] * (1 - f[:, :, None]) + corners[i + 1] * f[:, :, None]  # (H, G, 3)
    return rows[:, i] * (1 - f[None]) + rows[:, i + 1] * f[None]


def _reflect(
    pos: np.ndarray,
    vel: np.ndarray,
    below: np.ndarray,
    above: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    accel: np.ndarray,
    restitution: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Bounce (B, 2) states that crossed a wall in the last substep; returns new positions and velocities.

    The overshoot is mirrored back scaled by `restitution`, and the speed is set from energy (the speed at
    contact, times restitution, then slowed by gravity over the mirrored distance), so a bounce multiplies
    the energy by exactly restitution**2 (a plain mirror would gain energy on the floor, about 5% at 32 px).
    """
    hit = below | above
    outward = np.where(above, 1.0, -1.0)  # direction from the centre of the frame through the wall crossed
    wall = np.where(above, high, low)
    overshoot = np.where(hit, (pos - wall) * outward, 0.0)
    accel_out = accel * outward
    contact_speed2 = vel**2 - 2 * accel_out * overshoot
    speed2 = restitution**2 * contact_speed2 - 2 * accel_out * restitution * overshoot
    new_pos = np.clip(np.where(hit, wall - outward * restitution * overshoot, pos), low, high)
    new_vel = np.where(hit, -outward * np.sqrt(np.maximum(speed2, 0.0)), vel)  # 0: the ball comes to rest
    return new_pos, new_vel


def _simulate(
    pos: np.ndarray, vel: np.ndarray, radii: np.ndarray, config: WorldConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrate (B, 2) positions and velocities; returns centres, velocities (N, B, 2) and bounces (N-1, B, 2)."""
    dt = 1.0 / config.substeps
    accel = np.array([0.0, config.gravity])
    low, high = radii[:, None], config.size - radii[:, None]  # (B, 1): the centre keeps the disc inside
    centres, velocities = [pos.copy()], [vel.copy()]
    bounces = np.zeros((config.num_frames - 1, len(radii), 2), dtype=bool)
    for frame in range(config.num_frames - 1):
        for _ in range(config.substeps):
            # Exact ballistic step: free flight is an exact parabola, whatever the substep.
            pos = pos + vel * dt + 0.5 * accel * dt**2
            vel = vel + accel * dt
            below, above = pos < low, pos > high
            pos, vel = _reflect(pos, vel, below, above, low, high, accel, config.restitution)
            bounces[frame] |= below | above
        centres.append(pos.copy())
        velocities.append(vel.copy())
    return np.stack(centres), np.stack(velocities), bounces


def _render(background: np.ndarray, centres: np.ndarray, radii: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Draw discs at (B, 2) `centres` over (H, W, 3) `background`; uint8 (H, W, 3)."""
    height, width, _ = background.shape
    s = _SUPERSAMPLE
    ys = (np.arange(height * s) + 0.5) / s
    xs = (np.arange(width * s) + 0.5) / s
    image = background.copy()
    for (cx, cy), radius, colour in zip(centres, radii, colours, strict=True):
        distance = np.hypot(xs[None] - cx, ys[:, None] - cy)
        # Coverage ramps over one subsample across the edge, then 2x2 box-filtered: anti-aliased edges.
        cover = np.clip((radius - distance) * s + 0.5, 0.0, 1.0)
        alpha = cover.reshape(height, s, width, s).mean(axis=(1, 3))[:, :, None]
        image = image * (1 - alpha) + colour.astype(float) * alpha
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def generate_video(seed: int, config: WorldConfig = WorldConfig()) -> WorldVideo:
    """Generate one video; the same `seed` and `config` give identical arrays (all draws from default_rng(seed))."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(config.min_balls, config.max_balls + 1))
    radii = rng.uniform(config.min_radius, config.max_radius, count)
    colours = _ball_colours(rng, count)
    pos = rng.uniform(radii[:, None], config.size - radii[:, None], (count, 2))
    vel = rng.uniform(-config.max_speed, config.max_speed, (count, 2))
    background = _background(rng, config)
    centres, velocities, bounces = _simulate(pos, vel, radii, config)
    frames = np.stack([_render(background, c, radii, colours) for c in centres])
    return WorldVideo(seed, frames, centres, velocities, bounces, colours, radii)


def is_interesting(video: WorldVideo, min_arc: float = 1.5) -> bool:
    """True if some ball does not move in a straight line first to last frame: it bounces, or its path
    strays at least `min_arc` px from the chord. Straight motion is solved by plain blending of keyframes."""
    if video.bounces.any():
        return True
    start, end = video.centres[0], video.centres[-1]  # (B, 2)
    chord = end - start
    offset = video.centres - start  # (N, B, 2)
    length = np.maximum(np.linalg.norm(chord, axis=-1), 1e-9)
    # Distance to the chord's line via the 2D cross product; a ball that does not move has no arc.
    deviation = np.abs(offset[..., 0] * chord[:, 1] - offset[..., 1] * chord[:, 0]) / length
    return bool((deviation >= min_arc).any())


def interpolation_pairs(seeds: Iterable[int], config: WorldConfig = WorldConfig()) -> Iterator[WorldVideo]:
    """Generate videos for `seeds`, yielding only the interesting ones (held-out in-betweening evaluation)."""
    for seed in seeds:
        video = generate_video(seed, config)
        if is_interesting(video):
            yield video


# The ball finder. Every ball colour is a fully saturated hue (one channel 255, one 0) and every background pixel
# is grey-ish (channels within 40 of each other), so a ball is at least 215 / sqrt(2) = 152 RGB units from any
# background pixel (154.8 is the least over 3000 held-out videos), and two balls' hues are at least 60 degrees
# apart: at least 180 units. A pixel "has the ball's colour" within BALL_COLOUR_TOLERANCE = 40 units: it is then at
# least 1 - 40 / 152 = 74 % ball over any background, so a 50/50 blend (a cross-fade ghost, >= 76 units away; >= 90
# over another ball) never passes, nor does a 5/7 ghost (the strongest in the middle of an 8-frame cross-fade,
# >= 43 units away), while rounding and codec noise on a real ball do, as do its rim pixels over 74 % covered.
BALL_COLOUR_TOLERANCE = 40.0
# A ball is present where at least BALL_MIN_COVERAGE of the pixels of a disc of its radius, shrunk by
# BALL_EDGE_MARGIN, has its colour. The margin leaves out the rim, where colour is legitimately blended: the
# anti-aliased edge (< 1 px) or a Gaussian blur of sigma 1 px (it pulls the 74 % contour in by about 0.65 px, more
# on a small disc). With them, every ground-truth ball at least 90 % visible is found at 100 % coverage and after
# a sigma = 1 px blur at >= 86 % (1000 held-out videos), while a ghost covers nothing.
BALL_MIN_COVERAGE = 0.8
BALL_EDGE_MARGIN = 1.5


def _disc_rows(radius: float, offset_x: float, offset_y: float) -> list[tuple[int, int, int]]:
    """Rows (dy, first dx, last dx) of the pixels whose centres lie within `radius` of the point offset by
    (offset_x, offset_y) from a pixel centre; a disc is convex, so each row is one run."""
    rows = []
    for dy in range(-math.ceil(radius) - 1, math.ceil(radius) + 2):
        half = radius**2 - (dy - offset_y) ** 2
        if half < 0:
            continue
        low, high = math.ceil(offset_x - math.sqrt(half)), math.floor(offset_x + math.sqrt(half))
        if low <= high:
            rows.append((dy, low, high))
    return rows


def disc_coverage(mask: np.ndarray, radius: float) -> np.ndarray:
    """Share of the pixels within `radius` of each candidate centre that are set in bool (..., H, W) `mask`.

    Candidates lie on a half-pixel grid: entry (..., i, j) of the float (..., 2H, 2W) result is centred at
    (x, y) = ((j + 1) / 2, (i + 1) / 2). Pixels outside the frame count as unset. Exact counts from row sums.
    """
    height, width = mask.shape[-2:]
    pad = math.ceil(radius) + 2
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(pad, pad), (pad, pad)]).astype(np.int32)
    cumulative = np.concatenate([np.zeros_like(padded[..., :1]), padded.cumsum(axis=-1)], axis=-1)
    coverage = np.zeros((*mask.shape[:-2], 2 * height, 2 * width))
    for half_y in (0, 1):
        for half_x in (0, 1):
            rows = _disc_rows(radius, 0.5 * half_x, 0.5 * half_y)
            count = np.zeros(mask.shape, dtype=np.int32)
            for dy, low, high in rows:
                band = cumulative[..., pad + dy : pad + dy + height, :]
                count += band[..., pad + high + 1 : pad + high + 1 + width] - band[..., pad + low : pad + low + width]
            coverage[..., half_y::2, half_x::2] = count / sum(high - low + 1 for _, low, high in rows)
    return coverage


def find_ball_centre(
    frame: np.ndarray,
    colour: np.ndarray | Iterable[int],
    radius: float,
    tolerance: float = BALL_COLOUR_TOLERANCE,
    min_coverage: float = BALL_MIN_COVERAGE,
) -> tuple[float, float] | None:
    """Centre (x, y) in pixels of the ball of `colour` and `radius` in uint8 (H, W, 3) `frame`, or None for a miss.

    A pixel has the ball's colour within `tolerance` (RGB distance). The ball is present where at least
    `min_coverage` of the pixels of a disc of radius `radius` - BALL_EDGE_MARGIN have its colour (a faded ghost
    has none, a ball split or smaller than that disc too few); it is a miss as well when two such places lie
    more than two radii apart (two balls of one colour: which is the ball is a guess). The centre is the
    centroid of the ball-coloured pixels within `radius` + 0.5 of the mean of the best-covered places.
    """
    distance = np.linalg.norm(frame.astype(float) - np.asarray(colour, dtype=float), axis=-1)
    mask = distance <= tolerance
    coverage = disc_coverage(mask, max(radius - BALL_EDGE_MARGIN, 1.0))
    best = coverage.max()
    if best < min_coverage:
        return None
    ys, xs = np.nonzero(coverage >= min_coverage)
    places = np.stack([xs + 1, ys + 1], axis=-1) / 2  # (x, y) centres on the half-pixel grid
    first = places[np.argmax(coverage[ys, xs])]
    if np.hypot(*(places - first).T).max() > 2 * radius:
        return None
    estimate = places[coverage[ys, xs] == best].mean(axis=0)
    pixel_ys, pixel_xs = np.nonzero(mask)
    centres = np.stack([pixel_xs, pixel_ys], axis=-1) + 0.5  # pixel centres sit at +0.5
    inside = np.hypot(*(centres - estimate).T) <= radius + 0.5
    return tuple(float(v) for v in centres[inside].mean(axis=0))


def visible_fraction(centres: np.ndarray, radii: np.ndarray, samples: int = 64) -> np.ndarray:
    """Share of each ball's disc not covered by the balls drawn over it (later ones), from (..., B, 2) `centres`
    and (B,) `radii`: float (..., B), from a `samples` x `samples` grid over each disc (within about 0.002)."""
    grid = (np.arange(samples) + 0.5) / samples * 2 - 1
    unit = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    unit = unit[np.hypot(*unit.T) <= 1]  # (P, 2) points of the unit disc
    visible = np.ones(centres.shape[:-1])
    for ball, radius in enumerate(radii):
        points = centres[..., ball, None, :] + radius * unit  # (..., P, 2)
        hidden = np.zeros(points.shape[:-1], dtype=bool)
        for other in range(ball + 1, len(radii)):
            hidden |= np.hypot(*np.moveaxis(points - centres[..., other, None, :], -1, 0)) < radii[other]
        visible[..., ball] = 1 - hidden.mean(axis=-1)
    return visible


def write_dataset(
    folder: str | os.PathLike, seeds: Iterable[int], config: WorldConfig = WorldConfig(), overwrite: bool = False
) -> list[Path]:
    """Write each video as `folder/video_{seed:05d}/frame_000.png, ...` plus `centres.json` (ground truth).

    Each video folder appears whole or not at all (atomic_folder); ClipDataset reads them as frame folders.
    Returns the video folders written.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for seed in seeds:
        video = generate_video(seed, config)
        target = root / f"video_{seed:05d}"
        with atomic_folder(target, overwrite=overwrite) as tmp:
            for index, frame in enumerate(video.frames):
                Image.fromarray(frame).save(tmp / f"frame_{index:03d}.png")
            truth = {
                "seed": seed,
                "config": asdict(config),
                "centres": video.centres.tolist(),
                "radii": video.radii.tolist(),
                "colours": video.colours.tolist(),
                "bounces": video.bounces.tolist(),
            }
            (tmp / "centres.json").write_text(json.dumps(truth))
        written.append(target)
    return written
