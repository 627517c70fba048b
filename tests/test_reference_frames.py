"""Reference frames: every preset, a sequence and a loop on the shipped tiny-world model, against frames stored in
tests/data/reference_frames/. A change that should not change the output (a refactor, a reordered formula) must
pass; one that changes the sampling fails here with the largest difference.

Rewrite the references (after a change that is meant to alter the output) with
``INBETWEEN_UPDATE_REFERENCES=1 python -m pytest tests/test_reference_frames.py``, then commit them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inbetween import InbetweenPipeline
from inbetween.config import PRESETS, SamplingConfig
from inbetween.files import atomic_output
from inbetween.hub import TINY_WORLD_FOLDER
from inbetween.sequence import interpolate_sequence
from inbetween.toyworld.science import heldout_videos

REFERENCES = Path(__file__).parent / "data" / "reference_frames"
UPDATE = os.environ.get("INBETWEEN_UPDATE_REFERENCES") == "1"
# Reordered float operations (e.g. Euler's step as D + (x - D) sigma_next / sigma instead of x + (x - D) / sigma *
# (sigma_next - sigma)) move frames by up to 4e-6 here (measured); real changes to the sampling, by far more.
TOLERANCE = 1e-4
# Below this, a frame is blank: the tiny world's frames have a grid background and balls (std ~0.14).
MIN_FRAME_STD = 0.01
# The presets' own 25 or 50 steps would take minutes on one core. Six keep every kind of step: re-injected steps on
# the first three (paper, fast), the second-order solver's history on the rest (fast), vibid's half-steps. Every other
# option is the preset's own.
STEPS = 6
SEED = 0


@pytest.fixture(scope="module")
def pipe() -> InbetweenPipeline:
    pipe = InbetweenPipeline.from_pretrained(str(TINY_WORLD_FOLDER))  # with its backward adapter
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    """The first bundled held-out video of the tiny world, ``(8, 32, 32, 3)`` uint8 (as `inbetween demo` uses)."""
    return heldout_videos(1)[0].frames


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(SEED)


def check_against_reference(case: str, frames: np.ndarray, keyframes: np.ndarray, preset: str) -> None:
    """Compare ``frames`` ``(N, H, W, 3)`` in [0, 1], sampled under ``preset`` at :data:`STEPS`, with the reference
    of ``case``, or write it when updating.

    The keyframes and the preset's options are stored too: a changed toy world is told apart from a changed
    sampler, and a preset's own step count, which the frames do not see, is still held to the reference's.
    """
    options = PRESETS[preset]
    frame_std = frames.std(axis=(1, 2, 3))
    assert frame_std.min() > MIN_FRAME_STD, f"{case}: frame {frame_std.argmin()} is blank (std {frame_std.min():.2g})"
    path = REFERENCES / f"{case}.npz"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as file:
            # float32: float16's steps near 1 (~5e-4) are wider than the tolerance.
            np.savez_compressed(
                file, frames=frames.astype(np.float32), keyframes=keyframes, preset=np.array(json.dumps(options))
            )
        pytest.skip(f"wrote {path.relative_to(Path(__file__).parent.parent)}")
    if not path.is_file():
        pytest.fail(
            f"{case}: no reference frames at {path}; write them with "
            "`INBETWEEN_UPDATE_REFERENCES=1 python -m pytest tests/test_reference_frames.py` and commit them"
        )
    with np.load(path) as stored:
        reference, stored_keyframes = stored["frames"], stored["keyframes"]
        stored_options = json.loads(str(stored["preset"]))
    assert np.array_equal(keyframes, stored_keyframes), (
        f"{case}: the held-out keyframes are not those the reference was made from (the toy world changed?)"
    )
    changed = {key: (stored_options.get(key), options.get(key)) for key in stored_options | options}
    changed = {key: values for key, values in changed.items() if values[0] != values[1]}
    assert not changed, f"{case}: preset {preset}'s options changed since the reference, (then, now): {changed}"
    assert frames.shape == reference.shape, f"{case}: frames {frames.shape}, reference {reference.shape}"
    difference = np.abs(frames - reference)
    worst, frame = difference.max(), difference.max(axis=(1, 2, 3)).argmax()
    assert worst <= TOLERANCE, (
        f"{case}: frames differ from the reference by up to {worst:.3g} (at frame {frame}; tolerance {TOLERANCE:g}); "
        "if the change is meant to alter the output, rewrite the references with INBETWEEN_UPDATE_REFERENCES=1"
    )


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_reproduces_its_reference_frames(pipe: InbetweenPipeline, video: np.ndarray, preset: str) -> None:
    keyframes = video[[0, -1]]
    config = SamplingConfig.preset(preset, num_inference_steps=STEPS)
    first, last = (Image.fromarray(frame) for frame in keyframes)
    frames = pipe(first, last, config, generator=generator(), output_type="np").frames[0]
    assert frames.shape == video.shape  # the model's own 8 frames at 32 px
    check_against_reference(f"preset-{preset}", frames, keyframes, preset)


@pytest.mark.parametrize("loop", [False, True], ids=["sequence", "loop"])
def test_sequence_and_loop_reproduce_their_reference_frames(
    pipe: InbetweenPipeline, video: np.ndarray, loop: bool
) -> None:
    keyframes = video[[0, 4, -1]]  # the held-out video's first, middle and last frames
    config = SamplingConfig.preset("fast", num_inference_steps=STEPS)
    images = [Image.fromarray(frame) for frame in keyframes]
    frames = interpolate_sequence(pipe, images, config, loop=loop, generator=generator(), output_type="np")
    assert len(frames) == (3 if loop else 2) * (len(video) - 1) + (0 if loop else 1)
    check_against_reference(f"{'loop' if loop else 'sequence'}-fast", frames, keyframes, "fast")
