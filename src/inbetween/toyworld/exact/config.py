"""The settings of the exact world and of the sampler study on it (no torch: the CLI builds its flags from them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExactWorldConfig:
    """The enumerated world. Lengths are pixels, time is frames. Launch velocities are a grid of ``speeds_x``
    values evenly from ``-max_speed_x`` to ``max_speed_x`` times ``speeds_y`` values from ``min_speed_y`` to
    ``max_speed_y`` (y points down: negative is upwards); launch positions are every lattice position."""

    size: int = field(default=16, metadata={"metavar": "N", "help": "frame side in pixels", "flag": "--world-size"})
    num_frames: int = field(
        default=10, metadata={"metavar": "N", "help": "frames per video", "flag": "--world-frames"}
    )
    radius: float = field(default=2.5, metadata={"metavar": "X", "help": "ball radius in pixels"})
    gravity: float = field(default=0.2, metadata={"metavar": "X", "help": "px/frame^2 (8 px of sag over 9 frames)"})
    restitution: float = field(
        default=0.6, metadata={"metavar": "X", "help": "speed kept at a bounce; < 1: reversal is visible"}
    )
    max_speed_x: float = field(
        default=1.5, metadata={"metavar": "X", "help": "largest horizontal launch speed, px/frame"}
    )
    speeds_x: int = field(default=5, metadata={"metavar": "N", "help": "horizontal launch speeds on the grid"})
    min_speed_y: float = field(
        default=-2.0, metadata={"metavar": "X", "help": "lowest vertical launch speed (negative: up)"}
    )
    max_speed_y: float = field(default=1.0, metadata={"metavar": "X", "help": "highest vertical launch speed"})
    speeds_y: int = field(default=4, metadata={"metavar": "N", "help": "vertical launch speeds on the grid"})
    keyframe_softness: float = field(
        default=0.0,
        metadata={
            "metavar": "X",
            "help": "0: a model conditioned on a keyframe draws only videos through it; X > 0: every video, weighted "
            "by exp(-RMSE^2 / (2 X^2)), RMSE (0-255) of its frame to the keyframe",
        },
    )

    def __post_init__(self) -> None:
        if self.num_frames < 3:
            raise ValueError(
                f"`num_frames` must be at least 3 (two keyframes and one in between), got {self.num_frames}"
            )
        if not 0 < 2 * self.radius < self.size - 1:
            raise ValueError(f"need 0 < 2 * `radius` < `size` - 1, got radius {self.radius} and size {self.size}")
        if self.speeds_x < 1 or self.speeds_y < 1:
            raise ValueError(f"`speeds_x` and `speeds_y` must be at least 1, got {self.speeds_x}, {self.speeds_y}")
        if self.max_speed_x < 0 or self.min_speed_y > self.max_speed_y:
            raise ValueError(
                f"need `max_speed_x` >= 0 and `min_speed_y` <= `max_speed_y`, got {self.max_speed_x}, "
                f"{self.min_speed_y}, {self.max_speed_y}"
            )
        if self.keyframe_softness < 0:
            raise ValueError(f"`keyframe_softness` must be 0 or more, got {self.keyframe_softness}")
        if not 0 <= self.restitution <= 1 or self.gravity < 0:
            raise ValueError(
                f"need `restitution` in [0, 1] and `gravity` >= 0, got {self.restitution}, {self.gravity}"
            )

    @property
    def lattice(self) -> range:
        """Pixel indices ``i`` whose centre ``i + 0.5`` keeps the whole disc inside the frame, per axis."""
        return range(math.ceil(self.radius - 0.5), math.floor(self.size - self.radius - 0.5) + 1)


@dataclass(frozen=True)
class SamplerStudyConfig:
    """``inbetween toyworld samplers``: every sampler of the study on held-out keyframe pairs of the exact world."""

    pairs: int = field(
        default=200, metadata={"metavar": "N", "help": "keyframe pairs: first and last frames of distinct videos"}
    )
    seed: int = field(default=0, metadata={"metavar": "N", "help": "draws the pairs and every sampler's noise"})
    world: ExactWorldConfig = field(default_factory=ExactWorldConfig)

    def __post_init__(self) -> None:
        if self.pairs < 2:
            raise ValueError(f"`pairs` must be at least 2 for an interval, got {self.pairs}")
