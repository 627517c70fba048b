"""InbetweenPipeline: the video between two keyframes with Stable Video Diffusion.

Generative Inbetweening (Wang et al., ICLR 2025): a forward pass conditioned on the first
keyframe and a backward pass, over the time-reversed video, conditioned on the last keyframe,
fused at every denoising step. Both passes run in ONE UNet call per step: the batch is
``[fwd-uncond, fwd-cond, bwd-uncond, bwd-cond]`` and only the temporal self-attention layers
tell the halves apart (see ``attention.py``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import PIL.Image
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
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import CLIPVisionModelWithProjection

try:  # transformers >= 5 names its torchvision-free processor; the plain name warns without torchvision
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:
    from transformers import CLIPImageProcessor

from .adapter import BackwardAdapter
from .attention import dual_mode, install_rotation, rotation_processors
from .config import SamplingConfig
from .layout import BACKWARD, FORWARD, BatchLayout
from .memory import check_pipeline_call
from .sampling import (
    BranchDenoiser,
    BranchEstimates,
    Coupling,
    edm_scalings,
    gaussian_noise,
    sample,
)

logger = logging.get_logger(__name__)

KeyframeInput = PIL.Image.Image | list[PIL.Image.Image] | torch.Tensor
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
SIZE_MULTIPLE = 64
DEFAULT_LONG_SIDE = 1024
ASPECT_TOLERANCE = 0.02
ADAPTER_FILE = "backward_adapter.safetensors"  # a model folder's own adapter, loaded by from_pretrained


@dataclass
class InbetweenPipelineOutput(BaseOutput):
    """``frames``: per pair a list of PIL images, or an array/tensor ``(B, N, H, W, 3)`` / ``(B, N, 3, H, W)``
    in [0, 1], or the latents ``(B, N, 4, H/8, W/8)`` for ``output_type="latent"``."""

    frames: list[list[PIL.Image.Image]] | np.ndarray | torch.Tensor


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


class InbetweenPipeline(DiffusionPipeline):
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
    def size_multiple(self) -> int:
        """Height and width must be multiples of this: the VAE's and the UNet's downsampling together (64 for SVD)."""
        return size_rules(self.unet.config, self.vae.config)[1]

    @property
    def default_long_side(self) -> int:
        """The long side of the output when no size is given (1024 for SVD)."""
        return size_rules(self.unet.config, self.vae.config)[0]

    @staticmethod
    def default_size(
        image: KeyframeInput,
        height: int | None = None,
        width: int | None = None,
        long_side: int = DEFAULT_LONG_SIDE,
        multiple: int = SIZE_MULTIPLE,
    ) -> tuple[int, int]:
        """``(height, width)`` for ``image``: a missing side keeps its aspect (a multiple of ``multiple``); with
        neither given, the long side is ``long_side``."""
        image_width, image_height = _image_size(image)
        aspect = image_width / image_height
        if height is None and width is None:
            scale = long_side / max(image_width, image_height)
            return _round_to_multiple(image_height * scale, multiple), _round_to_multiple(
                image_width * scale, multiple
            )
        if height is None:
            return _round_to_multiple(width / aspect, multiple), width
        if width is None:
            return height, _round_to_multiple(height * aspect, multiple)
        return height, width

    @staticmethod
    def check_keyframes(first_image: KeyframeInput, last_image: KeyframeInput) -> None:
        """Raise ``ValueError`` for keyframes of the wrong type, count or aspect (needs no model: the CLI calls it
        before loading one)."""
        for name, image in (("first_image", first_image), ("last_image", last_image)):
            if not isinstance(image, PIL.Image.Image | list | torch.Tensor):
                raise ValueError(
                    f"`{name}` must be a PIL image, a list of them or a tensor, got {type(image).__name__}"
                )
        if _batch_size(first_image) != _batch_size(last_image):
            raise ValueError(f"got {_batch_size(first_image)} first keyframes but {_batch_size(last_image)} last ones")
        first_aspect, last_aspect = _aspect(first_image), _aspect(last_image)
        if abs(math.log(first_aspect / last_aspect)) > ASPECT_TOLERANCE:
            raise ValueError(
                f"the keyframes have different aspect ratios ({first_aspect:.3f} vs {last_aspect:.3f}); "
                "crop them to the same aspect first"
            )

    @staticmethod
    def check_inputs(config: SamplingConfig, output_type: str, size_multiple: int = SIZE_MULTIPLE) -> None:
        """Raise ``ValueError`` naming the argument, the value and the fix, for what only the model decides (the
        size multiple) and the output type; the config validated itself (needs no model)."""
        for name in ("height", "width"):
            size = getattr(config, name)
            if size is not None and (size <= 0 or size % size_multiple):
                hint = _round_to_multiple(size, size_multiple)
                raise ValueError(f"`{name}` must be a positive multiple of {size_multiple}, got {size}; try {hint}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")

    def preprocess_keyframes(self, images: KeyframeInput, height: int, width: int) -> torch.Tensor:
        """Keyframes as ``(B, 3, H, W)`` in [-1, 1] for the VAE; PIL images are resized and center-cropped to the
        aspect, tensors ``(B, 3, H', W')`` in [0, 1] are resized."""
        mode = "crop" if not isinstance(images, torch.Tensor) else "default"
        return self.video_processor.preprocess(images, height=height, width=width, resize_mode=mode)

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
        self,
        first: torch.Tensor,
        last: torch.Tensor,
        clip_images: list[torch.Tensor],
        config: SamplingConfig,
        layout: BatchLayout,
        generator: torch.Generator | None,
    ) -> KeyframeConditioning:
        """Encode preprocessed keyframes ``(B, 3, H, W)`` and their CLIP inputs (:meth:`clip_keyframes`, firsts
        then lasts, 2B of them) into the conditioning of ``layout``'s groups.

        The noise augmentation of both keyframes is drawn first from ``generator``, as one
        ``(2B, 3, H, W)`` tensor ``[first; last]`` (its first B rows are what SVD's pipeline draws for the firsts).
        """
        device, dtype = self._execution_device, self.unet.dtype
        images = torch.cat([first, last]).to(device)
        embeddings = self.encode_image_embeddings([image.to(device) for image in clip_images]).to(dtype)  # (2B, 1, D)
        noise = randn_tensor(images.shape, generator=generator, device=device, dtype=images.dtype)
        latents = self.encode_image_latents(images + config.noise_aug_strength * noise).to(dtype)  # (2B, 4, h, w)
        # SVD was trained with fps - 1 as the micro-conditioning (sgm's simple_video_sample.py).
        time_ids = torch.tensor(
            [config.fps - 1, config.motion_bucket_id, config.noise_aug_strength], device=device, dtype=dtype
        )
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
        with _vae_upcast(self.vae):
            return self.vae.encode(images.to(self.vae.dtype)).latent_dist.mode()

    def make_branch_denoiser(self, cond: KeyframeConditioning, config: SamplingConfig) -> BranchDenoiser:
        """The branch denoiser ``(x (B, N, 4, h, w), sigma, branches) -> BranchEstimates`` over ``cond``.

        Each request evaluates the :class:`BatchLayout` of the requested branches (backward rows see the
        time-reversed ``x``; a rotated backward branch brings the forward rows it attends with) and returns the
        raw conditional / unconditional estimates of those branches in forward frame order. Guidance and fusion are
        the sampler's (:func:`~inbetween.sampling.make_fused_denoiser` for the paper's).
        """
        num_frames = config.num_frames
        layouts: dict[tuple[str, ...], tuple[BatchLayout, list[dict[str, torch.Tensor]]]] = {}

        def planned(branches: tuple[str, ...]) -> tuple[BatchLayout, list[dict[str, torch.Tensor]]]:
            if branches not in layouts:  # the conditioning of each call is the same at every step: build it once
                layout = BatchLayout.of(config, branches)
                layouts[branches] = (layout, [cond.select(list(call), num_frames) for call in layout.calls])
            return layouts[branches]

        def denoise(x: torch.Tensor, sigma: torch.Tensor, branches: tuple[str, ...]) -> BranchEstimates:
            layout, call_conditioning = planned(tuple(b for b in (FORWARD, BACKWARD) if b in branches))
            c_skip, c_out, c_in, c_noise = edm_scalings(sigma)
            x_of = {FORWARD: x, BACKWARD: x.flip(1)}  # the backward branch runs in reversed time
            estimates: dict[bool, dict[str, torch.Tensor]] = {True: {}, False: {}}
            for call, conditioning in zip(layout.calls, call_conditioning, strict=True):
                x_in = torch.stack([x_of[layout.groups[g].branch] for g in call])  # (G', B, N, 4, h, w)
                v = self._unet_call(x_in.flatten(0, 1) * c_in, c_noise, conditioning, layout.dual_groups(call))
                v = v.unflatten(0, x_in.shape[:2]).float()
                for j, g in enumerate(call):
                    group = layout.groups[g]
                    # a shared unconditional row stands for the backward branch too, also when only it was asked for
                    shared = layout.shares_unconditional and not group.conditional
                    if group.branch in branches or shared:
                        denoised = c_skip * x_in[j] + c_out * v[j]
                        estimates[group.conditional][group.branch] = (
                            denoised.flip(1) if group.branch == BACKWARD else denoised
                        )
            if layout.shares_unconditional:
                estimates[False][BACKWARD] = estimates[False][FORWARD]
                estimates[False] = {branch: estimates[False][branch] for branch in branches}
            return BranchEstimates(cond=estimates[True], uncond=estimates[False])

        return denoise

    def _unet_call(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        kwargs: dict[str, torch.Tensor],
        dual_groups: tuple[int, int] | None,
    ) -> torch.Tensor:
        """One UNet call; with ``dual_groups`` ``(F, B')`` the batch ``((F + B') R, N, 4, h, w)`` is ``[forward
        rows | backward rows]`` and the backward rows attend with the last forward rows' rotated maps."""
        model_input = torch.cat([x.to(self.unet.dtype), kwargs["image_latents"]], dim=2)
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

    # call ---------------------------------------------------------------------------------------

    def sampling_config(
        self, first_image: KeyframeInput, config: SamplingConfig | None = None, **options: object
    ) -> SamplingConfig:
        """``config`` (default: the paper's) with ``options`` applied and the size and frame count filled in from
        the first keyframe and the model. Raises ``ValueError`` for an unknown option or a bad value."""
        unknown = sorted(set(options) - set(SamplingConfig.field_names()))
        if unknown:
            raise ValueError(
                f"unknown sampling option {', '.join(f'`{name}`' for name in unknown)}; "
                f"the options are the fields of SamplingConfig: {', '.join(SamplingConfig.field_names())}"
            )
        config = replace(config or SamplingConfig(), **options)
        height, width = self.default_size(
            first_image, config.height, config.width, self.default_long_side, self.size_multiple
        )
        return config.with_defaults(self.unet.config.num_frames, height, width)

    @torch.no_grad()
    def __call__(
        self,
        first_image: KeyframeInput,
        last_image: KeyframeInput,
        config: SamplingConfig | None = None,
        *,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
        return_dict: bool = True,
        allow_oversize: bool = False,
        **options: object,
    ) -> InbetweenPipelineOutput | tuple:
        r"""Generate the video from ``first_image`` to ``last_image`` (both included).

        Args:
            first_image, last_image (`PIL.Image.Image`, `list[PIL.Image.Image]` or `torch.Tensor`):
                The keyframes; a list or a `(B, 3, H, W)` tensor in [0, 1] interpolates B pairs in one call.
            config (`SamplingConfig`, *optional*): the sampling options (default: the paper's).
            **options: any field of :class:`~inbetween.config.SamplingConfig` as a keyword, overriding `config`,
                with SVD's names: `num_frames` (default: the UNet's, 14 for SVD, 25 for SVD-XT), `height`,
                `width` (multiples of `pipe.size_multiple`, 64 for SVD; default: the first keyframe's aspect with
                the long side `pipe.default_long_side`, 1024 for SVD; PIL keyframes are resized and
                center-cropped to it, and CLIP sees the same crop at the keyframe's own resolution),
                `num_inference_steps` (50), `min_guidance_scale` / `max_guidance_scale` (1.0 / 3.0: SVD's
                per-frame ramp, per branch, symmetrised for `fusion="average"`; `<= 1` disables guidance), `fps`,
                `motion_bucket_id`, `noise_aug_strength` (7, 127, 0.02), `fusion` (`"average"`, `"linear"`, or
                `"forward"` / `"backward"` for one branch alone: `"forward"` is plain SVD image-to-video),
                `rotation` (True: the paper; False: the backward branch attends on its own with the base weights,
                time-reversal fusion), `noise_injection_steps` / `noise_injection_ratio` (5 / 0.5),
                `decode_chunk_size` (all frames), `split_guidance_batch` (False; True: two UNet calls per step,
                lower peak memory, same result), `sampler` (`"gi"`, `"vibid"`, `"trf"`, `"forward"`), `solver`,
                `guidance_ramp`, `cfg_pp`, `keyframe_consistency` (:mod:`inbetween.sampling`; named settings:
                `SamplingConfig.preset("fast")`).
            generator (`torch.Generator`, *optional*): source of ALL noise (augmentation, initial latents,
                re-injection): the same seed gives the same video.
            latents (`torch.Tensor`, *optional*): unit-variance noise `(B, N, 4, H/8, W/8)`, scaled by the scheduler's
                `init_noise_sigma` as in SVD's pipeline.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"latent"`.
            callback_on_step_end (`Callable`, *optional*): called as `callback(pipe, step, sigma, {"latents": ...})`
                after every step; may return `{"latents": new_latents}`.
            return_dict (`bool`, defaults to True): return an :class:`InbetweenPipelineOutput` instead of a tuple.
            allow_oversize (`bool`, defaults to False): run even when the call's estimated peak memory
                (:mod:`inbetween.memory`, from the shapes, before anything is allocated) exceeds the memory available
                on the execution device; by default such a call is refused with a one-line `ValueError` that gives
                the estimate, the available memory and the options that lower it.

        Returns:
            :class:`InbetweenPipelineOutput` or `(frames,)`.
        """
        # 0. The sampling options, with the size from the first keyframe and the frame count from the UNet
        if not isinstance(config, SamplingConfig | None):
            raise ValueError(
                f"the third argument is a `SamplingConfig`, got {type(config).__name__}; pass sampling options by "
                "keyword, e.g. `pipe(first, last, height=576, width=1024)`"
            )
        self.check_keyframes(first_image, last_image)
        config = self.sampling_config(first_image, config, **options)

        # 1. Check inputs
        self.check_inputs(config, output_type, self.size_multiple)
        check_pipeline_call(self, config, _batch_size(first_image), output_type, allow_oversize=allow_oversize)
        self.warn_about_adapter_state(config)

        # 2-6. Encode the keyframes, sample the latents
        x = self.sample_latents(
            first_image,
            last_image,
            config,
            generator=generator,
            latents=latents,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )

        # 7. Decode
        if output_type == "latent":
            frames = x
        else:
            video = self.decode_latents(x, config.decode_chunk_size)
            if config.exact_ends:
                keyframes = (first_image, last_image)
                pixels = [self.preprocess_keyframes(image, config.height, config.width) for image in keyframes]
                video = with_frames(video, {0: pixels[0], -1: pixels[1]})
            frames = self.video_processor.postprocess_video(video=video, output_type=output_type)
        self.maybe_free_model_hooks()
        return InbetweenPipelineOutput(frames=frames) if return_dict else (frames,)

    def sample_latents(
        self,
        first_image: KeyframeInput,
        last_image: KeyframeInput,
        config: SamplingConfig,
        *,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        coupling: Coupling | None = None,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
    ) -> torch.Tensor:
        """The sampled latents ``(B, N, 4, H/8, W/8)`` of checked keyframes and a filled-in ``config`` (what
        :meth:`__call__` does between its checks and the decode). ``coupling`` ties the B videos to each other
        (:mod:`inbetween.sequence`: shared boundary frames); by default they are independent."""
        device = self._execution_device
        layout = BatchLayout.of(config, config.branches)

        # 2. Encode keyframes (draws the noise augmentation from `generator`)
        first = self.preprocess_keyframes(first_image, config.height, config.width)
        last = self.preprocess_keyframes(last_image, config.height, config.width)
        clip_images = self.clip_keyframes(first_image, config.height, config.width) + self.clip_keyframes(
            last_image, config.height, config.width
        )
        cond = self.encode_keyframes(first, last, clip_images, config, layout, generator)

        # 3. Sigmas from the scheduler (Karras, sigma_max 700 -> sigma_min 0.002, then 0)
        self.scheduler.set_timesteps(config.num_inference_steps, device=device)
        sigmas = self.scheduler.sigmas.to(device, torch.float32)

        # 4. Initial noise
        shape = (
            first.shape[0],
            config.num_frames,
            self.vae.config.latent_channels,
            config.height // self.vae_scale_factor,
            config.width // self.vae_scale_factor,
        )
        noise = gaussian_noise(generator, coupling)
        if latents is None:
            latents = noise(torch.empty(shape, device=device, dtype=torch.float32))
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}")
        # SVD's pipeline starts from init_noise_sigma (sqrt(sigma_max^2 + 1) for its "leading" spacing).
        x = latents.to(device, torch.float32) * self.scheduler.init_noise_sigma

        # 5-6. The branch denoiser, handed to the sampler `config.sampler` (the paper's: fused Euler with re-injection)
        model = self.make_branch_denoiser(cond, config)
        needs_latents = config.keyframe_consistency or config.exact_ends
        keyframe_latents = self.keyframe_latents(first, last) if needs_latents else None
        share = coupling.share if coupling is not None else Coupling().share
        with self.progress_bar(total=config.num_inference_steps) as progress_bar:

            def on_step_end(step: int, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
                progress_bar.update()
                if callback_on_step_end is None:
                    return None
                tensors = {name: x for name in callback_on_step_end_tensor_inputs if name == "latents"}
                return (callback_on_step_end(self, step, sigma, tensors) or {}).get("latents")

            return sample(
                config,
                model,
                x,
                sigmas,
                noise=noise,
                share=share,
                callback=on_step_end,
                keyframe_latents=keyframe_latents,
            )

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


def with_frames(video: torch.Tensor, frames: dict[int, torch.Tensor]) -> torch.Tensor:
    """``video`` ``(B, 3, N, H, W)`` with frame ``t`` replaced by ``frames[t]`` ``(B, 3, H, W)`` (same value range)
    for every ``t``: keyframe-exact ends write the keyframes' own pixels where the decoder's are near them."""
    out = video.clone()
    for t, pixels in frames.items():
        out[:, :, t] = pixels.to(out.device, out.dtype)
    return out


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


def _batch_size(image: KeyframeInput) -> int:
    if isinstance(image, list):
        return len(image)
    if isinstance(image, torch.Tensor):
        return image.shape[0] if image.ndim == 4 else 1
    return 1


def _image_size(image: KeyframeInput) -> tuple[int, int]:
    """``(width, height)`` of the first keyframe of ``image``."""
    if isinstance(image, list):
        image = image[0]
    if isinstance(image, torch.Tensor):
        return image.shape[-1], image.shape[-2]
    return image.size


def _aspect(image: KeyframeInput) -> float:
    width, height = _image_size(image)
    return width / height


def _round_to_multiple(size: float, multiple: int = SIZE_MULTIPLE) -> int:
    return max(multiple, int(round(size / multiple)) * multiple)
