"""Every front end makes a video from a tiny Wan folder (family read from its model_index.json): `inbetween
interpolate`, the app's generation (what its API calls), the ComfyUI nodes and `inbetween batch`."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from tiny_wan import save_tiny_wan

from inbetween.app.generation import Job, ModelSlot, RunFolders, generate
from inbetween.cli import main
from inbetween.comfyui import interpolate as comfy_interpolate
from inbetween.comfyui import load_model as comfy_load
from inbetween.model_config import ModelConfig
from inbetween.sequence import interpolate_sequence
from inbetween.video_io import read_video

SIZE, FRAMES = 32, 5
FLAGS = ["--num-frames", str(FRAMES), "--height", str(SIZE), "--width", str(SIZE), "--steps", "2", "--quiet"]
OPTIONS = dict(num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=2)


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory) -> Path:
    return save_tiny_wan(tmp_path_factory.mktemp("wan") / "wan22", "wan2.2-a14b")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("keyframes")
    for index in range(3):
        rng = np.random.default_rng(index)
        PIL.Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype("uint8")).save(folder / f"k{index}.png")
    return folder


def test_interpolate_makes_a_video_and_takes_a_prompt(wan_folder, files, tmp_path):
    keyframes = [str(files / f"k{i}.png") for i in range(3)]
    out = tmp_path / "wan.mp4"
    command = ["interpolate", *keyframes, "-o", str(out), "--model", str(wan_folder), "--prompt", "a ball", *FLAGS]
    assert main(command) == 0
    assert len(read_video(out)) == 2 * (FRAMES - 1) + 1
    looped = tmp_path / "loop.mp4"
    assert main([*command[:5], str(looped), *command[6:], "--loop", "--preset", "fast"]) == 0
    assert len(read_video(looped)) == 3 * (FRAMES - 1)


def test_interpolate_refuses_a_frame_count_the_vae_cannot_take_before_loading(wan_folder, files, tmp_path, capsys):
    keyframes = [str(files / "k0.png"), str(files / "k1.png")]
    args = ["interpolate", *keyframes, "-o", str(tmp_path / "x.mp4"), "--model", str(wan_folder), *FLAGS]
    assert main([*args, "--num-frames", "6"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("got 6; try 5 or 9") and "4k + 1" in err[-1]
    assert not (tmp_path / "x.mp4").exists()


def test_the_app_generates_from_a_wan_model_and_its_command_remakes_it(wan_folder, files, tmp_path, monkeypatch):
    from inbetween.app import load_model

    slot = ModelSlot(ModelConfig(str(wan_folder), device="cpu"), load_model)
    slot.start()
    names = ("k0.png", "k1.png")
    job = Job(tuple(str(files / n) for n in names), names, preset="fast", options=dict(OPTIONS, prompt="a ball"))
    result = generate(slot, job, RunFolders(tmp_path / "app"))
    assert len(result.frames) == FRAMES and "--prompt" in result.command
    monkeypatch.chdir(files)  # the command names the keyframes as uploaded
    words = shlex.split(result.command)
    out = words.index("-o")
    words[out + 1] = str(tmp_path / "shell.mp4")
    assert main([*words[1:], "--quiet"]) == 0
    assert len(read_video(tmp_path / "shell.mp4")) == FRAMES


def test_the_comfyui_nodes_give_the_librarys_frames_with_a_prompt(wan_folder, files):
    (pipe,) = comfy_load(model=str(wan_folder), device="cpu")
    images = torch.stack([torch.from_numpy(np.array(PIL.Image.open(files / f"k{i}.png"))) for i in range(2)])
    images = images.float() / 255.0  # ComfyUI's IMAGE (B, H, W, C) in [0, 1]
    (frames,) = comfy_interpolate(
        pipe,
        images,
        preset="fast",
        seed=3,
        frames_per_segment=FRAMES,
        width=SIZE,
        height=SIZE,
        steps=2,
        prompt="a ball",
    )
    config = pipe.default_config()
    from inbetween import SamplingConfig

    expected = interpolate_sequence(
        pipe,
        images.movedim(-1, 1),
        SamplingConfig.preset("fast", config, prompt="a ball", **OPTIONS),
        generator=torch.Generator().manual_seed(3),
        output_type="pt",
    )
    assert frames.shape == (FRAMES, SIZE, SIZE, 3)
    torch.testing.assert_close(frames, expected.movedim(1, -1).float(), rtol=0, atol=1e-6)


def test_batch_renders_a_wan_shot_list(wan_folder, files, tmp_path):
    shots = tmp_path / "shots.csv"
    shots.write_text("name,keyframes,prompt\na,k0.png;k1.png,a ball\nb,k0.png;k1.png;k2.png,\n")
    for name in ("k0.png", "k1.png", "k2.png"):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    out = tmp_path / "out"
    assert main(["batch", str(shots), "-o", str(out), "--model", str(wan_folder), "--format", "png", *FLAGS]) == 0
    assert len(read_video(out / "a")) == FRAMES
    assert len(read_video(out / "b")) == 2 * (FRAMES - 1) + 1
