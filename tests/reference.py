"""A deliberately naive implementation of Generative Inbetweening, for tests and benchmarks only.

It follows the paper (Wang et al., ICLR 2025, section 3) literally, the way the published code does:
two UNet copies (the backward one with W_v + dW_v / W_o + dW_o written into its weights),
attention probabilities materialised with an explicit softmax and stored per layer during the
forward call, read back rotated by 180 degrees during a second, backward call. Two UNet calls
per step; classifier-free guidance by separate conditional/unconditional rows inside each call.
The fast pipeline must match it numerically. :class:`NaiveBackwardTrainer` is the same for the
backward-motion fine-tuning (two UNets, stored maps, full-weight W_v / W_o trained in the copy).
"""

from __future__ import annotations

import copy

import torch
from diffusers.utils.torch_utils import randn_tensor

from inbetween import BackwardAdapter, InbetweenPipeline
from inbetween.adapter import OUTPUT_BIAS, OUTPUT_WEIGHT, VALUE_WEIGHT
from inbetween.attention import temporal_self_attention_names
from inbetween.config import SamplingConfig
from inbetween.cost import requests_per_video
from inbetween.sampling import Denoiser, Noise, StepCallback, edm_scalings, euler_step, gaussian_noise, run_steps


class StoringAttnProcessor:
    """Plain self-attention that materialises softmax(QK^T/sqrt(d)) and stores it under the layer name."""

    def __init__(self, name: str, store: dict[str, torch.Tensor]):
        self.name, self.store = name, store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        probs = _attention_probs(attn, q, k)
        self.store[self.name] = probs
        return _attend(attn, probs, v)


class FlippedMapAttnProcessor:
    """Backward-model self-attention that ignores its own Q/K and uses the stored forward map, rotated."""

    def __init__(self, name: str, store: dict[str, torch.Tensor]):
        self.name, self.store = name, store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        forward_probs = self.store[self.name]  # (rows, heads, N, N)
        rotated = torch.flip(forward_probs, dims=[-2, -1])  # A'[i, k] = A[N-1-i, N-1-k]
        return _attend(attn, rotated, attn.to_v(hidden_states))


def _split_heads(attn, x):
    rows, frames, _ = x.shape
    return x.view(rows, frames, attn.heads, -1).transpose(1, 2)


def _attention_probs(attn, q, k):
    q, k = _split_heads(attn, q), _split_heads(attn, k)
    scores = q @ k.transpose(-1, -2) * attn.scale
    return scores.softmax(dim=-1)


def _attend(attn, probs, v):
    v = _split_heads(attn, v)
    out = (probs @ v).transpose(1, 2).reshape(v.shape[0], v.shape[2], -1)
    out = attn.to_out[1](attn.to_out[0](out))
    return out / attn.rescale_output_factor


def naive_unet_pair(pipe, adapter, store, reuse_pipe_unet=False):
    """The published code's two models: a forward UNet that stores its maps, and a backward copy with
    W_v + dW_v / W_o + dW_o written into its weights that reads them rotated. ``reuse_pipe_unet``
    makes ``pipe.unet`` the forward model (its temporal processors are replaced), so only two UNets
    exist, as in the published code; otherwise both are deep copies and ``pipe`` stays untouched."""
    forward_unet = pipe.unet if reuse_pipe_unet else copy.deepcopy(pipe.unet)
    backward_unet = copy.deepcopy(pipe.unet)
    if adapter is not None:
        with torch.no_grad():
            params = dict(backward_unet.named_parameters())
            for key, delta in adapter.deltas.items():
                params[key].add_(delta.to(params[key].dtype))
    for name in temporal_attention_names(forward_unet):
        forward_unet.get_submodule(name).set_processor(StoringAttnProcessor(name, store))
        backward_unet.get_submodule(name).set_processor(FlippedMapAttnProcessor(name, store))
    return forward_unet, backward_unet


def temporal_attention_names(unet) -> list[str]:
    return [name for name, _ in unet.named_modules() if name.endswith("temporal_transformer_blocks.0.attn1")]


class NaiveInbetween:
    """The paper's sampler with two UNets and stored attention maps.

    ``pipe`` supplies the components and the keyframe encoders (the conditioning is not what
    is under test); the UNet copies, attention processors, guidance, fusion, Euler steps and
    re-injection are written out here independently of ``inbetween.sampling``.
    """

    def __init__(
        self, pipe: InbetweenPipeline, adapter: BackwardAdapter | None = None, *, reuse_pipe_unet: bool = False
    ):
        self.pipe = pipe
        self.store: dict[str, torch.Tensor] = {}
        self.forward_unet, self.backward_unet = naive_unet_pair(pipe, adapter, self.store, reuse_pipe_unet)

    def unet_v(self, unet, x, sigma, image_emb, image_lat, time_ids):
        """v-prediction of one branch; x (B, N, 4, h, w); rows [uncond, cond] when guided."""
        c_in = 1 / (sigma**2 + 1) ** 0.5
        frames = x.shape[1]
        guided = image_emb.shape[0] == 2 * x.shape[0]
        x_rows = torch.cat([x, x]) if guided else x
        lat = image_lat.unsqueeze(1).repeat(1, frames, 1, 1, 1)
        model_in = torch.cat([x_rows * c_in, lat], dim=2)
        return unet(
            model_in,
            0.25 * torch.log(sigma),
            encoder_hidden_states=image_emb,
            added_time_ids=time_ids,
            return_dict=False,
        )[0]

    def denoised(self, v, x, sigma, scale):
        c_skip, c_out = 1 / (sigma**2 + 1), -sigma / (sigma**2 + 1) ** 0.5
        if v.shape[0] == 2 * x.shape[0]:
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + scale.view(1, -1, 1, 1, 1) * (v_cond - v_uncond)
        return c_skip * x + c_out * v

    @torch.no_grad()
    def __call__(
        self,
        first_image,
        last_image,
        *,
        height,
        width,
        num_frames,
        num_inference_steps=50,
        min_guidance_scale=1.0,
        max_guidance_scale=3.0,
        fps=7,
        motion_bucket_id=127,
        noise_aug_strength=0.02,
        fusion="average",
        rotation=True,
        noise_injection_steps=5,
        noise_injection_ratio=0.5,
        shared_unconditional=False,
        generator=None,
        step_timer=None,
    ):
        pipe = self.pipe
        guided = max_guidance_scale > 1
        first = pipe.preprocess_keyframes(first_image, height, width)
        last = pipe.preprocess_keyframes(last_image, height, width)
        batch = first.shape[0]
        images = torch.cat([first, last])
        emb = pipe.encode_image_embeddings(
            pipe.clip_keyframes(first_image, height, width) + pipe.clip_keyframes(last_image, height, width)
        )
        noise = randn_tensor(images.shape, generator=generator, dtype=images.dtype)
        lat = pipe.encode_image_latents(images + noise_aug_strength * noise)
        emb_f, emb_l = emb[:batch], emb[batch:]
        lat_f, lat_l = lat[:batch], lat[batch:]
        if guided:
            emb_f, emb_l = torch.cat([torch.zeros_like(emb_f), emb_f]), torch.cat([torch.zeros_like(emb_l), emb_l])
            lat_f, lat_l = torch.cat([torch.zeros_like(lat_f), lat_f]), torch.cat([torch.zeros_like(lat_l), lat_l])
        time_ids = torch.tensor([[fps - 1, motion_bucket_id, noise_aug_strength]]).repeat(emb_f.shape[0], 1)

        pipe.scheduler.set_timesteps(num_inference_steps)
        sigmas = pipe.scheduler.sigmas.float()
        shape = (batch, num_frames, 4, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
        # SVD's pipeline starts from init_noise_sigma (sqrt(sigma_max^2 + 1) for its "leading" spacing).
        x = randn_tensor(shape, generator=generator, dtype=torch.float32) * pipe.scheduler.init_noise_sigma

        scale = torch.linspace(min_guidance_scale, max_guidance_scale, num_frames)
        if fusion == "average":
            w = torch.full((num_frames,), 0.5)
            scale = (scale + torch.flip(scale, [0])) / 2
        elif fusion == "linear":
            w = torch.linspace(1.0, 0.0, num_frames)
        else:  # one branch alone
            w = torch.full((num_frames,), 1.0 if fusion == "forward" else 0.0)
        w = w.view(1, -1, 1, 1, 1)
        # Without rotation the backward branch is the base model with its own attention (time-reversal fusion).
        backward_unet = self.backward_unet if rotation else self.forward_unet

        def fused_step(x, sigma, sigma_next):
            self.store.clear()
            v_f = self.unet_v(self.forward_unet, x, sigma, emb_f, lat_f, time_ids)  # stores the maps
            x_b = torch.flip(x, [1])
            v_b = self.unet_v(backward_unet, x_b, sigma, emb_l, lat_l, time_ids)  # reads them rotated
            if guided and shared_unconditional:  # the forward branch's unconditional prediction, in reversed time
                v_b = torch.cat([torch.flip(v_f[:batch], [1]), v_b[batch:]])
            d_f = self.denoised(v_f, x, sigma, scale)
            d_b = torch.flip(self.denoised(v_b, x_b, sigma, scale), [1])
            denoised = w * d_f + (1 - w) * d_b
            return x + (x - denoised) / sigma * (sigma_next - sigma)

        for i in range(num_inference_steps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            x_next = fused_step(x, sigma, sigma_next)
            if i < int(noise_injection_ratio * num_inference_steps):
                for _ in range(noise_injection_steps):
                    noise = randn_tensor(x.shape, generator=generator, dtype=x.dtype)
                    x_next = fused_step(x_next + noise * (sigma**2 - sigma_next**2) ** 0.5, sigma, sigma_next)
            x = x_next
            if step_timer is not None:
                step_timer(i)
        return x


class NaiveBackwardTrainer:
    """The paper's backward-motion fine-tuning (paper section 3.2) the way the published code does it.

    Two UNets: a frozen forward model whose temporal self-attention layers materialise and store
    their softmax maps (:class:`StoringAttnProcessor`), and a backward model whose temporal
    self-attention reads them back rotated (:class:`FlippedMapAttnProcessor`). In the backward
    model only ``to_v.weight`` and ``to_out.0.weight`` of those layers train (the full weights,
    not deltas); everything else is frozen. Per sample: one no-grad forward call, one backward
    call on the time-reversed noisy latents conditioned on the clip's last frame, SVD's EDM loss
    on the backward branch, AdamW on the trainable weights. Written out independently of
    ``inbetween.training`` (only ``edm_scalings`` is shared) so the fast trainer can be checked
    against it.

    ``adapter``: W_v / W_o deltas added into the backward model's weights at the start (to
    compare with a fast trainer whose deltas start non-zero). ``reuse_pipe_unet``: use
    ``pipe.unet`` itself as the forward model (its temporal processors are replaced) instead of a
    deep copy, so only two UNets exist, as in the published code; by default both models are
    deep copies and ``pipe`` stays untouched. AdamW decays the full weights here (as the
    published code does), the fast trainer decays the deltas: one optimizer step differs by
    ``lr * weight_decay * W_base``, so compare losses and gradients, not updated weights.
    """

    def __init__(
        self,
        pipe: InbetweenPipeline,
        adapter: BackwardAdapter | None = None,
        *,
        learning_rate: float = 1e-4,
        weight_decay: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        reuse_pipe_unet: bool = False,
    ):
        self.pipe = pipe
        self.store: dict[str, torch.Tensor] = {}
        self.forward_unet, self.backward_unet = naive_unet_pair(pipe, adapter, self.store, reuse_pipe_unet)
        self.forward_unet.requires_grad_(False)
        self.backward_unet.requires_grad_(False)
        params = dict(self.backward_unet.named_parameters())
        self.trainable: dict[str, torch.nn.Parameter] = {}
        for name in temporal_attention_names(self.forward_unet):
            for param in ("to_v.weight", "to_out.0.weight"):
                self.trainable[f"{name}.{param}"] = params[f"{name}.{param}"].requires_grad_(True)
        self.optimizer = torch.optim.AdamW(
            list(self.trainable.values()), lr=learning_rate, weight_decay=weight_decay, betas=betas
        )

    def call_unet(self, unet, x, sigma, emb, image_lat, time_ids):
        """v-prediction of one branch for noisy latents ``x`` (B, N, 4, h, w) at per-sample ``sigma`` (B,)."""
        _, _, c_in, c_noise = edm_scalings(sigma)
        frames = x.shape[1]
        lat = image_lat.unsqueeze(1).repeat(1, frames, 1, 1, 1)
        model_in = torch.cat([x * c_in.view(-1, 1, 1, 1, 1), lat], dim=2)
        return unet(model_in, c_noise, encoder_hidden_states=emb, added_time_ids=time_ids, return_dict=False)[0]

    def loss(self, encoded: dict[str, torch.Tensor], draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """Backward-branch EDM loss of one batch; ``encoded`` as ``inbetween.training.encode_batch`` returns it."""
        sigma = draws["sigma"]  # (B,)
        batch = sigma.shape[0]
        x0 = encoded["latents"]  # (B, N, 4, h, w), original time order
        x = x0 + sigma.view(-1, 1, 1, 1, 1) * draws["noise"]
        emb, lat, time_ids = encoded["embeddings"], encoded["image_latents"], encoded["time_ids"]
        emb_first, emb_last = emb[:batch], emb[batch:]
        lat_first, lat_last = lat[:batch], lat[batch:]
        time_ids = time_ids[:batch]

        self.store.clear()
        with torch.no_grad():  # frozen forward model: only its attention maps are used
            self.call_unet(self.forward_unet, x, sigma, emb_first, lat_first, time_ids)
        x_rev, x0_rev = torch.flip(x, [1]), torch.flip(x0, [1])
        v = self.call_unet(self.backward_unet, x_rev, sigma, emb_last, lat_last, time_ids)
        self.store.clear()
        c_skip, c_out, _, _ = edm_scalings(sigma.view(-1, 1, 1, 1, 1))
        denoised = c_skip * x_rev + c_out * v
        weight = (1 + sigma**2) / sigma**2
        per_sample = ((denoised - x0_rev) ** 2).reshape(batch, -1).mean(dim=1)
        return (weight * per_sample).mean()

    def step(self, encoded: dict[str, torch.Tensor], draws: dict[str, torch.Tensor]) -> float:
        """Loss, backward, AdamW step; returns the loss. Gradients stay on the weights until the next step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(encoded, draws)
        loss.backward()
        self.optimizer.step()
        return loss.item()


# Reference samplers, adapters and counts the library itself does not need -------------------------------------------


def sample_euler_with_reinjection(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise | None = None,
    noise_injection_steps: int = 5,
    noise_injection_ratio: float = 0.5,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Euler sampling over ``sigmas`` (last one 0) of the (already fused) ``denoise(x, sigma)``, with the paper's
    noise re-injection (:func:`inbetween.sampling.run_steps`; ``noise`` defaults to unseeded Gaussian draws)."""

    def step(x: torch.Tensor, i: int, restart: bool) -> torch.Tensor:
        return euler_step(x, denoise(x, sigmas[i]), sigmas[i], sigmas[i + 1])

    return run_steps(
        step,
        x,
        sigmas,
        noise=noise or gaussian_noise(None),
        noise_injection_steps=noise_injection_steps,
        noise_injection_ratio=noise_injection_ratio,
        callback=callback,
    )


def evaluations_per_video(config: SamplingConfig) -> int:
    """Branch-denoiser requests of one video (each one UNet call, two with ``split_guidance_batch``)."""
    return sum(requests_per_video(config).values())


def zero_adapter(
    unet: torch.nn.Module, include_bias: bool = False, dtype: torch.dtype = torch.float32
) -> BackwardAdapter:
    """An adapter that leaves the backward branch equal to the base weights (the start of training): zero W_v and W_o
    deltas (and b_o with ``include_bias``) for every temporal self-attention layer of ``unet``."""
    state = unet.state_dict()
    params = (VALUE_WEIGHT, OUTPUT_WEIGHT, OUTPUT_BIAS) if include_bias else (VALUE_WEIGHT, OUTPUT_WEIGHT)
    deltas = {
        f"{layer}.{param}": torch.zeros_like(state[f"{layer}.{param}"], dtype=dtype, device="cpu")
        for layer in temporal_self_attention_names(unet)
        for param in params
        if f"{layer}.{param}" in state
    }
    base_model = str(getattr(getattr(unet, "config", None), "_name_or_path", "") or "")
    return BackwardAdapter(deltas, base_model=base_model)
