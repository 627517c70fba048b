import logging

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import random_adapter, random_keyframe
from reference import NaiveInbetween
from tiny import save_tiny_svd, tiny_components

from inbetween import InbetweenPipeline
from inbetween.families.base import SizeRules

FAST = dict(height=64, width=64, num_inference_steps=3, noise_injection_steps=2, noise_injection_ratio=0.5)


@pytest.fixture(scope="module")
def adapted_pipe():
    pipe = InbetweenPipeline(**tiny_components())
    pipe.set_progress_bar_config(disable=True)
    adapter = random_adapter(pipe.unet)
    pipe.load_backward_adapter(adapter)
    return pipe, adapter


def run_both(pipe, adapter, first, last, **kwargs):
    args = {**FAST, **kwargs}
    ours = pipe(first, last, generator=torch.manual_seed(0), output_type="latent", **args).frames
    args.pop("split_guidance_batch", None)  # a memory option of ours only; the result must not depend on it
    naive = NaiveInbetween(pipe, adapter)(first, last, generator=torch.manual_seed(0), **args)
    return ours, naive


@pytest.mark.parametrize(
    "case",
    [
        dict(num_frames=8),
        dict(num_frames=8, max_guidance_scale=1.0),
        dict(num_frames=8, fusion="linear"),
        dict(num_frames=8, fusion="linear", min_guidance_scale=1.5, max_guidance_scale=2.5),
        dict(num_frames=14),
        dict(num_frames=25),
        dict(num_frames=8, noise_injection_steps=0),
        dict(num_frames=8, fusion="forward"),
        dict(num_frames=8, fusion="backward"),
        dict(num_frames=8, fusion="backward", max_guidance_scale=1.0),
        dict(num_frames=8, shared_unconditional=True),
        dict(num_frames=8, fusion="linear", shared_unconditional=True, split_guidance_batch=True),
        dict(num_frames=8, fusion="backward", shared_unconditional=True),
    ],
    ids=[
        "cfg-average",
        "no-cfg",
        "cfg-linear",
        "cfg-linear-ramp",
        "14-frames",
        "25-frames",
        "no-reinjection",
        "forward-only",
        "backward-only",
        "backward-only-no-cfg",
        "shared-uncond",
        "shared-uncond-linear-split",
        "shared-uncond-backward-only",
    ],
)
def test_matches_naive_reference(adapted_pipe, keyframes, case):
    pipe, adapter = adapted_pipe
    ours, naive = run_both(pipe, adapter, *keyframes, **case)
    assert ours.shape == (1, case["num_frames"], 4, 8, 8)
    assert (ours - naive).abs().max().item() <= 1e-4


def test_matches_naive_reference_for_a_batch_of_pairs(adapted_pipe):
    pipe, adapter = adapted_pipe
    firsts = [random_keyframe(10), random_keyframe(11)]
    lasts = [random_keyframe(12), random_keyframe(13)]
    ours, naive = run_both(pipe, adapter, firsts, lasts, num_frames=8)
    assert ours.shape[0] == 2
    assert (ours - naive).abs().max().item() <= 1e-4
    assert (ours[0] - ours[1]).abs().max() > 1e-2  # the pairs really differ


def test_matches_naive_reference_without_adapter(tiny_pipe, keyframes):
    ours, naive = run_both(tiny_pipe, None, *keyframes, num_frames=8)
    assert (ours - naive).abs().max().item() <= 1e-4


@pytest.mark.parametrize("split", [False, True], ids=["one-call", "split-guidance"])
@pytest.mark.parametrize("fusion", ["average", "backward"])
def test_time_reversal_fusion_matches_naive_reference(tiny_pipe, keyframes, fusion, split):
    # rotation=False: the backward branch attends with its own maps and base weights (TRF).
    ours, naive = run_both(
        tiny_pipe, None, *keyframes, num_frames=8, fusion=fusion, rotation=False, split_guidance_batch=split
    )
    assert (ours - naive).abs().max().item() <= 1e-4


def test_forward_only_ignores_the_last_keyframe_and_the_adapter(adapted_pipe, tiny_pipe, keyframes):
    pipe, _ = adapted_pipe
    first, last = keyframes
    args = dict(FAST, num_frames=8, fusion="forward", output_type="latent")
    a = pipe(first, last, generator=torch.manual_seed(0), **args).frames
    b = pipe(first, random_keyframe(99), generator=torch.manual_seed(0), **args).frames
    c = tiny_pipe(first, last, generator=torch.manual_seed(0), **args).frames
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    fused = pipe(first, last, generator=torch.manual_seed(0), **{**args, "fusion": "average"}).frames
    assert (a - fused).abs().max() > 1e-2


def test_adapter_changes_the_result(adapted_pipe, tiny_pipe, keyframes):
    pipe, _ = adapted_pipe
    with_adapter = pipe(*keyframes, generator=torch.manual_seed(0), output_type="latent", num_frames=8, **FAST)
    without = tiny_pipe(*keyframes, generator=torch.manual_seed(0), output_type="latent", num_frames=8, **FAST)
    assert (with_adapter.frames - without.frames).abs().max() > 1e-3


def test_split_guidance_batch_gives_the_same_video(adapted_pipe, keyframes):
    pipe, _ = adapted_pipe
    one = pipe(*keyframes, generator=torch.manual_seed(3), output_type="latent", num_frames=8, **FAST).frames
    two = pipe(
        *keyframes,
        generator=torch.manual_seed(3),
        output_type="latent",
        num_frames=8,
        split_guidance_batch=True,
        **FAST,
    ).frames
    torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-5)


def test_same_seed_same_frames_other_seed_other_frames(adapted_pipe, keyframes):
    pipe, _ = adapted_pipe

    def run(seed):
        return pipe(*keyframes, generator=torch.manual_seed(seed), output_type="np", num_frames=4, **FAST).frames

    a, b, c = run(5), run(5), run(6)
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_output_types(tiny_pipe, keyframes):
    common = dict(num_frames=4, **{**FAST, "noise_injection_steps": 0})
    pil = tiny_pipe(*keyframes, output_type="pil", generator=torch.manual_seed(0), **common).frames
    assert len(pil) == 1 and len(pil[0]) == 4 and pil[0][0].size == (64, 64)
    np_frames = tiny_pipe(*keyframes, output_type="np", generator=torch.manual_seed(0), **common).frames
    assert np_frames.shape == (1, 4, 64, 64, 3) and 0 <= np_frames.min() and np_frames.max() <= 1
    pt = tiny_pipe(*keyframes, output_type="pt", generator=torch.manual_seed(0), **common).frames
    assert pt.shape == (1, 4, 3, 64, 64)
    np.testing.assert_allclose(pt.permute(0, 1, 3, 4, 2).numpy(), np_frames, atol=1e-6)
    (latent,) = tiny_pipe(
        *keyframes, output_type="latent", return_dict=False, generator=torch.manual_seed(0), **common
    )
    assert latent.shape == (1, 4, 4, 8, 8)


def test_decode_chunk_size_does_not_mix_videos(tiny_pipe):
    latents = torch.randn(2, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    together = tiny_pipe.decode_latents(latents, decode_chunk_size=4)
    alone = tiny_pipe.decode_latents(latents[1:], decode_chunk_size=4)
    assert together.shape == (2, 3, 4, 64, 64)
    torch.testing.assert_close(together[1:], alone, rtol=1e-4, atol=1e-5)


def test_default_size_keeps_the_aspect():
    svd = SizeRules(multiple=64, long_side=1024, num_frames=25)  # SVD-XT's rules
    assert svd.default_size(PIL.Image.new("RGB", (1920, 1080)), None, None) == (576, 1024)
    assert svd.default_size(PIL.Image.new("RGB", (480, 854)), None, None) == (1024, 576)
    assert svd.default_size(PIL.Image.new("RGB", (300, 300)), None, None) == (1024, 1024)
    assert svd.default_size(torch.zeros(1, 3, 100, 200), None, None) == (512, 1024)
    assert svd.default_size(PIL.Image.new("RGB", (1920, 1080)), None, 448) == (256, 448)


def test_the_pipeline_sizes_by_its_models_rules(tiny_pipe):
    rules = tiny_pipe.size_rules
    expected = rules.default_size(PIL.Image.new("RGB", (200, 100)), None, None)
    assert tiny_pipe.default_size(PIL.Image.new("RGB", (200, 100))) == expected
    assert expected[1] == rules.long_side and expected[1] % rules.multiple == 0


def test_callback_sees_every_step_and_can_replace_latents(tiny_pipe, keyframes):
    steps = []

    def callback(pipe, step, sigma, tensors):
        steps.append(step)
        return {"latents": torch.zeros_like(tensors["latents"])}

    out = tiny_pipe(
        *keyframes,
        num_frames=4,
        output_type="latent",
        callback_on_step_end=callback,
        generator=torch.manual_seed(0),
        **FAST,
    ).frames
    assert steps == [0, 1, 2]
    assert torch.count_nonzero(out) == 0


def fresh_pipe() -> InbetweenPipeline:
    """A pipeline that has warned about nothing yet (the warnings come once per pipeline)."""
    pipe = InbetweenPipeline(**tiny_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_warns_without_adapter(keyframes, caplog):
    pipe = fresh_pipe()
    with caplog.at_level(logging.WARNING):
        pipe(*keyframes, num_frames=4, output_type="latent", **{**FAST, "num_inference_steps": 1})
    assert "no backward adapter" in caplog.text


def test_adapter_warnings_come_once_per_adapter_state(keyframes, caplog):
    run = dict(num_frames=4, output_type="latent", **{**FAST, "num_inference_steps": 1})
    tiny_pipe = fresh_pipe()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            tiny_pipe(*keyframes, **run)
    assert caplog.text.count("no backward adapter") == 1
    caplog.clear()
    tiny_pipe.load_backward_adapter(random_adapter(tiny_pipe.unet))
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            tiny_pipe(*keyframes, rotation=False, **run)
        tiny_pipe(*keyframes, **run)  # the adapter is used: nothing to say
    assert caplog.text.count("the loaded adapter is unused") == 1 and "no backward adapter" not in caplog.text
    tiny_pipe.unload_backward_adapter()  # toggling the adapter (as the evaluation does per pair) says nothing new
    with caplog.at_level(logging.WARNING):
        tiny_pipe(*keyframes, **run)
    assert "no backward adapter" not in caplog.text


def test_a_positional_size_is_refused_with_the_keyword_fix(tiny_pipe, keyframes):
    with pytest.raises(ValueError, match="pass sampling options by keyword"):
        tiny_pipe(*keyframes, 64)  # an old-style positional height


def test_unknown_sampling_option_is_refused(tiny_pipe, keyframes):
    with pytest.raises(ValueError, match="unknown sampling option `num_steps`"):
        tiny_pipe(*keyframes, num_steps=3)


def test_loads_svd_folder_layout_and_round_trips(tmp_path, keyframes):
    folder = save_tiny_svd(tmp_path / "svd")
    pipe = InbetweenPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.num_frames == 8
    pipe.save_pretrained(tmp_path / "again")
    again = InbetweenPipeline.from_pretrained(tmp_path / "again")
    again.set_progress_bar_config(disable=True)
    args = dict(num_frames=4, output_type="latent", **FAST)
    a = pipe(*keyframes, generator=torch.manual_seed(0), **args).frames
    b = again(*keyframes, generator=torch.manual_seed(0), **args).frames
    assert torch.equal(a, b)
    default_frames = pipe(*keyframes, output_type="latent", **{**FAST, "num_inference_steps": 1}).frames
    assert default_frames.shape[1] == 8  # num_frames defaults to the UNet config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_frames=2), "`num_frames` must be at least 3"),
        (dict(num_inference_steps=0), "`num_inference_steps` must be at least 1"),
        (dict(height=100), "`height` must be a positive multiple of 16, got 100; try 96"),
        (dict(width=0), "`width` must be a positive multiple of 16"),
        (dict(noise_injection_ratio=1.5), r"`noise_injection_ratio` must be in \[0, 1\]"),
        (dict(noise_injection_steps=-1), "`noise_injection_steps` must be 0 or more"),
        (dict(fusion="max"), "`fusion` must be one of average, linear"),
        (dict(output_type="gif"), "`output_type` must be one of"),
        (dict(decode_chunk_size=-1), "`decode_chunk_size` must be at least 1"),
        (dict(latents=torch.zeros(1, 3, 4, 8, 8)), "`latents` must have shape"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny_pipe, keyframes, kwargs, message):
    args = {**dict(height=64, width=64, num_frames=4, num_inference_steps=1), **kwargs}
    with pytest.raises(ValueError, match=message):
        tiny_pipe(*keyframes, **args)


def test_bad_keyframes_raise_clear_errors(tiny_pipe):
    square, wide = random_keyframe(0), random_keyframe(1, size=(128, 64))
    with pytest.raises(ValueError, match="different aspect ratios"):
        tiny_pipe(square, wide, num_frames=4)
    with pytest.raises(ValueError, match="2 first keyframes but 1 last"):
        tiny_pipe([square, square], [square], num_frames=4)
    with pytest.raises(ValueError, match="`first_image` must be a PIL image"):
        tiny_pipe("first.png", square, num_frames=4)
