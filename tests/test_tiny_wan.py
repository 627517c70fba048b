"""The tiny random Wan pipelines of tests/tiny_wan.py: seeded, saved in diffusers' layout, loaded back offline, and
run through diffusers' own WanImageToVideoPipeline the way the tiny_wan docstring says it works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import random_keyframe
from diffusers import DiffusionPipeline, WanImageToVideoPipeline
from tiny_wan import CLIP_HIDDEN, CLIP_TOKENS, KINDS, LATENT_CHANNELS, save_tiny_wan, tiny_wan_components

# 9 = 4k + 1 frames make 3 latent frames; 32 is a multiple of 16 (VAE 8x times patch 2), so 4x4 latents.
NUM_FRAMES = 9
SIZE = 32
STEPS = 2
LATENT_FRAMES = (NUM_FRAMES - 1) // 4 + 1
PROMPT = "a cat walks across the room"
NEGATIVE_PROMPT = "blurry, static"
# The transformer's input channels: noisy latents, the 4-channel mask, the encoded condition video.
NOISE = slice(0, LATENT_CHANNELS)
MASK = slice(LATENT_CHANNELS, LATENT_CHANNELS + 4)
CONDITION = slice(LATENT_CHANNELS + 4, None)
# Kinds whose transformer takes a last frame (the Wan 2.1 I2V transformer has no position embedding to merge two
# images' CLIP tokens).
WITH_LAST_IMAGE = {"wan2.1-i2v": False, "wan2.1-flf2v": True, "wan2.2-a14b": True}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_wan")
    return {kind: save_tiny_wan(root / kind, kind) for kind in KINDS}


@pytest.fixture(scope="module")
def loaded(folders: dict[str, Path]) -> dict[str, WanImageToVideoPipeline]:
    pipes = {kind: WanImageToVideoPipeline.from_pretrained(folder) for kind, folder in folders.items()}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


def keyframes() -> tuple[PIL.Image.Image, PIL.Image.Image]:
    return random_keyframe(0, (SIZE, SIZE)), random_keyframe(1, (SIZE, SIZE))


def generate(pipe: WanImageToVideoPipeline, kind: str, seed: int, guidance_scale: float) -> np.ndarray:
    first, last = keyframes()
    return pipe(
        image=first,
        last_image=last if WITH_LAST_IMAGE[kind] else None,
        prompt=PROMPT,
        negative_prompt=NEGATIVE_PROMPT,
        height=SIZE,
        width=SIZE,
        num_frames=NUM_FRAMES,
        num_inference_steps=STEPS,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).frames


def state_dicts(components: dict) -> dict[str, dict[str, torch.Tensor]]:
    return {name: module.state_dict() for name, module in components.items() if isinstance(module, torch.nn.Module)}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("kind", KINDS)
def test_a_kind_and_seed_give_the_same_weights_and_another_seed_other_weights(kind: str) -> None:
    first, again, other = (state_dicts(tiny_wan_components(kind, seed)) for seed in (0, 0, 1))
    assert first.keys() == again.keys() == other.keys()
    for name in first:
        assert same_weights(first[name], again[name]), name
        assert not same_weights(first[name], other[name]), name
    if kind == "wan2.2-a14b":
        assert first.keys() == {"text_encoder", "vae", "transformer", "transformer_2"}
        assert not same_weights(first["transformer"], first["transformer_2"])
    else:
        assert first.keys() == {"text_encoder", "vae", "transformer", "image_encoder"}


def test_components_leave_the_callers_random_stream_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_wan_components("wan2.1-i2v")
    assert torch.equal(torch.rand(3), expected)


def test_the_tokenizer_pads_to_the_pipelines_length_and_ends_prompts_with_eos() -> None:
    tokenizer = tiny_wan_components("wan2.2-a14b")["tokenizer"]
    # The call WanImageToVideoPipeline._get_t5_prompt_embeds makes.
    tokens = tokenizer(
        [PROMPT, ""],
        padding="max_length",
        max_length=512,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    assert tokens.input_ids.shape == tokens.attention_mask.shape == (2, 512)
    length = int(tokens.attention_mask[0].sum())
    assert 1 < length < 512
    assert tokens.input_ids[0, length - 1] == tokenizer.eos_token_id == 1
    assert (tokens.input_ids[0, length:] == tokenizer.pad_token_id).all() and tokenizer.pad_token_id == 0
    assert tokenizer.unk_token_id not in tokens.input_ids[0].tolist()
    assert tokens.input_ids[1, 0] == 1 and tokens.attention_mask[1].sum() == 1  # "" is eos alone
    long = tokenizer("x " * 600, max_length=512, truncation=True, add_special_tokens=True).input_ids
    assert len(long) == 512 and long[-1] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_the_folder_has_diffusers_layout_with_safetensors_only(kind: str, folders: dict[str, Path]) -> None:
    folder = folders[kind]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline"
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKLWan"]
    assert index["text_encoder"] == ["transformers", "UMT5EncoderModel"]
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    assert index["expand_timesteps"] is False
    models = ["text_encoder", "vae", "transformer"]
    if kind == "wan2.2-a14b":
        assert index["boundary_ratio"] == 0.9
        assert index["transformer_2"] == ["diffusers", "WanTransformer3DModel"]
        assert index["image_encoder"] == index["image_processor"] == [None, None]
        models.append("transformer_2")
    else:
        assert index["boundary_ratio"] is None and index["transformer_2"] == [None, None]
        assert index["image_encoder"] == ["transformers", "CLIPVisionModel"]
        models.append("image_encoder")
    for name in models:
        assert list((folder / name).glob("*.safetensors")), name
    weights = {path.suffix for path in folder.rglob("*") if path.suffix in {".bin", ".pt", ".pth", ".ckpt"}}
    assert not weights


@pytest.mark.parametrize("kind", KINDS)
def test_the_folder_loads_back_with_both_pipeline_classes(
    kind: str, folders: dict[str, Path], loaded: dict[str, WanImageToVideoPipeline]
) -> None:
    expected = state_dicts(tiny_wan_components(kind))
    generic = DiffusionPipeline.from_pretrained(folders[kind])
    for pipe in (loaded[kind], generic):
        assert type(pipe) is WanImageToVideoPipeline
        got = state_dicts(pipe.components)
        assert got.keys() == expected.keys()
        for name in expected:
            assert same_weights(got[name], expected[name]), name
        assert pipe.config.boundary_ratio == (0.9 if kind == "wan2.2-a14b" else None)
        assert pipe.vae_scale_factor_temporal == 4 and pipe.vae_scale_factor_spatial == 8


class TransformerCalls:
    """Records what each transformer call of the pipeline receives."""

    def __init__(self, pipe: WanImageToVideoPipeline) -> None:
        self.calls: list[dict] = []
        experts = {"transformer": pipe.transformer, "transformer_2": pipe.transformer_2}
        self.handles = [
            model.register_forward_pre_hook(self.recorder(name), with_kwargs=True)
            for name, model in experts.items()
            if model is not None
        ]

    def recorder(self, name: str):
        def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            image = kwargs["encoder_hidden_states_image"]
            self.calls.append(
                dict(
                    model=name,
                    hidden_states=kwargs["hidden_states"].clone(),
                    timestep=kwargs["timestep"].clone(),
                    text=kwargs["encoder_hidden_states"].clone(),
                    image_shape=None if image is None else tuple(image.shape),
                )
            )

        return record

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def expected_mask(with_last_image: bool) -> torch.Tensor:
    """(4, latent frames): channel c of latent frame 0 is pixel frame 0; of latent frame k >= 1, pixel frame
    4(k-1)+1+c. Given frames are 1: frame 0, and frame NUM_FRAMES-1 (channel 3 of the last latent frame)."""
    mask = torch.zeros(4, LATENT_FRAMES)
    mask[:, 0] = 1
    if with_last_image:
        mask[3, -1] = 1
    return mask


@pytest.mark.parametrize("guidance_scale", [1.0, 5.0], ids=["guidance-off", "guidance-on"])
@pytest.mark.parametrize("kind", KINDS)
def test_diffusers_pipeline_runs_the_loaded_folder(
    kind: str, guidance_scale: float, loaded: dict[str, WanImageToVideoPipeline]
) -> None:
    pipe = loaded[kind]
    recorder = TransformerCalls(pipe)
    try:
        frames = generate(pipe, kind, seed=0, guidance_scale=guidance_scale)
    finally:
        recorder.remove()

    assert frames.shape == (1, NUM_FRAMES, SIZE, SIZE, 3) and frames.dtype == np.float32
    assert np.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    assert np.array_equal(generate(pipe, kind, seed=0, guidance_scale=guidance_scale), frames)
    assert np.abs(generate(pipe, kind, seed=1, guidance_scale=guidance_scale) - frames).max() > 1e-3
    # The in-memory components have the same weights (test above), but safetensors' memory-mapped tensors can take
    # other CPU kernel paths: about 1e-6 apart, not bit-equal.
    in_memory = WanImageToVideoPipeline(**tiny_wan_components(kind))
    in_memory.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(generate(in_memory, kind, seed=0, guidance_scale=guidance_scale), frames, atol=1e-5)

    check_transformer_calls(kind, recorder.calls, pipe.scheduler.timesteps, guided=guidance_scale > 1)


def check_transformer_calls(kind: str, calls: list[dict], timesteps: torch.Tensor, guided: bool) -> None:
    """The transformer inputs the tiny_wan docstring describes, call by call."""
    assert len(calls) == STEPS * (2 if guided else 1)
    assert timesteps[0] == 1000.0
    image_tokens = {"wan2.1-i2v": (1, CLIP_TOKENS, CLIP_HIDDEN), "wan2.1-flf2v": (2, CLIP_TOKENS, CLIP_HIDDEN)}
    for step, t in enumerate(timesteps):
        step_calls = calls[step * 2 : step * 2 + 2] if guided else calls[step : step + 1]
        for call in step_calls:
            assert call["timestep"].shape == (1,) and call["timestep"].item() == t.item()
            hidden_states = call["hidden_states"]
            assert hidden_states.shape == (1, 2 * LATENT_CHANNELS + 4, LATENT_FRAMES, SIZE // 8, SIZE // 8)
            mask = hidden_states[0, MASK]
            assert torch.equal(mask, expected_mask(WITH_LAST_IMAGE[kind])[..., None, None].expand_as(mask))
            # The condition latents stay fixed over the steps.
            assert torch.equal(hidden_states[:, CONDITION], calls[0]["hidden_states"][:, CONDITION])
            assert call["text"].shape == (1, 512, 32)
            assert call["image_shape"] == image_tokens.get(kind)
            # The high-noise expert while t >= 0.9 * 1000, then the low-noise one (Wan 2.2); Wan 2.1 has one.
            expert = "transformer_2" if kind == "wan2.2-a14b" and t < 900 else "transformer"
            assert call["model"] == expert
        if guided:  # cond then uncond on the same input, prompt then negative prompt
            cond, uncond = step_calls
            assert torch.equal(cond["hidden_states"], uncond["hidden_states"])
            assert not torch.equal(cond["text"], uncond["text"])
    assert not torch.equal(calls[0]["hidden_states"][:, NOISE], calls[-1]["hidden_states"][:, NOISE])
    if kind == "wan2.2-a14b":
        assert {call["model"] for call in calls} == {"transformer", "transformer_2"}


def test_the_wan21_i2v_transformer_takes_no_last_image(loaded: dict[str, WanImageToVideoPipeline]) -> None:
    """diffusers encodes [image, last_image] whenever last_image is given; only FLF2V's pos_embed merges the two
    images' tokens into one sequence, so the I2V transformer fails on the batch of two."""
    first, last = keyframes()
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        loaded["wan2.1-i2v"](
            image=first,
            last_image=last,
            prompt=PROMPT,
            height=SIZE,
            width=SIZE,
            num_frames=NUM_FRAMES,
            num_inference_steps=1,
            guidance_scale=1.0,
            output_type="latent",
        )
