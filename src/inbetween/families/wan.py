"""The Wan family: Wan 2.1 I2V (480P / 720P), Wan 2.1 FLF2V and Wan 2.2 I2V A14B, through diffusers' Wan classes.

What the method needs from Wan (Wang et al., ICLR 2025, adapted from SVD):

- **Conditioning of a branch on one keyframe** is Wan's image-to-video conditioning: the keyframe VAE-encoded as
  the first frame of an otherwise empty video, a mask of the given frames, both on the channels, plus its CLIP image
  tokens (Wan 2.1) and the prompt's UMT5 embedding. Guidance is Wan's: the unconditional rows keep the image and take
  the negative prompt. The ``native`` sampler conditions one branch on both keyframes (first and last frame given),
  where the model was trained for it (Wan 2.1 FLF2V, Wan 2.2 A14B).
- **The denoiser in the samplers' VE form.** Wan is rectified flow, ``x_t = (1 - t) x0 + t eps``, velocity
  ``v = eps - x0``. With ``sigma = t / (1 - t)`` and ``x = x_t / (1 - t) = x0 + sigma eps`` it is the VE form every
  sampler uses, the Euler step in that form is the flow-matching Euler step, and ``D = x_t - t v``. The schedule
  starts at ``t = 1`` (``sigma`` infinite): we start at ``sigma = 1e10``, which the model sees as ``t = 1`` and pure
  noise to float precision, and the samplers' steps are written as ``D + sigma_next / sigma * (x - D)``, exact there.
- **Two experts** (Wan 2.2 A14B): the high-noise ``transformer`` while ``t >= boundary_ratio``, ``transformer_2``
  below, as diffusers' pipeline switches.
- **The time flip and the causal VAE.** Wan's VAE compresses time 4x after the first frame: latent frame 0 holds
  pixel frame 0 alone, latent frame k >= 1 pixel frames 4k-3 .. 4k. The backward branch runs the model's own
  image-to-video from the last keyframe on the time-flipped latents: its latent frame k, mapped back to forward
  time, is the forward latent frame ``T'-1-k`` and covers forward pixel frames ``4j .. 4j+3`` (``j = T'-1-k``;
  ``{N-1}`` for its first) where the forward latent frame ``j`` covers ``4j-3 .. 4j`` (``{0}`` for the first): the
  two branches' groups share pixel frame ``4j`` and are shifted by three frames (:func:`flipped_frame_groups`). We
  flip and fuse latent frame ``j`` with ``j`` (fusing what each branch says about the same latent slot, the one
  choice that keeps both branches' keyframe on their own first latent frame); keyframe-exact ends write the
  keyframes' pixels after decoding.
- **Rotation**: :mod:`inbetween.families.wan_attention` (the backward rows attend with the forward rows' Q, K).
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
from diffusers.utils import logging
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel, UMT5EncoderModel

from ..config import BACKWARD, FORWARD, SamplingConfig
from ..cost import largest_request
from ..layout import BatchLayout
from ..memory.wan import WanShape, check_wan_call, module_bytes
from .base import InbetweenMixin, KeyframeInput, KeyframePair, SizeRules
from .wan_attention import dual_mode, install_rotation

logger = logging.get_logger(__name__)

# Wan's own negative prompt (Wan 2.1's generation defaults, `sample_neg_prompt`), used when none is given.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
    "杂乱的背景，三条腿，背景人很多，倒着走"
)
WAN_GUIDANCE = 5.0  # Wan 2.1's default classifier-free guidance scale (diffusers' pipeline default)
WAN_22_GUIDANCE = 3.5  # Wan 2.2 I2V A14B's, for both experts (its generation config)
WAN_FPS = 16  # Wan's videos play at 16 fps (it has no fps conditioning)
WAN_LONG_SIDE = 832  # 480P: 832 x 480
WAN_NUM_FRAMES = 81
TEXT_LENGTH = 512  # UMT5 tokens; Wan 2.1's image attention splits its context at 512 text tokens
FIRST_SIGMA = 1e10  # t = 1 in the VE form: x = x_t / (1 - t) is pure noise scaled by it (module docstring)


@dataclass
class WanConditioning:
    """What every group of a :class:`BatchLayout` is conditioned on, grouped ``(G, B, ...)``."""

    condition: torch.Tensor  # (G, B, 4 + C, T', h, w): the mask of given frames and the encoded condition video
    text: torch.Tensor  # (G, B, S, D) UMT5 embedding: the prompt (conditional rows) or the negative prompt
    image: torch.Tensor | None  # (G, B, k, L, D) CLIP tokens of k keyframes (Wan 2.1), None for Wan 2.2 A14B

    def select(self, groups: list[int]) -> dict[str, torch.Tensor | None]:
        image = None if self.image is None else self.image[groups].flatten(0, 2)  # (rows * k, L, D)
        return {
            "condition": self.condition[groups].flatten(0, 1),
            "encoder_hidden_states": self.text[groups].flatten(0, 1),
            "encoder_hidden_states_image": image,
        }


class WanInbetweenPipeline(InbetweenMixin, WanImageToVideoPipeline):
    r"""Keyframe interpolation with a Wan image-to-video model: every sampler of :mod:`inbetween.sampling` (the
    paper's dual-directional sampling, ViBiD, TRF, forward-only) and Wan's native first-last-frame conditioning.

    Loads any Wan I2V folder or Hub id in diffusers' layout with ``from_pretrained`` (``model_index.json`` names
    ``WanImageToVideoPipeline``); diffusers' own methods encode the prompt and the keyframes.

    Example:

        >>> import torch
        >>> from diffusers.utils import load_image, export_to_video
        >>> from inbetween import WanInbetweenPipeline
        >>> pipe = WanInbetweenPipeline.from_pretrained(
        ...     "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", dtype=torch.bfloat16
        ... ).to("cuda")
        >>> video = pipe(load_image("first.png"), load_image("last.png"), prompt="a cat jumps",
        ...              generator=torch.manual_seed(0)).frames[0]
        >>> export_to_video(video, "inbetween.mp4", fps=16)
    """

    family = "wan"
    takes_prompt = True
    latent_frames_are_frames = False

    def __init__(
        self,
        tokenizer: AutoTokenizer,
        text_encoder: UMT5EncoderModel,
        vae: AutoencoderKLWan,
        scheduler: FlowMatchEulerDiscreteScheduler,
        image_processor: CLIPImageProcessor = None,
        image_encoder: CLIPVisionModel = None,
        transformer: WanTransformer3DModel = None,
        transformer_2: WanTransformer3DModel = None,
        boundary_ratio: float | None = None,
        expand_timesteps: bool = False,
    ):
        super().__init__(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            scheduler=scheduler,
            image_processor=image_processor,
            image_encoder=image_encoder,
            transformer=transformer,
            transformer_2=transformer_2,
            boundary_ratio=boundary_ratio,
            expand_timesteps=expand_timesteps,
        )
        if any(network.config.patch_size[0] != 1 for network in self.experts):
            raise ValueError(
                "this Wan transformer patches time (patch_size[0] > 1), which the rotation's time flip does not "
                "follow; inbetween takes Wan 2.1 I2V / FLF2V and Wan 2.2 I2V A14B models (time patch 1)"
            )
        if expand_timesteps:
            raise ValueError(
                "this is a Wan 2.2 TI2V-5B pipeline (`expand_timesteps`), whose first frame is not denoised; "
                "inbetween takes Wan 2.1 I2V / FLF2V and Wan 2.2 I2V A14B models"
            )
        for network in self.experts:
            install_rotation(network)

    # family ------------------------------------------------------------------------------------

    @property
    def experts(self) -> list[WanTransformer3DModel]:
        return [network for network in (self.transformer, self.transformer_2) if network is not None]

    @property
    def native_last_frame(self) -> bool:
        """Whether the model was trained on first and last frames: FLF2V (two images' CLIP tokens with positions)
        or Wan 2.2 A14B (no CLIP tokens; diffusers' pipeline takes `last_image` for it)."""
        config = self.experts[0].config
        return config.image_dim is None or config.pos_embed_seq_len is not None

    @property
    def size_rules(self) -> SizeRules:
        return wan_size_rules_of(self.vae.config, self.experts[0].config)

    def default_config(self) -> SamplingConfig:
        return wan_default_config(native=self.native_last_frame, two_experts=len(self.experts) > 1)

    def check_call(self, config: SamplingConfig, batch_size: int, output_type: str, allow_oversize: bool) -> None:
        check_wan_call(self.memory_shape(config, batch_size), self._execution_device, allow_oversize)

    def memory_shape(self, config: SamplingConfig, batch_size: int) -> WanShape:
        """The shape of a call for :mod:`inbetween.memory.wan`: the widths, the weights as loaded, the rows of the
        sampler's largest request per call."""
        network = self.experts[0]
        layout = largest_request(config)
        components = {
            name: getattr(self, name)
            for name in ("transformer", "transformer_2", "text_encoder", "image_encoder", "vae")
            if getattr(self, name, None) is not None
        }
        weights = {name: module_bytes(module) for name, module in components.items()}
        block = module_bytes(network.blocks[0])
        device = self._execution_device
        return WanShape(
            dim=network.config.num_attention_heads * network.config.attention_head_dim,
            ffn_dim=network.config.ffn_dim,
            heads=network.config.num_attention_heads,
            weights=weights,
            block_bytes=block,
            non_block_bytes=module_bytes(network) - len(network.blocks) * block,
            rows=max(len(call) for call in layout.calls) * batch_size,  # the largest call (split calls are uneven)
            frames=config.num_frames,
            height=config.height,
            width=config.width,
            dtype_bytes=network.dtype.itemsize,
            vae_channels=self.vae.config.base_dim * self.vae.config.dim_mult[0],
            temporal=self.vae_scale_factor_temporal,
            spatial=self.vae_scale_factor_spatial,
            patch=tuple(network.config.patch_size),
            offload=offload_of(network, device),
            attention_maps=device.type != "cuda",
        )

    def sampling_sigmas(self, config: SamplingConfig) -> torch.Tensor:
        """The scheduler's flow times ``t`` (shifted, 1 -> 0) as VE sigmas ``t / (1 - t)``; ``t = 1`` is
        :data:`FIRST_SIGMA`."""
        self.scheduler.set_timesteps(config.num_inference_steps, device=self._execution_device)
        return sigmas_of_times(self.scheduler.sigmas.float())

    def latent_shape(self, config: SamplingConfig, batch_size: int) -> tuple[int, ...]:
        """Wan's pipeline draws its noise ``(B, C, T', h, w)``; ours is drawn the same, then frames go to axis 1."""
        spatial = self.vae_scale_factor_spatial
        return (
            batch_size,
            self.vae.config.z_dim,
            latent_frames(config.num_frames, self.vae_scale_factor_temporal),
            config.height // spatial,
            config.width // spatial,
        )

    def initial_latents(self, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        # x_t = noise at t = 1, and x = x_t / (1 - t) = x_t (1 + sigma).
        return noise.transpose(1, 2) * (1 + sigmas[0])

    def encode_keyframes(
        self, keyframes: KeyframePair, config: SamplingConfig, generator: torch.Generator | None
    ) -> WanConditioning:
        """The condition channels, CLIP tokens and text of every group of ``config``'s layout, from the preprocessed
        keyframes ``(B, 3, H, W)`` in [-1, 1] (the VAE's) and the keyframes as given (CLIP's). Wan's conditioning
        draws no noise."""
        dtype = self.experts[0].dtype
        layout = BatchLayout.of(config, config.branches)
        native = config.sampler == "native"
        # Each branch's video: the forward branch starts at the first keyframe, the backward at the last.
        first, last = keyframes.first, keyframes.last
        sources = {FORWARD: (first, last if native else None), BACKWARD: (last, None)}
        needed = {layout.groups[g].branch for call in layout.calls for g in call}  # a group never evaluated: zeros
        condition = {branch: self.condition_video(*sources[branch], config).to(dtype) for branch in needed}
        image = None
        if self.experts[0].config.image_dim is not None:
            tokens = {
                FORWARD: self.clip_tokens(keyframes.first_images),
                BACKWARD: self.clip_tokens(keyframes.last_images),
            }
            if native:
                pairs = {FORWARD: (FORWARD, BACKWARD)}
            elif self.native_last_frame:  # FLF2V takes two images' tokens: each branch gives its own keyframe twice
                pairs = {branch: (branch, branch) for branch in needed}
            else:
                pairs = {branch: (branch,) for branch in needed}
            image = {branch: torch.stack([tokens[k] for k in keys], 1).to(dtype) for branch, keys in pairs.items()}
        prompt, negative = self.text_embeddings(config, first.shape[0], config.guided)

        def of(values: dict[str, torch.Tensor], branch: str) -> torch.Tensor:
            return values[branch] if branch in values else torch.zeros_like(next(iter(values.values())))

        groups = layout.groups
        return WanConditioning(
            condition=torch.stack([of(condition, group.branch) for group in groups]),
            text=torch.stack([(prompt if group.conditional else negative).to(dtype) for group in groups]),
            image=None if image is None else torch.stack([of(image, group.branch) for group in groups]),
        )

    def condition_video(self, start: torch.Tensor, end: torch.Tensor | None, config: SamplingConfig) -> torch.Tensor:
        """``(B, 4 + C, T', h, w)``: Wan's mask and encoded condition video for keyframes ``(B, 3, H, W)`` at the
        first frame (and ``end`` at the last), one pair at a time through diffusers' ``prepare_latents``."""
        device = self._execution_device
        shape = self.latent_shape(config, 1)
        videos = []
        for index in range(start.shape[0]):
            given_end = None if end is None else end[index : index + 1].to(device, torch.float32)
            _, condition = self.prepare_latents(
                start[index : index + 1].to(device, torch.float32),
                1,
                shape[1],
                config.height,
                config.width,
                config.num_frames,
                torch.float32,
                device,
                None,
                torch.zeros(shape, device=device),  # given latents: prepare_latents draws no noise
                given_end,
            )
            videos.append(condition)
        return torch.cat(videos)

    def clip_tokens(self, images: KeyframeInput) -> torch.Tensor:
        """CLIP's penultimate-layer tokens ``(B, L, D)`` of each keyframe as given (diffusers' ``encode_image``)."""
        if isinstance(images, torch.Tensor):
            batch = images if images.ndim == 4 else images.unsqueeze(0)
            images = self.video_processor.pt_to_numpy(batch.float().cpu())
            images = self.video_processor.numpy_to_pil(images)
        images = images if isinstance(images, list) else [images]
        return self.encode_image(images, self._execution_device)

    def text_embeddings(
        self, config: SamplingConfig, batch_size: int, guided: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prompt's and the negative prompt's UMT5 embeddings ``(B, S, D)`` (diffusers' ``encode_prompt``): every
        pair of a call shares the prompt, so the text encoder runs once and its output is repeated."""
        negative = WAN_NEGATIVE_PROMPT if config.negative_prompt is None else config.negative_prompt
        prompt, negative = self.encode_prompt(
            prompt=config.prompt,
            negative_prompt=negative,
            do_classifier_free_guidance=guided,
            max_sequence_length=TEXT_LENGTH,
            device=self._execution_device,
        )
        return prompt.expand(batch_size, -1, -1), None if negative is None else negative.expand(batch_size, -1, -1)

    def select_conditioning(self, cond: WanConditioning, groups: list[int], config: SamplingConfig) -> dict:
        return {**cond.select(groups), "times": flow_times(self.scheduler)}

    def denoise_rows(
        self, x: torch.Tensor, sigma: torch.Tensor, conditioning: dict, dual_groups: tuple[int, int] | None
    ) -> torch.Tensor:
        """Rectified flow in the VE form: ``x_t = x / (1 + sigma)`` at ``t = sigma / (1 + sigma)``, and
        ``D = x_t - t v``. At the scheduler's steps ``t`` and the transformer's timestep are the scheduler's own
        (UniPC's timesteps are whole numbers, FlowMatchEuler's ``1000 t``), so the transformer sees what diffusers'
        pipeline gives it; between them (midpoints, re-injections) ``sigma / (1 + sigma)`` and ``1000 t``."""
        t = float(sigma / (1 + sigma))
        t, timestep = conditioning["times"].get(float(sigma), (t, t * self.scheduler.config.num_train_timesteps))
        x_t = x / (1 + sigma)
        return x_t - t * self.velocity(x_t, timestep, conditioning, dual_groups)

    def expert_at(self, timestep: float) -> WanTransformer3DModel:
        """The transformer of ``timestep``: Wan 2.2's high-noise expert while ``timestep >= boundary_ratio * 1000``
        (diffusers' switch)."""
        boundary = self.config.boundary_ratio
        if boundary is None or self.transformer_2 is None:
            return self.transformer if self.transformer is not None else self.transformer_2
        high_noise = timestep >= boundary * self.scheduler.config.num_train_timesteps
        return self.transformer if high_noise else self.transformer_2

    def velocity(
        self,
        x_t: torch.Tensor,
        timestep: float,
        conditioning: dict[str, torch.Tensor | None],
        dual_groups: tuple[int, int] | None,
    ) -> torch.Tensor:
        """One transformer call at ``timestep`` (diffusers' scale, 1000 at pure noise): ``x_t`` ``(R, T', C, h, w)``
        -> the flow velocity ``(R, T', C, h, w)``, float32."""
        network = self.expert_at(timestep)
        hidden = torch.cat([x_t.transpose(1, 2), conditioning["condition"].to(x_t)], dim=1).to(network.dtype)
        timesteps = torch.full((x_t.shape[0],), timestep, device=x_t.device)
        frames = x_t.shape[1] // network.config.patch_size[0]
        context = dual_mode(network, *dual_groups, frames) if dual_groups else nullcontext()
        with context:
            v = network(
                hidden_states=hidden,
                timestep=timesteps,
                encoder_hidden_states=conditioning["encoder_hidden_states"],
                encoder_hidden_states_image=conditioning["encoder_hidden_states_image"],
                return_dict=False,
            )[0]
        return v.float().transpose(1, 2)

    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int) -> torch.Tensor:
        """``(B, T', C, h, w)`` normalised latents -> frames ``(B, 3, N, H, W)`` in [-1, 1], float32, one video at a
        time (Wan's VAE decodes a latent frame at a time with its own cache, so ``decode_chunk_size`` is not used)."""
        videos = []
        for video in latents:
            z = denormalise_latents(video.transpose(0, 1).unsqueeze(0), self.vae.config).to(self.vae.dtype)
            videos.append(self.vae.decode(z, return_dict=False)[0].float().clamp(-1, 1))
        return torch.cat(videos)


def offload_of(network: torch.nn.Module, device: torch.device) -> str:
    """How ``network``'s weights reach ``device``: diffusers' group offload (hooks on its blocks), model CPU offload
    (the weights elsewhere until the model runs), or none."""
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    if _is_group_offload_enabled(network):
        return "group"
    return "model" if next(network.parameters()).device.type != device.type else "none"


def wan_default_config(native: bool = False, two_experts: bool = False) -> SamplingConfig:
    """The paper's sampling options with Wan's own guidance (on every frame: 5.0 for Wan 2.1, 3.5 for Wan 2.2 A14B)
    and playback rate (16 fps); with ``native``, the model's own first-last-frame conditioning as the sampler (a model
    trained for it)."""
    sampler = dict(sampler="native") if native else {}
    guidance = WAN_22_GUIDANCE if two_experts else WAN_GUIDANCE
    return SamplingConfig(min_guidance_scale=guidance, max_guidance_scale=guidance, fps=WAN_FPS, **sampler)


def two_experts_before_loading(model: str | os.PathLike, folder: Path | None) -> bool:
    """Whether ``model`` is Wan 2.2 A14B (a second transformer), from its folder, else from its Hub id's name."""
    if folder is not None:
        return (folder / "transformer_2" / "config.json").is_file()
    return "wan2.2" in Path(str(model)).name.lower()


def native_last_frame_before_loading(model: str | os.PathLike, folder: Path | None) -> bool:
    """Whether ``model`` was trained on first and last frames, from its transformer's config on disk (two images'
    CLIP positions, or no CLIP tokens: Wan 2.2 A14B), else from its Hub id's name."""
    for name in ("transformer", "transformer_2"):
        path = folder / name / "config.json" if folder is not None else None
        if path is not None and path.is_file():
            config = json.loads(path.read_text())
            return config.get("image_dim") is None or config.get("pos_embed_seq_len") is not None
    name = Path(str(model)).name.lower()
    return "flf2v" in name or "wan2.2" in name


def latent_frames(num_frames: int, temporal: int) -> int:
    """Latent frames of ``num_frames`` pixel frames (``temporal * k + 1``): the first alone, then ``temporal`` each."""
    return (num_frames - 1) // temporal + 1


def flipped_frame_groups(num_frames: int, temporal: int = 4) -> tuple[list[range], list[range]]:
    """The pixel frames each latent frame holds, in forward time: ``(forward groups, backward groups)``, where the
    backward branch's latent frame ``k`` (its own time) is listed at forward index ``T'-1-k`` (the flip).

    9 frames: forward ``{0}, {1-4}, {5-8}``; backward mapped back ``{0-3}, {4-7}, {8}``."""
    count = latent_frames(num_frames, temporal)
    own = [range(0, 1)] + [range(temporal * k - temporal + 1, temporal * k + 1) for k in range(1, count)]
    backward = [range(num_frames - 1 - group.stop + 1, num_frames - group.start) for group in own][::-1]
    return own, backward


def sigmas_of_times(times: torch.Tensor) -> torch.Tensor:
    """Flow times ``t`` (1 -> 0) as the samplers' VE sigmas ``t / (1 - t)`` (float32; ``t = 1``: FIRST_SIGMA)."""
    t = times.double()
    sigmas = torch.where(t < 1, t / (1 - t).clamp(min=1e-300), torch.full_like(t, FIRST_SIGMA))
    return sigmas.float()


def flow_times(scheduler) -> dict[float, tuple[float, float]]:
    """``{VE sigma: (t, the transformer's timestep)}`` at the steps of the schedule ``scheduler`` was set to (the
    plan of a call is built after :meth:`WanInbetweenPipeline.sampling_sigmas` set it)."""
    times = scheduler.sigmas.float().cpu()
    steps = zip(sigmas_of_times(times).tolist(), times.tolist(), scheduler.timesteps.tolist(), strict=False)
    return {sigma: (t, float(timestep)) for sigma, t, timestep in steps}


def normalise_latents(latents: torch.Tensor, vae_config) -> torch.Tensor:
    """``(B, C, T', h, w)`` VAE latents -> the transformer's space ``(z - mean) / std`` (per channel)."""
    mean, std = _latent_statistics(latents, vae_config)
    return (latents - mean) / std


def denormalise_latents(latents: torch.Tensor, vae_config) -> torch.Tensor:
    mean, std = _latent_statistics(latents, vae_config)
    return latents * std + mean


def _latent_statistics(latents: torch.Tensor, vae_config) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, vae_config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae_config.latents_mean).view(shape).to(latents.device, latents.dtype)
    std = torch.tensor(vae_config.latents_std).view(shape).to(latents.device, latents.dtype)
    return mean, std


def wan_size_rules_of(vae_config, transformer_config) -> SizeRules:
    """Sizes a multiple of the VAE's spatial factor times the patch (16 for Wan 2.1 / 2.2 A14B), frame counts
    ``4k + 1``, 81 frames at 832 x 480 by default (the 480P models' training size)."""
    spatial = vae_config.scale_factor_spatial if hasattr(vae_config, "scale_factor_spatial") else 8
    patch = transformer_config.patch_size
    multiple = max(16, spatial * max(patch[1], patch[2]))  # diffusers' pipeline refuses sizes not divisible by 16
    temporal = vae_config.scale_factor_temporal if hasattr(vae_config, "scale_factor_temporal") else 4
    return SizeRules(multiple=multiple, long_side=WAN_LONG_SIDE, num_frames=WAN_NUM_FRAMES, frame_step=temporal)


def wan_size_rules(folder: Path | None) -> SizeRules:
    """Wan's size rules from a model folder's configs (``None``: the released models', before a download)."""
    if folder is None or not (folder / "vae" / "config.json").is_file():
        return SizeRules(multiple=16, long_side=WAN_LONG_SIDE, num_frames=WAN_NUM_FRAMES, frame_step=4)
    vae = SimpleNamespace(**json.loads((folder / "vae" / "config.json").read_text()))
    name = "transformer" if (folder / "transformer" / "config.json").is_file() else "transformer_2"
    transformer = SimpleNamespace(**json.loads((folder / name / "config.json").read_text()))
    return wan_size_rules_of(vae, transformer)
