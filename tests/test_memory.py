"""The peak-memory estimate of a pipeline call and the check that refuses a call that cannot fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import random_keyframe

from inbetween import memory
from inbetween.config import SamplingConfig
from inbetween.hub import TINY_WORLD_FOLDER
from inbetween.memory import (
    MemoryEstimate,
    available_memory,
    check_call_fits,
    check_model_call,
    check_pipeline_call,
    estimate_call_memory,
    estimate_pipeline_call,
    format_bytes,
    unet_forward_bytes,
)
from inbetween.memory import available as memory_available
from inbetween.memory import check as memory_check

TESTS = Path(__file__).parent
TINY_WORLD_UNET = json.loads((TINY_WORLD_FOLDER / "unet" / "config.json").read_text())
TINY_WORLD_VAE = json.loads((TINY_WORLD_FOLDER / "vae" / "config.json").read_text())
# SVD's UNet (the class's defaults) and VAE (vae/config.json of stabilityai/stable-video-diffusion-img2vid-xt)
SVD_UNET = dict(block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, num_attention_heads=[5, 10, 20, 20])
SVD_VAE = dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4, force_upcast=True)
GB = 1e9


def svd_call(**shape) -> MemoryEstimate:
    """SVD-XT's call in float16: one pair, 25 frames at 1024x576, the 4-row guided dual batch, one UNet call."""
    arguments = dict(
        batch_size=1, num_frames=25, height=576, width=1024, rows_per_pair=4, calls=1, decode_chunk_size=None
    )
    return estimate_call_memory(SVD_UNET, SVD_VAE, **{**arguments, "dtype_bytes": 2, **shape})


def tiny_world_call(**shape) -> MemoryEstimate:
    arguments = dict(batch_size=1, num_frames=8, height=32, width=32, rows_per_pair=4, calls=1, decode_chunk_size=None)
    return estimate_call_memory(TINY_WORLD_UNET, TINY_WORLD_VAE, **{**arguments, "dtype_bytes": 4, **shape})


# scaling -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, size", [(svd_call, (576, 1024)), (tiny_world_call, (256, 256))])
def test_activations_grow_with_the_area_and_the_frames(call, size):
    height, width = size
    base = call(height=height, width=width, num_frames=14)
    double_size = call(height=2 * height, width=2 * width, num_frames=14)
    double_frames = call(height=height, width=width, num_frames=28)
    assert 3.6 < double_size.unet_bytes / base.unet_bytes < 4.4
    assert 3.6 < double_size.decode_bytes / base.decode_bytes < 4.4
    assert 3.6 < double_size.peak_bytes / base.peak_bytes < 4.4
    assert 1.8 < double_frames.unet_bytes / base.unet_bytes < 2.2
    assert 1.8 < double_frames.peak_bytes / base.peak_bytes < 2.2


def test_split_guidance_halves_the_unet_call_and_smaller_chunks_the_decode():
    whole, split = svd_call(), svd_call(calls=2)
    assert (whole.rows, split.rows) == (4, 2)
    assert 0.45 < split.unet_bytes / whole.unet_bytes < 0.55
    assert split.latent_bytes < whole.latent_bytes
    chunked = svd_call(decode_chunk_size=2)
    assert chunked.decode_bytes < whole.decode_bytes / 4
    assert svd_call(decode=False).decode_bytes == 0
    assert svd_call(batch_size=2).unet_bytes > 1.9 * whole.unet_bytes


def test_svd_xt_at_its_size_needs_gigabytes_dominated_by_the_unet_and_the_decode():
    estimate = svd_call()
    assert 5 * GB < estimate.unet_bytes < 40 * GB
    assert estimate.decode_bytes > estimate.unet_bytes / 4  # all 25 frames at once at 1024x576
    assert estimate.peak_bytes >= max(estimate.unet_bytes + estimate.latent_bytes, estimate.decode_bytes)
    assert estimate.peak_bytes < 1.5 * max(estimate.unet_bytes + estimate.latent_bytes, estimate.decode_bytes)
    assert "UNet activations" in estimate.describe()
    assert "for 4 rows x 25 frames at 128x72 latents" in estimate.describe()


def test_materialised_attention_maps_are_quadratic_in_the_tokens():
    plain, maps = svd_call(), svd_call(attention_matrices=True)
    assert maps.unet_bytes > 2 * plain.unet_bytes  # 9216 tokens at the finest level
    double = svd_call(attention_matrices=True, height=1152, width=2048)
    assert double.unet_bytes / maps.unet_bytes > 8


def test_the_heap_model_only_adds():
    for call in (svd_call, tiny_world_call):
        plain, heap = call(), call(cpu_heap=True)
        assert heap.peak_bytes >= plain.peak_bytes and heap.heap_bytes >= 0
    assert tiny_world_call(cpu_heap=True).heap_bytes > 0  # its tensors are all small


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="`num_frames` must be at least 1"):
        svd_call(num_frames=0)
    with pytest.raises(ValueError, match="`rows_per_pair` and `calls`"):
        svd_call(calls=0)


# the check -----------------------------------------------------------------------------------------------------


def test_a_huge_call_is_refused_in_one_line_with_the_estimate_the_memory_and_the_knobs():
    estimate = tiny_world_call(height=100_000, width=100_000)
    with pytest.raises(ValueError) as error:
        check_call_fits(estimate, available=int(21.7 * GB))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"this call needs about {format_bytes(estimate.peak_bytes)} (UNet activations ")
    assert "for 4 rows x 8 frames at 50000x50000 latents" in message
    assert "but 21.7 GB is available" in message
    for knob in (
        "`height`/`width`",
        "`num_frames`",
        "`split_guidance_batch`",
        "`decode_chunk_size`",
        "`allow_oversize`",
    ):
        assert knob in message
    assert estimate.peak_bytes > 100e12  # 10^10 latent pixels per frame


def test_knobs_already_used_are_not_offered():
    estimate = tiny_world_call(height=100_000, width=100_000, calls=2, decode_chunk_size=1)
    with pytest.raises(ValueError) as error:
        check_call_fits(estimate, available=int(GB))
    assert "split_guidance_batch" not in str(error.value) and "decode_chunk_size" not in str(error.value)
    unguided = tiny_world_call(height=100_000, width=100_000, rows_per_pair=2, guided=False)
    with pytest.raises(ValueError) as error:
        check_call_fits(unguided, available=int(GB))
    assert "split_guidance_batch" not in str(error.value) and "decode_chunk_size" in str(error.value)


def test_allow_oversize_and_unknown_memory_skip_the_check():
    estimate = tiny_world_call(height=100_000, width=100_000)
    with pytest.raises(ValueError):  # the control: this call does not fit
        check_call_fits(estimate, available=int(GB))
    assert check_call_fits(estimate, available=int(GB), allow_oversize=True) is None
    assert check_call_fits(estimate, available=None) is None


def test_a_margin_is_kept():
    estimate = tiny_world_call()
    check_call_fits(estimate, available=estimate.peak_bytes * 1.2)
    with pytest.raises(ValueError):
        check_call_fits(estimate, available=estimate.peak_bytes * 1.05)


def test_a_realistic_tiny_call_fits_this_machine():
    estimate = tiny_world_call(cpu_heap=True)
    assert estimate.peak_bytes < 0.5 * GB
    check_call_fits(estimate, available_memory("cpu"))


def test_available_memory_reads_proc_meminfo_without_psutil(monkeypatch):
    with_psutil = available_memory("cpu")
    assert 0 < with_psutil
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    without = available_memory("cpu")
    assert 0 < without and abs(without - with_psutil) < 0.5 * with_psutil + 1e9
    assert available_memory("meta") is None


def test_a_cgroup_limit_caps_the_available_memory(monkeypatch, tmp_path):
    (tmp_path / "max").write_text("2000000000\n")
    (tmp_path / "current").write_text("1500000000\n")
    (tmp_path / "stat").write_text("anon 1000\ninactive_file 100000000\n")
    files = ((str(tmp_path / "max"), str(tmp_path / "current"), str(tmp_path / "stat"), "inactive_file"),)
    monkeypatch.setattr(memory_available, "CGROUP_FILES", files)
    assert memory_available._cgroup_headroom() == 600_000_000
    assert available_memory("cpu") <= 600_000_000
    (tmp_path / "max").write_text("max\n")
    assert memory_available._cgroup_headroom() is None


def test_the_pipeline_check_refuses_before_anything_is_allocated_and_names_the_largest_size_that_fits(
    tiny_pipe, monkeypatch
):
    monkeypatch.setattr(memory_check, "available_memory", lambda device: 8 * 10**9)
    config = tiny_pipe.sampling_config(random_keyframe(0), height=100_000, width=100_000, num_frames=8)
    estimate = estimate_pipeline_call(tiny_pipe, config)
    assert estimate.rows == 4 and estimate.latent_height == 100_000 // 8 and estimate.weight_bytes == 0
    with pytest.raises(ValueError, match="but 8.0 GB is available .about .* fits at this aspect") as error:
        check_pipeline_call(tiny_pipe, config)
    width, height = (int(side) for side in str(error.value).split("(about ")[1].split(" fits")[0].split("x"))
    multiple = tiny_pipe.size_multiple
    assert height == width and height % multiple == 0

    def peak(side: int) -> int:
        sized = tiny_pipe.sampling_config(random_keyframe(0), height=side, width=side, num_frames=8)
        return check_pipeline_call(tiny_pipe, sized, allow_oversize=True).peak_bytes

    assert peak(height) <= memory.MARGIN * 8e9 < peak(height + multiple)
    assert check_pipeline_call(tiny_pipe, config, allow_oversize=True) == estimate
    small = tiny_pipe.sampling_config(random_keyframe(0), height=64, width=64, num_frames=8)
    assert check_pipeline_call(tiny_pipe, small, output_type="latent").decode_bytes == 0
    monkeypatch.setattr(memory_check, "available_memory", lambda device: 10**6)
    with pytest.raises(ValueError, match="not even the smallest size fits"):
        check_pipeline_call(tiny_pipe, small)


def test_the_model_check_refuses_the_reported_call_before_the_model_loads(monkeypatch):
    """`inbetween interpolate a.png b.png -o h.mp4 --model tiny-world --height 100000 --width 100000`."""
    monkeypatch.setattr(memory_check, "available_memory", lambda device: 16 * 10**9)
    huge = SamplingConfig(height=100_000, width=100_000)
    with pytest.raises(ValueError, match=r"needs about .* TB .*for 4 rows x 8 frames at 50000x50000 latents"):
        check_model_call(TINY_WORLD_UNET, TINY_WORLD_VAE, huge, "cpu", 4)
    estimate = check_model_call(TINY_WORLD_UNET, TINY_WORLD_VAE, huge, "cpu", 4, allow_oversize=True)
    assert estimate.num_frames == 8 and estimate.decode_chunk_size == 8  # the model's frame count
    fitting = check_model_call(TINY_WORLD_UNET, TINY_WORLD_VAE, SamplingConfig(height=32, width=32), "cpu", 4)
    assert fitting.peak_bytes < 10**9


# calibration: the estimate against a measured forward ------------------------------------------------------------

MEASURE = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from tiny import tiny_unet
from inbetween.attention import dual_mode, install_rotation

torch.set_num_threads(1)
rows, frames, size = 4, 8, 32
unet = tiny_unet().eval().requires_grad_(False)
install_rotation(unet)
config = unet.config
sample = torch.randn(rows, frames, config.in_channels, size, size)
context, time_ids = torch.randn(rows, 1, config.cross_attention_dim), torch.randn(rows, 3)

def status(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field + ":"))

before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
with torch.no_grad(), dual_mode(unet):
    out = unet(sample, torch.tensor(1.0), context, time_ids, return_dict=False)[0]
print(json.dumps({"peak": status("VmHWM") - before, "config": {k: v for k, v in config.items() if k[0] != "_"}}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs")
@pytest.mark.parametrize("allocator", ["live", pytest.param("malloc", marks=pytest.mark.slow)])
def test_the_estimate_bounds_a_measured_unet_forward_within_3x(allocator):
    """One dual-mode forward of the tests' tiny UNet (4 rows x 8 frames at 32x32 latents), in its own process: its
    peak resident memory above what was resident before it, with every tensor its own mapping (``live``) or
    glibc's default heap (``malloc``, estimated with ``cpu_heap``). The properties: the estimate is never below
    the measured peak (the memory check's promise: what it lets through fits), and at most 3x above it (looser,
    the check would refuse calls that fit by more than the knobs it offers recover)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if allocator == "live":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(TESTS)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    estimate = unet_forward_bytes(result["config"], rows=4, frames=8, h=32, w=32, cpu_heap=allocator == "malloc")
    assert result["peak"] <= estimate <= 3 * result["peak"], (format_bytes(estimate), format_bytes(result["peak"]))
