"""`inbetween interpolate K1 K2 ... Kn` and `--loop`: frame counts, looping outputs, bad sequences in one line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import random_keyframe
from PIL import Image
from tiny import FAST_CLI

from inbetween.cli import main
from inbetween.video_io import read_video

FAST = FAST_CLI


@pytest.fixture(scope="module")
def model(tiny_svd_folder: Path) -> Path:
    return tiny_svd_folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    for index in range(4):
        random_keyframe(index).save(folder / f"k{index}.png")
    shutil.copy(folder / "k0.png", folder / "k0_again.png")
    random_keyframe(7, size=(96, 64)).save(folder / "wide.png")
    (folder / "broken.png").write_text("not an image")
    return folder


def interpolate(model: Path, output: Path, *arguments: str) -> int:
    return main(["interpolate", *arguments, "-o", str(output), "--model", str(model), *FAST, "--quiet"])


def keyframe_paths(inputs: Path, *names: str) -> list[str]:
    return [str(inputs / f"{name}.png") for name in names]


def test_four_keyframes_give_three_segments_sharing_their_boundaries(
    inputs: Path, model: Path, tmp_path: Path, capfd
) -> None:
    output = tmp_path / "frames"
    assert interpolate(model, output, *keyframe_paths(inputs, "k0", "k1", "k2", "k3")) == 0
    assert len(read_video(output)) == 3 * (3 - 1) + 1
    out, err = capfd.readouterr()
    assert out.strip() == f"wrote {output}: 7 frames, 64x64, 7 fps (3 segments of 3 frames)"
    assert err == ""


@pytest.mark.parametrize("name", ["loop.gif", "loop.webp"])
def test_a_loop_has_no_repeated_frame_and_loops_forever(inputs: Path, model: Path, tmp_path: Path, name: str) -> None:
    output = tmp_path / name
    assert interpolate(model, output, *keyframe_paths(inputs, "k0", "k1", "k2"), "--loop") == 0
    with Image.open(output) as animation:
        assert animation.info.get("loop") == 0  # 0: forever
        assert animation.n_frames == 3 * (3 - 1)  # the wrap back to k0 is the first frame, not a copy of it


def test_segment_batch_runs_in_chunks_with_the_same_frame_count(inputs: Path, model: Path, tmp_path: Path) -> None:
    paths = keyframe_paths(inputs, "k0", "k1", "k2", "k3")
    assert interpolate(model, tmp_path / "joint", *paths) == 0
    assert interpolate(model, tmp_path / "chunked", *paths, "--segment-batch", "1") == 0
    joint = np.stack([np.asarray(f) for f in read_video(tmp_path / "joint")])
    chunked = np.stack([np.asarray(f) for f in read_video(tmp_path / "chunked")])
    assert joint.shape == chunked.shape == (7, 64, 64, 3)
    assert not np.array_equal(joint, chunked)  # chunks draw their noise in turn: another video of the same length


BAD_SEQUENCES = {
    "one keyframe": (["k0"], [], ("got one keyframe", "k0.png", "at least two")),
    "different aspect": (["k0", "k1", "wide"], [], ("wide.png", "(96x64)", "k0.png", "crop them")),
    "loop back to the same file": (["k0", "k1", "k0"], ["--loop"], ("--loop", "k0.png", "drop it")),
    "loop back to the same image": (["k0", "k1", "k0_again"], ["--loop"], ("k0_again.png", "same image")),
    "unreadable middle keyframe": (["k0", "broken", "k2"], [], ("cannot read keyframe", "broken.png")),
    "missing middle keyframe": (["k0", "nowhere", "k2"], [], ("nowhere.png", "not found")),
    "segment batch zero": (["k0", "k1", "k2"], ["--segment-batch", "0"], ("`--segment-batch` must be at least 1",)),
}


@pytest.mark.parametrize("case", BAD_SEQUENCES.values(), ids=BAD_SEQUENCES.keys())
def test_bad_sequence_is_one_line_before_loading_and_writes_nothing(
    inputs: Path, model: Path, tmp_path: Path, capfd, monkeypatch, refuse_model_loading, case: tuple
) -> None:
    names, extra, fragments = case
    assert interpolate(model, tmp_path / "out.gif", *keyframe_paths(inputs, *names), *extra) == 2
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inbetween: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert os.listdir(tmp_path) == []
