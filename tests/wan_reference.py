"""A deliberately naive reference of dual-directional sampling on Wan, to check the fast path against.

Written the slow, literal way, and in flow-matching form (``x_t``, velocities, ``x <- x + (t' - t) v``) rather than
the samplers' VE form: every branch and guidance half is its own transformer call (four per step), the forward calls
materialise and STORE every self-attention map, and the backward calls read them rotated by 180 degrees in time,
``A'[(i, p), (j, q)] = A[(T'-1-i, p), (T'-1-j, q)]`` (Wang et al., ICLR 2025, section 3.2, on full attention).
The rotary embedding is applied as a complex multiplication, independently of the library's real-valued form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import WanImageToVideoPipeline


class NaiveRotation:
    """Processor for every ``blocks.<i>.attn1``: ``record`` stores the softmax map of each layer, ``replay`` uses
    the stored map of the same layer rotated in time, ``plain`` attends normally. Maps are kept per layer name."""

    def __init__(self, name: str, store: dict, state: dict) -> None:
        self.name, self.store, self.state = name, store, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        heads = attn.heads
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (heads, -1))  # (R, L, H, D)
        k = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (heads, -1))
        v = attn.to_v(hidden_states).unflatten(2, (heads, -1))
        q, k = complex_rotary(q, *rotary_emb), complex_rotary(k, *rotary_emb)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (R, H, L, D)
        if self.state["mode"] == "replay":
            maps = rotate_in_time(self.store[self.name], self.state["frames"])
        else:
            maps = F.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)  # (R, H, L, L)
            if self.state["mode"] == "record":
                self.store[self.name] = maps
        out = (maps @ v).transpose(1, 2).flatten(2, 3)
        return attn.to_out[1](attn.to_out[0](out))


def complex_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(x_2i, x_2i+1)`` as complex numbers by the angle whose cosine and sine are given."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    angle = torch.complex(cos[..., 0::2].float(), sin[..., 1::2].float())
    return torch.view_as_real(pairs * angle).flatten(-2).type_as(x)


def rotate_in_time(maps: torch.Tensor, frames: int) -> torch.Tensor:
    """``(R, H, L, L)`` maps over ``(t, s)`` tokens, rotated 180 degrees in time on both axes."""
    r, h, length, _ = maps.shape
    grid = maps.reshape(r, h, frames, length // frames, frames, length // frames)
    return grid.flip(2).flip(4).reshape(r, h, length, length)


def install_naive_rotation(transformer) -> tuple[dict, dict]:
    store, state = {}, {"mode": "plain", "frames": 1}
    for name, module in transformer.named_modules():
        if name.endswith("attn1") and name.startswith("blocks."):
            module.set_processor(NaiveRotation(name, store, state))
    return store, state


@torch.no_grad()
def naive_dual_sample(
    pipe: WanImageToVideoPipeline,
    first,
    last,
    *,
    prompt: str,
    negative_prompt: str,
    guidance: float,
    rotation: bool,
    height: int,
    width: int,
    num_frames: int,
    steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The paper's fused Euler sampling (average fusion, constant guidance, no re-injection) on Wan, four calls per
    step; returns the final latents ``(1, C, T', h, w)`` in the transformer's (normalised) space."""
    states = [install_naive_rotation(network) for network in (pipe.transformer, pipe.transformer_2) if network]
    text, negative = pipe.encode_prompt(
        prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=True, max_sequence_length=512
    )

    def condition(image):
        pixels = pipe.video_processor.preprocess(image, height=height, width=width).float()
        shape = (1, pipe.vae.config.z_dim, (num_frames - 1) // 4 + 1, height // 8, width // 8)
        return pipe.prepare_latents(
            pixels, 1, shape[1], height, width, num_frames, torch.float32, "cpu", None, torch.zeros(shape)
        )[1]

    cond_f, cond_b = condition(first), condition(last)
    uses_clip = pipe.transformer.config.image_dim is not None if pipe.transformer else False
    image_f = pipe.encode_image([first], "cpu") if uses_clip else None
    image_b = pipe.encode_image([last], "cpu") if uses_clip else None
    pipe.scheduler.set_timesteps(steps)
    times = pipe.scheduler.sigmas
    shape = (1, pipe.vae.config.z_dim, (num_frames - 1) // 4 + 1, height // 8, width // 8)
    x = torch.randn(shape, generator=generator)
    boundary = pipe.config.boundary_ratio

    def call(network, state, mode, latents, cond, words, image, t):
        state["mode"], state["frames"] = mode, latents.shape[2]
        hidden = torch.cat([latents, cond], dim=1)
        return network(
            hidden_states=hidden,
            timestep=torch.tensor([t * 1000.0]),
            encoder_hidden_states=words,
            encoder_hidden_states_image=image,
            return_dict=False,
        )[0]

    for i in range(steps):
        t, t_next = float(times[i]), float(times[i + 1])
        use_second = boundary is not None and pipe.transformer_2 is not None and t < boundary
        network = pipe.transformer_2 if use_second else pipe.transformer
        _, state = states[1 if use_second else 0]
        v = {}
        for words, key in ((negative, "u"), (text, "c")):
            v["f" + key] = call(network, state, "record", x, cond_f, words, image_f, t)  # stores this half's maps
            mode = "replay" if rotation else "plain"
            v["b" + key] = call(network, state, mode, x.flip(2), cond_b, words, image_b, t)
        v_f = v["fu"] + guidance * (v["fc"] - v["fu"])
        v_b = (v["bu"] + guidance * (v["bc"] - v["bu"])).flip(2)
        x = x + (t_next - t) * (0.5 * v_f + 0.5 * v_b)
    return x
