"""The ComfyUI nodes (inbetween.comfyui) as functions on tensors: the library's frames, ComfyUI's conventions,
progress and cancel per step, one-line errors; and the pack's entry point as ComfyUI imports it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inbetween.comfyui import (
    NODE_CLASS_MAPPINGS,
    InbetweenError,
    InbetweenInterpolate,
    LoadInbetweenModel,
    StepHooks,
    interpolate,
    keyframe_batch,
    load_model,
)
from inbetween.config import PRESETS, SamplingConfig
from inbetween.sequence import interpolate_sequence

REPO = Path(__file__).resolve().parent.parent
QUICK = dict(preset="fast", steps=2)


@pytest.fixture(scope="module")
def pipe():
    return load_model("tiny-world")[0]


def images(count: int, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    """A ComfyUI IMAGE batch ``(B, H, W, 3)`` in [0, 1]."""
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("count, loop", [(2, False), (3, False), (3, True)])
def test_the_node_gives_the_librarys_frames_as_an_image_batch(pipe, count: int, loop: bool) -> None:
    keys = images(count)
    (frames,) = interpolate(pipe, keys, loop=loop, seed=7, **QUICK, hooks=StepHooks())
    config = SamplingConfig.preset("fast", num_inference_steps=2)
    library = interpolate_sequence(
        pipe, keyframe_batch(keys), config, loop=loop, generator=torch.Generator().manual_seed(7), output_type="pt"
    )
    assert torch.equal(frames, library.movedim(1, -1))  # the same frames, bit for bit
    num_frames = pipe.unet.config.num_frames
    length = count * (num_frames - 1) if loop else (count - 1) * (num_frames - 1) + 1
    assert frames.shape == (length, 32, 32, 3) and frames.dtype == torch.float32 and frames.device.type == "cpu"
    assert 0 <= frames.min() and frames.max() <= 1


def test_same_seed_same_frames_and_the_inputs_reach_the_sampler(pipe) -> None:
    keys = images(2)
    a = interpolate(pipe, keys, seed=3, **QUICK, hooks=StepHooks())[0]
    assert torch.equal(a, interpolate(pipe, keys, seed=3, **QUICK, hooks=StepHooks())[0])
    assert not torch.equal(a, interpolate(pipe, keys, seed=4, **QUICK, hooks=StepHooks())[0])
    sized = interpolate(pipe, keys, frames_per_segment=5, width=64, height=32, **QUICK, hooks=StepHooks())[0]
    assert sized.shape == (5, 32, 64, 3)
    ends = interpolate(pipe, keys, options="exact_ends=true", **QUICK, hooks=StepHooks())[0]
    expected = keys.clamp(0, 1)
    torch.testing.assert_close(ends[[0, -1]], expected, atol=1e-6, rtol=0)  # the keyframes' own pixels
    # An IMAGE with an alpha channel and a second batch appended: the keyframes in order, RGB only.
    more = images(1, seed=9)
    rgba = torch.cat([keys[:1], torch.ones(1, 32, 32, 1)], -1)
    joined = interpolate(pipe, rgba, more_keyframes=more, **QUICK, hooks=StepHooks())[0]
    alone = interpolate(pipe, torch.cat([keys[:1], more]), **QUICK, hooks=StepHooks())[0]
    assert torch.equal(joined, alone)


def test_progress_advances_per_step_and_cancel_stops_after_the_current_step(pipe) -> None:
    seen = []
    interpolate(pipe, images(3), **QUICK, segment_batch=1, hooks=StepHooks(progress=lambda d, t: seen.append((d, t))))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 2 segments in turn, 2 steps each

    class Interrupted(Exception):
        pass

    steps = []

    def check() -> None:
        if steps:
            raise Interrupted  # ComfyUI's cancel button: the check raises from the next step end on

    with pytest.raises(Interrupted):
        interpolate(
            pipe,
            images(2),
            preset="fast",
            steps=5,
            hooks=StepHooks(progress=lambda d, t: steps.append(d), check=check),
        )
    assert steps == [1]  # the first step finished, nothing after it ran


@pytest.mark.parametrize(
    "inputs, message",
    [
        (dict(keyframes=images(1)), "got 1 keyframe; give at least two"),
        (dict(keyframes=images(1), more_keyframes=images(1, 32, 64)), "different aspect ratios"),
        (dict(keyframes=images(2), options="fusion"), "is not name=value"),
        (dict(keyframes=images(2), options="num_inference_steps=3"), "with the node's `steps` input"),
        (dict(keyframes=images(2), options="fusion=nope"), "`fusion` must be one of"),
        (dict(keyframes=images(2), options="warp=3"), "unknown sampling option `warp`"),
        (dict(keyframes=images(2), width=30), "multiple of"),
        (dict(keyframes=images(2), width=65536, height=65536), "this call needs about"),
        (dict(keyframes=images(2), preset="nope"), "unknown preset"),
    ],
)
def test_bad_input_is_one_line(pipe, inputs: dict, message: str) -> None:
    with pytest.raises(InbetweenError, match=message) as error:
        interpolate(pipe, **{**QUICK, **inputs, "hooks": StepHooks()})
    assert "\n" not in str(error.value)


def test_the_loader_takes_the_models_flags_and_says_what_is_missing_in_one_line(tmp_path) -> None:
    # ComfyUI passes a node's inputs by name; the optional ones (variant, device, group offload) may be missing from
    # old workflows.
    (pipe,) = LoadInbetweenModel().load(model="tiny-world", adapter="", dtype="float32", cpu_offload=False)
    assert pipe.has_backward_adapter and pipe.unet.dtype == torch.float32
    inputs = LoadInbetweenModel.INPUT_TYPES()
    assert list(inputs["required"]) == ["model", "adapter", "dtype", "cpu_offload"]  # saved workflows' widget order
    assert set(inputs["optional"]) == {"variant", "device", "group_offload"}
    with pytest.raises(InbetweenError, match="not found") as error:
        load_model("tiny-world", str(tmp_path / "missing.safetensors"))
    assert "\n" not in str(error.value)
    with pytest.raises(InbetweenError, match="nowhere"):
        load_model(str(tmp_path / "nowhere"))


def test_keyframes_within_the_pipelines_aspect_tolerance_are_taken_and_brought_to_the_firsts_size() -> None:
    """The pipeline's rule (2 %), not exact equality: a 64x64 and a 64x65 keyframe are one aspect."""
    frames = keyframe_batch(images(1, 64, 64), images(1, 65, 64, seed=1))
    assert frames.shape == (2, 3, 64, 64)
    with pytest.raises(InbetweenError, match=r"keyframe 2 \(64x68\) and the first \(64x64\): .*different aspect"):
        keyframe_batch(images(1, 64, 64), images(1, 68, 64, seed=1))  # 6 % off


def test_the_nodes_declare_what_comfyui_reads() -> None:
    for name, node in NODE_CLASS_MAPPINGS.items():
        inputs = node.INPUT_TYPES()
        assert callable(getattr(node(), node.FUNCTION)) and len(node.RETURN_TYPES) == len(node.RETURN_NAMES)
        assert all(isinstance(spec, tuple) for group in inputs.values() for spec in group.values()), name
    required = InbetweenInterpolate.INPUT_TYPES()["required"]
    assert required["preset"][0] == tuple(PRESETS) and required["keyframes"][0] == "IMAGE"
    assert InbetweenInterpolate.RETURN_TYPES == ("IMAGE",)
    assert LoadInbetweenModel.RETURN_TYPES[0] == required["pipeline"][0]


def test_the_checkout_is_a_node_pack_comfyui_can_import(monkeypatch) -> None:
    """ComfyUI imports each folder of custom_nodes/ as a package and reads its NODE_CLASS_MAPPINGS."""
    spec = importlib.util.spec_from_file_location(
        "inbetween_pack", REPO / "__init__.py", submodule_search_locations=[]
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "inbetween_pack", module)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS is NODE_CLASS_MAPPINGS
    assert set(module.NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_CLASS_MAPPINGS)


def test_a_clone_named_like_the_library_still_loads_the_library(tmp_path) -> None:
    """ComfyUI registers a pack in sys.modules under its folder's name: a clone into custom_nodes/inbetween takes the
    library's name, and the pack must still find the library (in a fresh Python, as ComfyUI starts)."""
    for folder in ("inbetween", "comfyui-inbetween"):
        (tmp_path / folder).symlink_to(REPO, target_is_directory=True)
    loader = f"""
import importlib.util, sys
sys.path.insert(0, {str(tmp_path)!r})  # as if custom_nodes/ were on the path too
spec = importlib.util.spec_from_file_location("FOLDER", {str(tmp_path)!r} + "/FOLDER/__init__.py")
pack = importlib.util.module_from_spec(spec)
sys.modules["FOLDER"] = pack  # what ComfyUI's loader does
spec.loader.exec_module(pack)
import inbetween.app  # a module the nodes import lazily, when they run
print(sorted(pack.NODE_CLASS_MAPPINGS), sys.modules["inbetween"].__file__)
"""
    for folder in ("inbetween", "comfyui-inbetween"):  # the library's name, and another
        run = subprocess.run([sys.executable, "-c", loader.replace("FOLDER", folder)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert "['InbetweenInterpolate', 'LoadInbetweenModel']" in run.stdout
        assert run.stdout.strip().endswith(str(Path("src", "inbetween", "__init__.py")))


def test_the_packs_requirements_are_the_librarys_dependencies_without_torch() -> None:
    """ComfyUI-Manager installs requirements.txt into ComfyUI's Python: it must not replace ComfyUI's torch, and it
    must not fall behind pyproject.toml."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (REPO / "requirements.txt").read_text().splitlines()
    pack = [line for line in lines if line.strip() and not line.startswith("#")]
    assert pack == [dependency for dependency in project if re.split("[<>=!~ ]", dependency)[0] != "torch"]
