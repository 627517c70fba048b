"""The Stable Video Diffusion family: InbetweenPipeline, the video between two keyframes with SVD / SVD-XT.

Generative Inbetweening (Wang et al., ICLR 2025): a forward pass conditioned on the first
keyframe and a backward pass, over the time-reversed video, conditioned on the last keyframe,
fused at every denoising step. Both passes run in ONE UNet call per step: the batch is
``[fwd-uncond, fwd-cond, bwd-uncond, bwd-cond]`` and only the temporal self-attention layers
tell the halves apart (see ``attention.py``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    UNetSpatioTemporalConditionModel,
)
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    _resize_with_antialiasing,  # SVD's own CLIP resize (sgm's kornia resize), reused so ours cannot drift from it
)
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import CLIPVisionModelWithProjection

try:  # transformers >= 5 names its torchvision-free processor; the plain name warns without torchvision
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:
    from transformers import CLIPImageProcessor

from ..adapter import BackwardAdapter
from ..attention import dual_mode, install_rotation, rotation_processors
from ..config import SamplingConfig
from ..hub import local_model_configs
from ..layout import BACKWARD, FORWARD, BatchLayout
from ..memory import check_pipeline_call
from ..sampling import edm_scalings
from .base import (
    ASPECT_TOLERANCE,  # noqa: F401  (re-exported: the front ends' keyframe check)
    OUTPUT_TYPES,  # noqa: F401
    InbetweenMixin,
    KeyframeInput,
    KeyframePair,
    SizeRules,
    with_frames,  # noqa: F401
)

logger = logging.get_logger(__name__)

SIZE_MULTIPLE = 64
DEFAULT_LONG_SIDE = 1024
ADAPTER_FILE = "backward_adapter.safetensors"  # a model folder's own adapter, loaded by from_pretrained


@dataclass
class KeyframeConditioning:
    """Conditioning of the UNet batch, grouped ``(G, B, ...)`` as the groups of a :class:`BatchLayout`."""

    image_embeddings: torch.Tensor  # (G, B, 1, D) CLIP image embeddings
    image_latents: torch.Tensor  # (G, B, 4, h, w) VAE latents of the noise-augmented keyframes
    added_time_ids: torch.Tensor  # (G, B, 3): fps - 1, motion bucket, noise augmentation

    def select(self, groups: list[int], num_frames: int) -> dict[str, torch.Tensor]:
        """UNet keyword arguments for ``groups``, flattened to a batch of ``len(groups) * B``."""
        latents = self.image_latents[groups].flatten(0, 1)
        return {
            "encoder_hidden_states": self.image_embeddings[groups].flatten(0, 1),
            "added_time_ids": self.added_time_ids[groups].flatten(0, 1),
            "image_latents": latents.unsqueeze(1).expand(-1, num_frames, -1, -1, -1),
        }


class InbetweenPipeline(InbetweenMixin, DiffusionPipeline):
    r"""Keyframe interpolation with an image-to-video SVD model and dual-directional sampling.

    Components are those of diffusers' ``StableVideoDiffusionPipeline``, so any SVD / SVD-XT folder
    or Hub id loads with ``from_pretrained``. Load the backward-motion adapter with
    :meth:`load_backward_adapter` for the paper's quality.

    Example:

        >>> import torch
        >>> from diffusers.utils import load_image, export_to_video
        >>> from inbetween import InbetweenPipeline
        >>> pipe = InbetweenPipeline.from_pretrained(
        ...     "stabilityai/stable-video-diffusion-img2vid-xt", dtype=torch.float16, variant="fp16"
        ... ).to("cuda")
        >>> pipe.load_backward_adapter("backward_adapter.safetensors")
        >>> video = pipe(load_image("first.png"), load_image("last.png"), generator=torch.manual_seed(0)).frames[0]
        >>> export_to_video(video, "inbetween.mp4", fps=7)
    """

    model_cpu_offload_seq = "image_encoder->unet->vae"
    family = "svd"
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        vae: AutoencoderKLTemporalDecoder,
        image_encoder: CLIPVisionModelWithProjection,
        unet: UNetSpatioTemporalConditionModel,
        scheduler: EulerDiscreteScheduler,
        feature_extractor: CLIPImageProcessor,
    ):
        super().__init__()
        self.register_modules(
            vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, feature_extractor=feature_extractor
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.video_processor = VideoProcessor(do_resize=True, vae_scale_factor=self.vae_scale_factor)
        _check_scheduler(scheduler)
        install_rotation(self.unet)
        self._adapter_warnings: set[str] = set()  # adapter states already warned about, once per pipeline

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> InbetweenPipeline:
        """diffusers' ``from_pretrained``, plus: every component in float32 unless ``dtype`` is given (transformers
        would keep a float16 checkpoint's dtype for the image encoder alone), and a folder's own
        ``backward_adapter.safetensors`` is loaded (pass ``load_adapter=False`` to skip it)."""
        load_adapter = kwargs.pop("load_adapter", True)
        if kwargs.get("dtype") is None and kwargs.get("torch_dtype") is None:
            kwargs["dtype"] = torch.float32
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        adapter = Path(pretrained_model_name_or_path) / ADAPTER_FILE
        if load_adapter and adapter.is_file():
            pipe.load_backward_adapter(adapter)
        return pipe

    # adapter ----------------------------------------------------------------------------------

    def load_backward_adapter(self, adapter: BackwardAdapter | str | os.PathLike) -> None:
        """Use the backward model's W_v / W_o from ``adapter`` (an adapter or a .safetensors path)."""
        if not isinstance(adapter, BackwardAdapter):
            adapter = BackwardAdapter.load(adapter)
        adapter.apply_to(self.unet)

    def unload_backward_adapter(self) -> None:
        """Back to base weights in the backward branch (rotation stays installed)."""
        for processor in rotation_processors(self.unet).values():
            processor.set_deltas(None, None, None)

    @property
    def has_backward_adapter(self) -> bool:
        return any(p.delta_v is not None or p.delta_o is not None for p in rotation_processors(self.unet).values())

    # stages -------------------------------------------------------------------------------------

    @property
    def size_rules(self) -> SizeRules:
        """SVD's rules from the UNet's and the VAE's configs: sizes a multiple of their downsampling together (64),
        the UNet's frame count (14 for SVD, 25 for SVD-XT), any frame count."""
        long_side, multiple = size_rules(self.unet.config, self.vae.config)
        return SizeRules(multiple=multiple, long_side=long_side, num_frames=self.unet.config.num_frames)

    def check_call(self, config: SamplingConfig, batch_size: int, output_type: str, allow_oversize: bool) -> None:
        check_pipeline_call(self, config, batch_size, output_type, allow_oversize=allow_oversize)

    def sampling_sigmas(self, config: SamplingConfig) -> torch.Tensor:
        """The scheduler's Karras sigmas (sigma_max 700 -> sigma_min 0.002, then 0): SVD is already EDM's VE form."""
        device = self._execution_device
        self.scheduler.set_timesteps(config.num_inference_steps, device=device)
        return self.scheduler.sigmas.to(device, torch.float32)

    def latent_shape(self, config: SamplingConfig, batch_size: int) -> tuple[int, ...]:
        return (
            batch_size,
            config.num_frames,
            self.vae.config.latent_channels,
            config.height // self.vae_scale_factor,
            config.width // self.vae_scale_factor,
        )

    def initial_latents(self, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        # SVD's pipeline starts from init_noise_sigma (sqrt(sigma_max^2 + 1) for its "leading" spacing).
        return noise * self.scheduler.init_noise_sigma

    def clip_keyframes(self, images: KeyframeInput, height: int, width: int) -> list[torch.Tensor]:
        """Keyframes for the CLIP encoder: each ``(1, 3, H_i, W_i)`` in [-1, 1] at its OWN resolution.

        SVD resizes the keyframe itself, not the VAE's resized copy, to the encoder's size (diffusers'
        ``StableVideoDiffusionPipeline._encode_image``); a PIL keyframe is first center-cropped to the output aspect
        ``width / height`` at its own resolution, the crop :meth:`preprocess_keyframes` takes. Tensors are used
        whole, as they are stretched for the VAE.
        """
        if isinstance(images, torch.Tensor):
            batch = images if images.ndim == 4 else images.unsqueeze(0)
            return [image.unsqueeze(0) * 2.0 - 1.0 for image in batch.float()]
        images = images if isinstance(images, list) else [images]
        pixels = [self.video_processor.numpy_to_pt(self.video_processor.pil_to_numpy(image)) for image in images]
        return [center_crop_to_aspect(image, width / height) * 2.0 - 1.0 for image in pixels]

    def encode_keyframes(
        self, keyframes: KeyframePair, config: SamplingConfig, generator: torch.Generator | None
    ) -> KeyframeConditioning:
        """Encode preprocessed keyframes ``(B, 3, H, W)`` and their CLIP inputs (:meth:`clip_keyframes` of the
        keyframes as given, firsts then lasts, 2B of them) into the conditioning of every group of ``config``'s
        layout.

        The noise augmentation of both keyframes is drawn first from ``generator``, as one
        ``(2B, 3, H, W)`` tensor ``[first; last]`` (its first B rows are what SVD's pipeline draws for the firsts).
        """
        device, dtype = self._execution_device, self.unet.dtype
        layout = BatchLayout.of(config, config.branches)
        clip_images = self.clip_keyframes(keyframes.first_images, config.height, config.width) + self.clip_keyframes(
            keyframes.last_images, config.height, config.width
        )
        images = torch.cat([keyframes.first, keyframes.last]).to(device)
        embeddings = self.encode_image_embeddings([image.to(device) for image in clip_images]).to(dtype)  # (2B, 1, D)
        noise = randn_tensor(images.shape, generator=generator, device=device, dtype=images.dtype)
        latents = augmented_image_latents(self.vae, images, noise, config.noise_aug_strength)  # (2B, 4, h, w)
        latents = latents.to(dtype)
        time_ids = added_time_ids(config.fps, config.motion_bucket_id, config.noise_aug_strength).to(device, dtype)
        keyframe = {FORWARD: 0, BACKWARD: 1}  # the forward branch sees the first keyframe, the backward the last
        emb_pairs, lat_pairs = embeddings.chunk(2), latents.chunk(2)

        def conditioning(group, pairs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            value = pairs[keyframe[group.branch]]
            return value if group.conditional else torch.zeros_like(value)

        emb = torch.stack([conditioning(group, emb_pairs) for group in layout.groups])
        lat = torch.stack([conditioning(group, lat_pairs) for group in layout.groups])
        return KeyframeConditioning(emb, lat, time_ids.expand(*emb.shape[:2], 3))

    def encode_image_embeddings(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1], or a list of ``(1, 3, H_i, W_i)`` -> CLIP image embeddings ``(B, 1, D)``."""
        return clip_image_embeddings(self.image_encoder, self.feature_extractor, images)

    def encode_image_latents(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> unscaled latent mode ``(B, 4, h, w)``, as SVD's conditioning expects."""
        return image_latent_mode(self.vae, images)

    def select_conditioning(self, cond: KeyframeConditioning, groups: list[int], config: SamplingConfig) -> dict:
        return cond.select(groups, config.num_frames)

    def denoise_rows(
        self, x: torch.Tensor, sigma: torch.Tensor, conditioning: dict, dual_groups: tuple[int, int] | None
    ) -> torch.Tensor:
        """EDM's preconditioned v-prediction (Karras et al. 2022): ``c_skip x + c_out v(c_in x, c_noise)``."""
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma)
        v = self._unet_call(x * c_in, c_noise, conditioning, dual_groups).float()
        return c_skip * x + c_out * v

    def _unet_call(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        kwargs: dict[str, torch.Tensor],
        dual_groups: tuple[int, int] | None,
    ) -> torch.Tensor:
        """One UNet call; with ``dual_groups`` ``(F, B')`` the batch ``((F + B') R, N, 4, h, w)`` is ``[forward
        rows | backward rows]`` and the backward rows attend with the last forward rows' rotated maps."""
        model_input = concat_image_latents(x, kwargs["image_latents"])  # in the UNet's dtype, as the latents are
        with dual_mode(self.unet, *dual_groups) if dual_groups else nullcontext():
            return self.unet(
                model_input,
                c_noise.to(self.unet.dtype),
                encoder_hidden_states=kwargs["encoder_hidden_states"],
                added_time_ids=kwargs["added_time_ids"],
                return_dict=False,
            )[0]

    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int) -> torch.Tensor:
        """``(B, N, 4, h, w)`` latents -> frames ``(B, 3, N, H, W)`` in [-1, 1], float32.

        Each video is decoded on its own, ``decode_chunk_size`` frames at a time, so the temporal
        decoder never mixes frames of two videos.
        """
        videos = []
        for video in latents / self.vae.config.scaling_factor:
            chunks = [
                self.vae.decode(chunk.to(self.vae.dtype), num_frames=chunk.shape[0]).sample
                for chunk in video.split(decode_chunk_size)
            ]
            videos.append(torch.cat(chunks).float().transpose(0, 1))
        return torch.stack(videos)

    def keyframe_latents(self, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The clean preprocessed keyframes ``(B, 3, H, W)`` in the sampler's latent space (VAE mode times its scaling
        factor, no noise augmentation), stacked ``(B, 2, 4, h, w)``: ViBiD's keyframe-consistency targets."""
        device = self._execution_device
        latents = self.encode_image_latents(torch.cat([first, last]).to(device)).float()
        return torch.stack(latents.chunk(2), 1) * self.vae.config.scaling_factor

    def warn_about_adapter_state(self, config: SamplingConfig) -> None:
        """Say once per pipeline (not per call, nor per load/unload: the evaluation toggles the adapter on purpose)
        when the backward branch will not use a loaded adapter, or has none to use."""
        if not config.uses_backward:
            return
        if not config.rotation and self.has_backward_adapter:
            state, message = (
                "unused",
                (
                    "`rotation=False`: the backward branch uses its own attention and base weights; "
                    "the loaded adapter is unused"
                ),
            )
        elif config.rotation and not self.has_backward_adapter:
            state, message = (
                "missing",
                (
                    "no backward adapter loaded: the backward pass uses the base weights with rotated attention; load "
                    "one with `pipe.load_backward_adapter(...)` (CLI: --adapter) for the paper's quality"
                ),
            )
        else:
            return
        if state not in self._adapter_warnings:
            self._adapter_warnings.add(state)
            logger.warning(message)


def svd_size_rules(folder: Path | None) -> SizeRules:
    """SVD's size rules from a model folder's UNet and VAE configs (``None``: SVD-XT's, before its download)."""
    configs = local_model_configs(folder) if folder is not None else None
    if configs is None:
        return SizeRules(multiple=SIZE_MULTIPLE, long_side=DEFAULT_LONG_SIDE, num_frames=25)
    unet_config, vae_config = configs
    long_side, multiple = size_rules(unet_config, vae_config)
    return SizeRules(multiple=multiple, long_side=long_side, num_frames=unet_config.get("num_frames", 25))


def added_time_ids(fps: int, motion_bucket_id: int, noise_aug_strength: float) -> torch.Tensor:
    """SVD's micro-conditioning ``(3,)`` float32, as sampling, training and the tiny world pass it."""
    # SVD was trained with fps - 1 as the micro-conditioning (sgm's simple_video_sample.py).
    return torch.tensor([fps - 1, motion_bucket_id, noise_aug_strength], dtype=torch.float32)


def image_latent_mode(vae: AutoencoderKLTemporalDecoder, images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> the VAE's unscaled latent mode ``(B, 4, h, w)``, as SVD's conditioning expects."""
    with _vae_upcast(vae):
        return vae.encode(images.to(vae.dtype)).latent_dist.mode()


def augmented_image_latents(
    vae: AutoencoderKLTemporalDecoder, images: torch.Tensor, noise: torch.Tensor, noise_aug_strength: float
) -> torch.Tensor:
    """SVD's keyframe conditioning latents: the unscaled latent mode of ``images`` ``(B, 3, H, W)`` with
    ``noise_aug_strength * noise`` added (sgm's ``cond_aug``), as sampling, training and the tiny world build it."""
    return image_latent_mode(vae, images + noise_aug_strength * noise)


def concat_image_latents(scaled_x: torch.Tensor, image_latents: torch.Tensor) -> torch.Tensor:
    """SVD's UNet input ``(B, N, 8, h, w)``: the EDM-scaled noisy latents ``(B, N, 4, h, w)``, cast to the
    conditioning's dtype, beside the keyframe latents ``(B, N, 4, h, w)`` of every frame (concat conditioning)."""
    return torch.cat([scaled_x.to(image_latents.dtype), image_latents], dim=2)


def unet_inputs(
    x: torch.Tensor, sigma: torch.Tensor, image_latents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """UNet input ``(B, N, 8, h, w)`` and timestep ``(B,)`` for noisy latents ``x`` ``(B, N, 4, h, w)`` at per-sample
    ``sigma`` ``(B,)``, conditioned on keyframe latents ``(B, 4, h, w)``: what SVD's EDM training loss feeds the UNet
    (the project's fine-tuning and the tiny world's forward model)."""
    _, _, c_in, c_noise = edm_scalings(sigma.view(-1, 1, 1, 1, 1))
    conditioning = image_latents.unsqueeze(1).expand(-1, x.shape[1], -1, -1, -1)
    return concat_image_latents(x * c_in, conditioning), c_noise.flatten()


def size_rules(unet_config: dict, vae_config: dict) -> tuple[int, int]:
    """``(default long side, size multiple)`` of a model from its UNet and VAE configs.

    The multiple is the VAE's downsampling times the UNet's. SVD-sized models (multiple 64) default to SVD's
    1024 x 576 training size (their config's ``sample_size`` says 768); smaller ones to their UNet's sample size.
    """
    vae_scale = 2 ** (len(vae_config["block_out_channels"]) - 1)
    multiple = vae_scale * 2 ** (len(unet_config["block_out_channels"]) - 1)
    if multiple == SIZE_MULTIPLE:
        return DEFAULT_LONG_SIDE, multiple
    return unet_config["sample_size"] * vae_scale, multiple


def clip_image_embeddings(
    image_encoder: CLIPVisionModelWithProjection,
    feature_extractor: CLIPImageProcessor,
    images: torch.Tensor | list[torch.Tensor],
) -> torch.Tensor:
    """``(B, 3, H, W)`` in [-1, 1], or a list of ``(b_i, 3, H_i, W_i)`` -> image embeddings ``(B, 1, D)``.

    Exactly SVD's CLIP input (sgm's ``FrozenOpenCLIPImagePredictionEmbedder``, diffusers'
    ``StableVideoDiffusionPipeline._encode_image``): each image, at its own resolution and still in [-1, 1], is
    resized to the encoder's square input with a Gaussian anti-aliasing blur then bicubic interpolation, mapped to
    [0, 1] and normalised with the feature extractor's mean and std (no clamp). Differentiable: the tiny-world
    recipe trains its CLIP tower through it.
    """
    size = image_encoder.config.image_size  # 224 for SVD's ViT-H/14
    batches = list(images) if isinstance(images, list) else [images]
    pixels = torch.cat([_resize_with_antialiasing(batch.float(), (size, size)) for batch in batches])
    pixels = (pixels + 1.0) / 2.0
    mean = torch.tensor(feature_extractor.image_mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(feature_extractor.image_std, device=pixels.device).view(1, 3, 1, 1)
    encoder_dtype = next(image_encoder.parameters()).dtype
    return image_encoder(((pixels - mean) / std).to(encoder_dtype)).image_embeds.unsqueeze(1)


def center_crop_to_aspect(images: torch.Tensor, aspect: float) -> torch.Tensor:
    """The centred crop of ``images`` ``(..., H, W)`` with aspect ``aspect`` (width / height), at their own
    resolution: the region diffusers' ``resize_mode="crop"`` keeps."""
    height, width = images.shape[-2:]
    if width / height > aspect:
        crop_width = max(1, min(width, round(height * aspect)))
        left = (width - crop_width) // 2
        return images[..., :, left : left + crop_width]
    crop_height = max(1, min(height, round(width / aspect)))
    top = (height - crop_height) // 2
    return images[..., top : top + crop_height, :]


@contextmanager
def _vae_upcast(vae: AutoencoderKLTemporalDecoder):
    """Encode in float32 when a float16 VAE asks for it (``force_upcast``), then restore its dtype."""
    dtype = vae.dtype
    upcast = dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(dtype)


def _check_scheduler(scheduler: EulerDiscreteScheduler) -> None:
    config = scheduler.config
    if config.get("prediction_type") != "v_prediction" or not hasattr(scheduler, "sigmas"):
        raise ValueError(
            f"the scheduler must be SVD's EulerDiscreteScheduler with v-prediction (EDM sigmas), got "
            f"{type(scheduler).__name__} with prediction_type={config.get('prediction_type')!r}"
        )
