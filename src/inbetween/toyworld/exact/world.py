"""The exact world: every video of a small toy world, enumerated.

One ball of a fixed colour and radius flies over a fixed background under gravity and loses energy at every bounce
(the physics of :mod:`inbetween.toyworld.world`), so a video played backwards is in general not a video of the
world. It is launched from every position of a pixel lattice with every velocity of a grid, and its centre is drawn
at the nearest lattice position in every frame. So the world has few distinct frames (one per lattice position,
the *atlas*) and every video is a path through them: frame ``t`` of video ``k`` is ``atlas[paths[k, t]]``. That
makes the exact denoisers cheap (a distance per frame and atlas entry, then sums along the paths) and keyframe
matching exact: two frames are equal exactly when the ball sits at the same lattice position.

Because every lattice position is also a launch position, every frame of the world is the first frame of some
videos: the forward model can be conditioned on any frame, the last keyframe included (time-reversal fusion does
exactly that).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..world import WorldConfig, _render, _simulate
from .config import ExactWorldConfig

BALL_COLOUR = (255, 64, 0)  # fully saturated, as the ball finder of world.py expects


@dataclass(frozen=True)
class ExactWorld:
    """Every distinct video of the world, as paths through an atlas of frames. Q atlas frames, K videos, N frames.

    atlas: float32 ``(Q, 3, H, W)`` in [-1, 1] (the pixel range the samplers run in); ``atlas_uint8`` the same as
    uint8 ``(Q, H, W, 3)``; background: uint8 ``(H, W, 3)``, a frame without the ball; centres: float64 ``(Q, 2)``,
    the ball's (x, y) centre in each atlas frame, in pixels.
    paths: long ``(K, N)``, atlas index of every frame of every video. log_prior: float64 ``(K,)``, the log of how
    many launches (position, velocity) draw that video: the prior is uniform over launches.
    """

    config: ExactWorldConfig
    atlas: torch.Tensor
    atlas_uint8: np.ndarray
    background: np.ndarray
    centres: np.ndarray
    paths: torch.Tensor
    log_prior: torch.Tensor

    @property
    def num_videos(self) -> int:
        return self.paths.shape[0]

    def videos(self, indices: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """The videos ``indices`` (default: all) as float32 ``(len, N, 3, H, W)`` in [-1, 1]."""
        paths = self.paths if indices is None else self.paths[torch.as_tensor(indices)]
        return self.atlas[paths]

    def consistent(self, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Bool ``(B, K)``: which videos start at atlas frame ``first[b]`` and end at ``last[b]`` (``(B,)`` long):
        the ideal answers of keyframe pair ``b``."""
        return (self.paths[:, 0] == first[:, None]) & (self.paths[:, -1] == last[:, None])


def physics_of(config: ExactWorldConfig) -> WorldConfig:
    """The tiny world's physics for one ball of the exact world's radius."""
    return WorldConfig(
        size=config.size,
        num_frames=config.num_frames,
        min_balls=1,
        max_balls=1,
        min_radius=config.radius,
        max_radius=config.radius,
        gravity=config.gravity,
        restitution=config.restitution,
    )


def _background(size: int) -> np.ndarray:
    """A fixed grey diagonal gradient with a slight blue tint: float64 (H, W, 3) in [0, 255]. Its channels stay
    within 40 of each other, as the ball finder of world.py expects of a background."""
    ramp = np.add.outer(np.arange(size), np.arange(size)) / (2 * (size - 1))  # 0 at the top left, 1 bottom right
    grey = 160 - 70 * ramp
    return np.stack([grey, grey + 4, grey + 16], axis=-1)


def build_exact_world(config: ExactWorldConfig | None = None) -> ExactWorld:
    """Enumerate the world (default: :class:`ExactWorldConfig`'s): launch the ball from every lattice position with
    every grid velocity, draw each frame at the nearest lattice position, keep each distinct video once (its prior:
    how many launches draw it)."""
    config = ExactWorldConfig() if config is None else config
    lattice = np.array(config.lattice)
    side = len(lattice)
    positions = np.array(list(itertools.product(lattice + 0.5, lattice + 0.5)))  # (L^2, 2) (x, y)
    velocities = np.array(
        list(
            itertools.product(
                np.linspace(-config.max_speed_x, config.max_speed_x, config.speeds_x),
                np.linspace(config.min_speed_y, config.max_speed_y, config.speeds_y),
            )
        )
    )
    launch_pos = np.repeat(positions, len(velocities), axis=0)
    launch_vel = np.tile(velocities, (len(positions), 1))
    centres, _, _ = _simulate(launch_pos, launch_vel, np.full(len(launch_pos), config.radius), physics_of(config))
    # The simulation keeps the disc inside the frame; the nearest lattice position keeps it there after rounding.
    cell = np.clip(np.rint(centres - 0.5).astype(int), lattice[0], lattice[-1]) - lattice[0]  # (N, launches, 2)
    atlas_index = cell[..., 0] * side + cell[..., 1]  # the order of `positions`
    paths, counts = np.unique(atlas_index.T, axis=0, return_counts=True)

    background = _background(config.size)
    colour = np.array([BALL_COLOUR], dtype=np.uint8)
    frames = np.stack([_render(background, p[None], np.array([config.radius]), colour) for p in positions])
    atlas = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    return ExactWorld(
        config=config,
        atlas=atlas,
        atlas_uint8=frames,
        background=np.clip(np.rint(background), 0, 255).astype(np.uint8),
        centres=positions,
        paths=torch.from_numpy(paths).long(),
        log_prior=torch.from_numpy(np.log(counts)).double(),
    )
