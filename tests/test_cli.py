"""Tests for the `inbetween` command: a tiny SVD folder, real files, `main([...])` in-process, one real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from conftest import random_adapter, random_keyframe
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.utils import logging as diffusers_logging
from safetensors import safe_open
from safetensors.torch import save_file
from tiny import FAST_CLI, tiny_unet

from inbetween import BackwardAdapter, InbetweenPipeline, __version__
from inbetween.attention import temporal_self_attention_names
from inbetween.cli import main
from inbetween.video_io import read_video

FAST = FAST_CLI


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP waits make them 20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(tiny_svd_folder: Path) -> Path:
    return tiny_svd_folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Keyframes and broken inputs, outside the output folders whose listings the tests compare."""
    folder = tmp_path_factory.mktemp("inputs")
    random_keyframe(0).save(folder / "first.png")
    random_keyframe(1).save(folder / "last.png")
    random_keyframe(2, size=(96, 64)).save(folder / "wide_first.png")
    random_keyframe(3, size=(96, 64)).save(folder / "wide_last.png")
    (folder / "text.png").write_text("not an image")
    save_file({"weight": torch.zeros(2, 2)}, str(folder / "plain.safetensors"))  # valid file, not an adapter
    (folder / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    random_adapter(tiny_unet()).save(folder / "adapter.safetensors")
    other_unet = UNetSpatioTemporalConditionModel.from_config({**tiny_unet().config, "block_out_channels": (64, 128)})
    random_adapter(other_unet).save(folder / "other_adapter.safetensors")
    return folder


def interpolate(inputs: Path, model: Path, output: Path, *extra: str, first: str = "first.png") -> int:
    return main(
        [
            "interpolate",
            str(inputs / first),
            str(inputs / "last.png"),
            "-o",
            str(output),
            "--model",
            str(model),
            *FAST,
            "--quiet",
            *extra,
        ]
    )


def frames_of(path: Path) -> np.ndarray:
    return np.stack([np.asarray(frame) for frame in read_video(path)])


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inbetween: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def baseline(inputs: Path, model: Path, tmp_path_factory) -> np.ndarray:
    """Frames of seed 0 without an adapter, the reference for the seed and adapter tests."""
    output = tmp_path_factory.mktemp("baseline") / "frames"
    assert interpolate(inputs, model, output, "--seed", "0") == 0
    return frames_of(output)


# --- successful runs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.mp4", "out.gif", "frames"])
def test_writes_the_requested_frames(inputs: Path, model: Path, tmp_path: Path, capfd, name: str) -> None:
    verbosity = diffusers_logging.get_verbosity()
    assert interpolate(inputs, model, tmp_path / name, "--num-frames", "4") == 0
    frames = frames_of(tmp_path / name)
    assert frames.shape == (4, 64, 64, 3)
    out, err = capfd.readouterr()
    assert out.strip() == f"wrote {tmp_path / name}: 4 frames, 64x64, 7 fps"
    assert err == ""  # --quiet: no progress bar, no warnings
    assert sorted(os.listdir(tmp_path)) == [name]  # no temporary files left behind
    assert diffusers_logging.get_verbosity() == verbosity  # --quiet does not outlive the command


def test_progress_bar_without_quiet(inputs: Path, model: Path, tmp_path: Path, capfd) -> None:
    args = [
        "interpolate",
        str(inputs / "first.png"),
        str(inputs / "last.png"),
        "-o",
        str(tmp_path / "v.gif"),
        "--model",
        str(model),
        *FAST,
    ]
    assert main(args) == 0
    assert "2/2" in capfd.readouterr().err


def test_same_seed_same_frames_other_seed_differs(inputs: Path, model: Path, tmp_path: Path, baseline) -> None:
    assert interpolate(inputs, model, tmp_path / "again", "--seed", "0") == 0
    assert interpolate(inputs, model, tmp_path / "other", "--seed", "1") == 0
    np.testing.assert_array_equal(frames_of(tmp_path / "again"), baseline)
    assert not np.array_equal(frames_of(tmp_path / "other"), baseline)


def test_adapter_changes_the_video(inputs: Path, model: Path, tmp_path: Path, baseline) -> None:
    assert interpolate(inputs, model, tmp_path / "adapted", "--adapter", str(inputs / "adapter.safetensors")) == 0
    adapted = frames_of(tmp_path / "adapted")
    assert adapted.shape == baseline.shape
    # The backward branch's W_v / W_o moved, so the fused video must too.
    assert not np.array_equal(adapted, baseline)


def test_missing_side_keeps_the_keyframe_aspect(inputs: Path, model: Path, tmp_path: Path) -> None:
    args = [
        "interpolate",
        str(inputs / "wide_first.png"),
        str(inputs / "wide_last.png"),
        "-o",
        str(tmp_path / "f"),
        "--model",
        str(model),
        *FAST[4:],
        "--height",
        "64",
        "--quiet",
    ]  # no --width
    assert main(args) == 0
    # The test model's sizes are multiples of 16 (read from its folder before it loads): 96x64 keeps its aspect.
    assert frames_of(tmp_path / "f").shape == (3, 64, 96, 3)


def test_existing_output_is_kept_without_overwrite_and_replaced_with_it(
    inputs: Path, model: Path, tmp_path: Path, capfd
) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old video")
    assert interpolate(inputs, model, target) == 2
    assert_one_line_error(capfd.readouterr().err, "already exists", "--overwrite")
    assert target.read_bytes() == b"old video"
    assert interpolate(inputs, model, target, "--overwrite") == 0
    assert len(read_video(target)) == 3
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]


# --- errors ----------------------------------------------------------------------------------------------------


def bad(*extra: str, expect: tuple[str, ...], first: str = "{inputs}/first.png", output: str = "{out}/out.mp4"):
    """One bad command line: FIRST, OUTPUT and extra flags (templates), and fragments the error must contain."""
    return first, output, extra, expect


BAD_INPUTS = {
    "missing keyframe": bad(first="{inputs}/missing.png", expect=("not found",)),
    "unreadable keyframe": bad(first="{inputs}/text.png", expect=("cannot read keyframe",)),
    "different aspect": bad(first="{inputs}/wide_first.png", expect=("(96x64)", "(64x64)", "crop them")),
    "unknown extension": bad(output="{out}/video.avi", expect=("unknown output extension",)),
    "missing parent": bad(output="{out}/nowhere/video.mp4", expect=("does not exist",)),
    "parent is a file": bad(output="{out}/a_file/video.mp4", expect=("is a file, not a folder",)),
    "too few frames": bad("--num-frames", "2", expect=("`--num-frames` must be at least 3",)),
    "no steps": bad("--steps", "0", expect=("`--steps` must be at least 1",)),
    "ratio above 1": bad("--noise-injection-ratio", "1.5", expect=("`--noise-injection-ratio` must be in [0, 1]",)),
    "ratio below 0": bad("--noise-injection-ratio", "-0.1", expect=("`--noise-injection-ratio`",)),
    "negative injections": bad("--noise-injection-steps", "-1", expect=("`--noise-injection-steps`",)),
    "height not multiple": bad("--height", "100", expect=("`--height` must be a positive multiple of 16", "try 96")),
    "width zero": bad("--width", "0", expect=("`--width`", "try 16")),
    "decode chunk zero": bad("--decode-chunk-size", "0", expect=("`--decode-chunk-size`",)),
    "fps zero": bad("--fps", "0", expect=("`--fps` must be at least 1",)),
    "output fps zero": bad("--output-fps", "0", expect=("`--output-fps` must be positive",)),
    "missing adapter": bad("--adapter", "{inputs}/nope.safetensors", expect=("adapter", "not found")),
    "not an adapter": bad("--adapter", "{inputs}/plain.safetensors", expect=("not an inbetween backward adapter",)),
    "corrupt adapter": bad("--adapter", "{inputs}/corrupt.safetensors", expect=("cannot read adapter",)),
    "offload on cpu": bad("--device", "cpu", "--cpu-offload", expect=("`--cpu-offload` needs a CUDA GPU",)),
    "no cuda": bad("--device", "cuda", expect=("`--device` cuda is not available",)),
    "no second gpu": bad("--device", "cuda:1", expect=("`--device` cuda:1 is not available",)),
    "unknown device": bad("--device", "tpu", expect=("`--device` must be auto, cpu, cuda, cuda:N or mps, got 'tpu'",)),
    "unknown dtype": bad("--dtype", "float64", expect=("`--dtype` must be one of auto, float32,", "got 'float64'")),
    "missing model folder": bad("--model", "{out}/no_such_model", expect=("not found", "hf download")),
    "offline hub id": bad("--model", "nobody/nonexistent-model", expect=("nobody/nonexistent-model", "hf download")),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_before_loading(
    inputs: Path, model: Path, tmp_path: Path, capfd, monkeypatch, refuse_model_loading, case: tuple
) -> None:
    (tmp_path / "a_file").write_text("")
    before = sorted(os.listdir(tmp_path))
    first, output, extra, fragments = case
    fill = {"inputs": inputs, "out": tmp_path}
    argv = [
        "interpolate",
        first.format(**fill),
        str(inputs / "last.png"),
        "-o",
        output.format(**fill),
        "--model",
        str(model),
        *FAST,
        *(arg.format(**fill) for arg in extra),
    ]
    assert main(argv) == 2
    assert_one_line_error(capfd.readouterr().err, *fragments)
    assert sorted(os.listdir(tmp_path)) == before


def test_adapter_for_another_unet_is_refused(inputs: Path, model: Path, tmp_path: Path, capfd) -> None:
    other = str(inputs / "other_adapter.safetensors")
    assert interpolate(inputs, model, tmp_path / "out.mp4", "--adapter", other) == 2
    assert_one_line_error(capfd.readouterr().err, "does not fit this UNet")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("variant", [None, "fp16"])
def test_unloadable_model_is_one_line(inputs: Path, model: Path, tmp_path: Path, capfd, variant: str | None) -> None:
    # An empty folder has no model_index.json; the tiny model has no fp16 weights.
    # (the empty folder is refused before loading: its family cannot be read)
    folder, start, expected = (
        (tmp_path / "empty_model", "has no model_index.json", "pass a diffusers model folder")
        if variant is None
        else (model, "cannot load an SVD pipeline", "fp16")
    )
    folder.mkdir(exist_ok=True)
    extra = ["--variant", variant] if variant else []
    assert interpolate(inputs, folder, tmp_path / "out.mp4", *extra) == 2
    assert_one_line_error(capfd.readouterr().err, start, expected)
    assert "out.mp4" not in os.listdir(tmp_path)


def test_out_of_memory_is_one_line_with_remedies(
    inputs: Path, model: Path, tmp_path: Path, capfd, monkeypatch
) -> None:
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(InbetweenPipeline, "__call__", out_of_memory)
    assert interpolate(inputs, model, tmp_path / "out.mp4") == 1
    assert_one_line_error(capfd.readouterr().err, "out of memory", "--split-guidance-batch", "--cpu-offload")
    assert os.listdir(tmp_path) == []


def test_debug_variable_shows_the_exception(inputs: Path, model: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("INBETWEEN_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        interpolate(inputs, model, tmp_path / "out.mp4", first="missing.png")


@pytest.mark.slow
def test_module_entry_point_prints_one_line_and_exits_2(inputs: Path, tmp_path: Path) -> None:
    # TRANSFORMERS_VERBOSITY hides transformers' import-time notice about torchvision, which is not ours to print.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    env.pop("INBETWEEN_DEBUG", None)
    argv = [
        sys.executable,
        "-m",
        "inbetween",
        "interpolate",
        str(inputs / "missing.png"),
        str(inputs / "last.png"),
        "-o",
        str(tmp_path / "out.mp4"),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert_one_line_error(result.stderr, "missing.png", "not found")
    assert os.listdir(tmp_path) == []


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"inbetween {__version__}"


# --- convert-checkpoint --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unets(tmp_path_factory) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """A base UNet folder, a fine-tuned one whose temporal W_v / W_o moved, and those moves."""
    folder = tmp_path_factory.mktemp("unets")
    base = tiny_unet()
    base.save_pretrained(folder / "base")
    tuned = tiny_unet()
    generator = torch.Generator().manual_seed(0)
    moves = {}
    for layer in temporal_self_attention_names(tuned):
        for param in ("to_v.weight", "to_out.0.weight"):
            weight = tuned.get_parameter(f"{layer}.{param}")
            moves[f"{layer}.{param}"] = torch.randn(weight.shape, generator=generator) * 0.1
            weight.data += moves[f"{layer}.{param}"]
    tuned.save_pretrained(folder / "tuned")
    return folder / "tuned", folder / "base", moves


def test_convert_checkpoint_stores_the_weight_moves(unets, tmp_path: Path, capsys) -> None:
    tuned, base, moves = unets
    output = tmp_path / "adapter.safetensors"
    assert main(["convert-checkpoint", str(tuned), "--base", str(base), "-o", str(output), "--dtype", "float32"]) == 0
    adapter = BackwardAdapter.load(output)
    assert sorted(adapter.deltas) == sorted(moves)  # unchanged biases are left out
    for key, move in moves.items():
        torch.testing.assert_close(adapter.deltas[key], move, atol=1e-6, rtol=0)
    parameters = sum(move.numel() for move in moves.values())
    layers = len(moves) // 2
    assert capsys.readouterr().out.startswith(f"wrote {output}: {layers} layers, {parameters:,} parameters, ")


def test_convert_checkpoint_dtype_follows_the_base_weights_unless_given(unets, tmp_path: Path, capsys) -> None:
    tuned, base, moves = unets
    base16 = tmp_path / "base16"
    tiny_unet().half().save_pretrained(base16, variant="fp16")  # the same base weights as SVD's fp16 variant
    convert = ["convert-checkpoint", str(tuned), "-o"]
    runs = {
        "fp32 base": (["--base", str(base)], torch.float32),
        "fp16 base": (["--base", str(base16), "--base-variant", "fp16"], torch.float16),
        "fp32 base, --dtype float16": (["--base", str(base), "--dtype", "float16"], torch.float16),
        "fp16 base, --dtype float32": (
            ["--base", str(base16), "--base-variant", "fp16", "--dtype", "float32"],
            torch.float32,
        ),
    }
    sizes = {}
    for name, (flags, dtype) in runs.items():
        output = tmp_path / f"{name}.safetensors"
        assert main([*convert, str(output), *flags]) == 0, name
        assert f" parameters, {str(dtype).removeprefix('torch.')}, " in capsys.readouterr().out, name
        adapter = BackwardAdapter.load(output)
        assert adapter.dtype == dtype and all(d.dtype == dtype for d in adapter.deltas.values()), name
        with safe_open(str(output), framework="pt") as f:
            assert f.metadata()["dtype"] == str(dtype).removeprefix("torch."), name
        for key, move in moves.items():  # fp16 storage or an fp16 base: within fp16 rounding of the weights
            torch.testing.assert_close(adapter.deltas[key].float(), move, atol=1e-3, rtol=1e-3)
        sizes[name] = output.stat().st_size
    assert 0.49 < sizes["fp16 base"] / sizes["fp32 base"] < 0.55  # about half: the JSON header is ~4 kB here
    for name, (_, dtype) in runs.items():  # the tensors' bytes: W_v / W_o only (unchanged biases left out)
        with open(tmp_path / f"{name}.safetensors", "rb") as f:
            header = int.from_bytes(f.read(8), "little")
        parameters = sum(move.numel() for move in moves.values())
        assert sizes[name] - 8 - header == parameters * dtype.itemsize, name


def test_convert_checkpoint_bad_inputs_are_one_line(unets, tmp_path: Path, capfd, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    tuned, base, _ = unets
    pickled = tmp_path / "pickled"
    tiny_unet().save_pretrained(pickled, safe_serialization=False)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "diffusion_pytorch_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"keep me")
    cases = [
        ([str(pickled), "--base", str(base)], "adapter.safetensors", "pickle (.bin)", "safetensors"),
        ([str(tmp_path / "nope"), "--base", str(base)], "adapter.safetensors", "not found"),
        ([str(corrupt), "--base", str(base)], "adapter.safetensors", "cannot read the UNet weights"),
        ([str(tuned), "--base", "nobody/nonexistent-model"], "adapter.safetensors", "hf download"),
        ([str(tuned), "--base", str(base)], "adapter.bin", "must end in .safetensors"),
        ([str(tuned), "--base", str(base)], "existing.safetensors", "already exists"),
    ]
    before = sorted(os.listdir(tmp_path))
    for sources, name, *fragments in cases:
        assert main(["convert-checkpoint", *sources, "-o", str(tmp_path / name)]) == 2, name
        assert_one_line_error(capfd.readouterr().err, *fragments)
    assert sorted(os.listdir(tmp_path)) == before
    assert existing.read_bytes() == b"keep me"


def test_top_level_help_imports_no_torch_or_diffusers():
    """`inbetween --help` answers at once: it loads none of the heavy libraries (was 9.2 s of imports)."""
    code = (
        "import sys; from inbetween.cli import main; code = main(['--help']); "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'cv2') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "interpolate" in result.stdout
    assert "HEAVY []" in result.stdout
