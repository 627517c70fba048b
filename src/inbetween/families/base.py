"""What every model family's pipeline shares: the one prepare -> sample -> finish path.

Generative Inbetweening (Wang et al., ICLR 2025) adapts an image-to-video model; the method needs four things from
it, which each family's module supplies (:mod:`inbetween.families.svd`, :mod:`inbetween.families.wan`):

1. the conditioning of one branch on one keyframe, and its unconditional rows (:meth:`encode_keyframes`);
2. a branch denoiser in the samplers' VE form ``D(x, sigma)`` over both branches in one batched network call
   (:meth:`make_branch_denoiser`), with the family's noise schedule mapped onto the samplers' sigmas
   (:meth:`sampling_sigmas`, :meth:`initial_latents`);
3. the time flip of the backward branch (inside the branch denoiser; the samplers see forward frame order);
4. the attention rotation (the family's attention processors).

The samplers (:mod:`inbetween.sampling`), keyframe sequences (:mod:`inbetween.sequence`), exact ends, the batch
layout and every front end work over this class only. A family pipeline is ``class P(InbetweenMixin,
<a diffusers DiffusionPipeline>)`` and implements the methods marked "family" below.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput, logging

from ..config import BACKWARD, FORWARD, SamplingConfig
from ..layout import BatchLayout
from ..sampling import BranchDenoiser, BranchEstimates, Coupling, gaussian_noise, sample

logger = logging.get_logger(__name__)

KeyframeInput = PIL.Image.Image | list[PIL.Image.Image] | torch.Tensor
StepEndCallback = Callable[..., dict | None]
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
ASPECT_TOLERANCE = 0.02  # keyframes may differ this much in log aspect (a pixel of rounding at any size)


@dataclass
class InbetweenPipelineOutput(BaseOutput):
    """``frames``: per pair a list of PIL images, or an array/tensor ``(B, N, H, W, 3)`` / ``(B, N, 3, H, W)``
    in [0, 1], or the sampler's latents ``(B, N', C, h, w)`` for ``output_type="latent"``."""

    frames: list[list[PIL.Image.Image]] | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class KeyframePair:
    """The keyframes of a call: ``first`` / ``last`` ``(B, 3, H, W)`` in [-1, 1] as the VAE takes them, and the
    keyframes as given (``first_images`` / ``last_images``: image encoders take them at their own resolution)."""

    first: torch.Tensor
    last: torch.Tensor
    first_images: KeyframeInput
    last_images: KeyframeInput


@dataclass(frozen=True)
class SizeRules:
    """A model's size and frame-count rules, built from its configs (one value per family instance).

    ``multiple``: height and width must be multiples of it; ``long_side``: the output's long side when no size is
    given; ``num_frames``: the default frame count; ``frame_step``: frame counts are ``frame_step * k + 1``
    (1: any count >= 3; 4 for a causal VAE that compresses time 4x with the first frame alone)."""

    multiple: int
    long_side: int
    num_frames: int
    frame_step: int = 1

    def check_size(self, name: str, size: int | None) -> None:
        if size is not None and (size <= 0 or size % self.multiple):
            hint = round_to_multiple(size, self.multiple)
            raise ValueError(f"`{name}` must be a positive multiple of {self.multiple}, got {size}; try {hint}")

    def check_num_frames(self, num_frames: int) -> None:
        if self.frame_step > 1 and (num_frames - 1) % self.frame_step:
            below = (num_frames - 1) // self.frame_step * self.frame_step + 1
            hint = f"{below} or {below + self.frame_step}" if below >= 3 else f"{below + self.frame_step}"
            raise ValueError(
                f"`num_frames` must be {self.frame_step}k + 1 for this model (its VAE compresses time "
                f"{self.frame_step}x after the first frame), got {num_frames}; try {hint}"
            )

    def check(self, config: SamplingConfig) -> None:
        """Raise ``ValueError`` for ``config``'s sizes or frame count that this model cannot take."""
        self.check_size("height", config.height)
        self.check_size("width", config.width)
        if config.num_frames is not None:
            self.check_num_frames(config.num_frames)

    def default_size(self, image: KeyframeInput, height: int | None, width: int | None) -> tuple[int, int]:
        """``(height, width)`` for ``image``: a missing side keeps its aspect (a multiple of ``multiple``); with
        neither given, the long side is ``long_side``."""
        image_width, image_height = image_size(image)
        aspect = image_width / image_height
        if height is None and width is None:
            scale = self.long_side / max(image_width, image_height)
            return (
                round_to_multiple(image_height * scale, self.multiple),
                round_to_multiple(image_width * scale, self.multiple),
            )
        if height is None:
            return round_to_multiple(width / aspect, self.multiple), width
        if width is None:
            return height, round_to_multiple(height * aspect, self.multiple)
        return height, width


class InbetweenMixin:
    """The family-independent half of a keyframe-interpolation pipeline (mixed into a diffusers pipeline)."""

    # family ------------------------------------------------------------------------------------

    family: str = ""  # the family's name, as `inbetween.families.FAMILIES` lists it
    takes_prompt: bool = False  # whether the family is conditioned on text (`prompt`, `negative_prompt`)
    native_last_frame: bool = False  # whether the model itself conditions on a last frame (sampler "native")
    # whether latent frame i is pixel frame i (SVD), so keyframe sequences can join segments in latent space
    latent_frames_are_frames: bool = True

    @property
    def size_rules(self) -> SizeRules:
        raise NotImplementedError

    def encode_keyframes(self, keyframes: KeyframePair, config: SamplingConfig, generator: torch.Generator | None):
        """The family's conditioning of every group of ``config``'s layout, from the keyframes (preprocessed for the
        VAE, and as given)."""
        raise NotImplementedError

    def select_conditioning(self, cond: object, groups: list[int], config: SamplingConfig) -> dict:
        """The network's conditioning keywords for the rows of ``groups`` of ``cond``, built once per call plan."""
        raise NotImplementedError

    def denoise_rows(
        self, x: torch.Tensor, sigma: torch.Tensor, conditioning: dict, dual_groups: tuple[int, int] | None
    ) -> torch.Tensor:
        """One network call: rows ``x`` ``(R, N', C, h, w)`` at ``sigma`` (VE form) -> their denoised estimates
        ``(R, N', C, h, w)`` float32; with ``dual_groups`` ``(F, B')`` the rows are ``[forward | backward]`` and the
        backward rows attend with the forward rows' rotated maps."""
        raise NotImplementedError

    def make_branch_denoiser(self, cond: object, config: SamplingConfig) -> BranchDenoiser:
        """The branch denoiser ``(x (B, N', C, h, w), sigma, branches) -> BranchEstimates`` over ``cond``.

        Each request evaluates the :class:`BatchLayout` of the requested branches in its calls (backward rows see the
        time-reversed ``x``; a rotated backward branch brings the forward rows it attends with) and returns the raw
        conditional / unconditional estimates of those branches in forward frame order. Guidance and fusion are the
        sampler's (:func:`~inbetween.sampling.make_fused_denoiser` for the paper's).
        """
        plans: dict[tuple[str, ...], tuple[BatchLayout, list[dict]]] = {}

        def planned(branches: tuple[str, ...]) -> tuple[BatchLayout, list[dict]]:
            if branches not in plans:  # the conditioning of each call is the same at every step: build it once
                layout = BatchLayout.of(config, branches)
                plans[branches] = (layout, [self.select_conditioning(cond, list(c), config) for c in layout.calls])
            return plans[branches]

        def denoise(x: torch.Tensor, sigma: torch.Tensor, branches: tuple[str, ...]) -> BranchEstimates:
            layout, call_conditioning = planned(tuple(b for b in (FORWARD, BACKWARD) if b in branches))
            x_of = {FORWARD: x, BACKWARD: x.flip(1)}  # the backward branch runs in reversed time
            estimates: dict[bool, dict[str, torch.Tensor]] = {True: {}, False: {}}
            for call, conditioning in zip(layout.calls, call_conditioning, strict=True):
                x_in = torch.stack([x_of[layout.groups[g].branch] for g in call])  # (G', B, N', C, h, w)
                rows = self.denoise_rows(x_in.flatten(0, 1), sigma, conditioning, layout.dual_groups(call))
                denoised = rows.unflatten(0, x_in.shape[:2])
                for j, g in enumerate(call):
                    group = layout.groups[g]
                    # a shared unconditional row stands for the backward branch too, also when only it was asked for
                    shared = layout.shares_unconditional and not group.conditional
                    if group.branch in branches or shared:
                        estimate = denoised[j].flip(1) if group.branch == BACKWARD else denoised[j]
                        estimates[group.conditional][group.branch] = estimate
            if layout.shares_unconditional:
                estimates[False][BACKWARD] = estimates[False][FORWARD]
                estimates[False] = {branch: estimates[False][branch] for branch in branches}
            return BranchEstimates(cond=estimates[True], uncond=estimates[False])

        return denoise

    def sampling_sigmas(self, config: SamplingConfig) -> torch.Tensor:
        """The samplers' VE sigmas ``(steps + 1,)``, float32, last one 0, on the execution device."""
        raise NotImplementedError

    def latent_shape(self, config: SamplingConfig, batch_size: int) -> tuple[int, ...]:
        """Shape of the unit noise the family draws (in the order its own pipeline draws it)."""
        raise NotImplementedError

    def initial_latents(self, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """The sampler's start ``(B, N', C, h, w)`` (frames on axis 1) from unit noise of :meth:`latent_shape`."""
        raise NotImplementedError

    def keyframe_latents(self, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The clean keyframes ``(B, 3, H, W)`` in the sampler's space, ``(B, 2, C, h, w)``."""
        raise NotImplementedError

    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int) -> torch.Tensor:
        """Sampled latents ``(B, N', C, h, w)`` -> frames ``(B, 3, N, H, W)`` in [-1, 1], float32."""
        raise NotImplementedError

    def check_call(self, config: SamplingConfig, batch_size: int, output_type: str, allow_oversize: bool) -> None:
        """Refuse, before allocating, a call that does not fit the device's memory (family's estimate)."""

    def check_family_options(self, config: SamplingConfig) -> None:
        """Raise ``ValueError`` for options this family does not take (one line, with the fix)."""
        check_family_options(
            self.family, self.takes_prompt, self.native_last_frame, self.latent_frames_are_frames, config
        )

    def default_config(self) -> SamplingConfig:
        """The sampling options of a call given no config: the paper's, with the family's own guidance."""
        return SamplingConfig()

    def warn_about_adapter_state(self, config: SamplingConfig) -> None:
        """Say when the backward branch will not use a loaded adapter, or has none to use (families with one)."""

    @property
    def has_backward_adapter(self) -> bool:
        """Whether a backward adapter is loaded (a family without adapters has none)."""
        return False

    def unload_backward_adapter(self) -> None:
        """Base weights in the backward branch: what a family without adapters always has."""

    def load_backward_adapter(self, adapter: object) -> None:
        raise ValueError(
            f"backward adapters are trained for SVD; this {self.family} model has none yet (its dual-directional "
            "samplers run training-free); drop --adapter"
        )

    # shared ------------------------------------------------------------------------------------

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (64 for SVD)."""
        return self.size_rules.multiple

    @property
    def default_long_side(self) -> int:
        """The long side of the output when no size is given (1024 for SVD)."""
        return self.size_rules.long_side

    def default_size(
        self, image: KeyframeInput, height: int | None = None, width: int | None = None
    ) -> tuple[int, int]:
        """``(height, width)`` of the output for ``image`` by the model's :class:`SizeRules`."""
        return self.size_rules.default_size(image, height, width)

    @staticmethod
    def check_keyframes(first_image: KeyframeInput, last_image: KeyframeInput) -> None:
        """Raise ``ValueError`` for keyframes of the wrong type, count or aspect (needs no model: the CLI calls it
        before loading one)."""
        for name, image in (("first_image", first_image), ("last_image", last_image)):
            if not isinstance(image, PIL.Image.Image | list | torch.Tensor):
                raise ValueError(
                    f"`{name}` must be a PIL image, a list of them or a tensor, got {type(image).__name__}"
                )
        if batch_size_of(first_image) != batch_size_of(last_image):
            raise ValueError(
                f"got {batch_size_of(first_image)} first keyframes but {batch_size_of(last_image)} last ones"
            )
        first_aspect, last_aspect = aspect_of(first_image), aspect_of(last_image)
        if abs(math.log(first_aspect / last_aspect)) > ASPECT_TOLERANCE:
            raise ValueError(
                f"the keyframes have different aspect ratios ({first_aspect:.3f} vs {last_aspect:.3f}); "
                "crop them to the same aspect first"
            )

    def check_inputs(self, config: SamplingConfig, output_type: str) -> None:
        """Raise ``ValueError`` naming the argument, the value and the fix, for what only the model decides (sizes,
        frame counts, the options its family takes) and the output type; the config validated itself."""
        self.size_rules.check(config)
        self.check_family_options(config)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")

    def preprocess_keyframes(self, images: KeyframeInput, height: int, width: int) -> torch.Tensor:
        """Keyframes as ``(B, 3, H, W)`` in [-1, 1] for the VAE; PIL images are resized and center-cropped to the
        aspect, tensors ``(B, 3, H', W')`` in [0, 1] are resized."""
        mode = "crop" if not isinstance(images, torch.Tensor) else "default"
        return self.video_processor.preprocess(images, height=height, width=width, resize_mode=mode)

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
        config = (config or self.default_config()).with_options(**options)
        rules = self.size_rules
        height, width = rules.default_size(first_image, config.height, config.width)
        return config.with_defaults(rules.num_frames, height, width)

    def prepare(
        self,
        firsts: KeyframeInput,
        config: SamplingConfig | None,
        batch_size: int,
        output_type: str,
        allow_oversize: bool,
        options: dict[str, object],
    ) -> SamplingConfig:
        """Steps 0-1 of every call (two keyframes or a sequence): the filled-in config, checked against the model,
        the memory and the adapter state."""
        if not isinstance(config, SamplingConfig | None):
            raise ValueError(
                f"the third argument is a `SamplingConfig`, got {type(config).__name__}; pass sampling options by "
                "keyword, e.g. `pipe(first, last, height=576, width=1024)`"
            )
        config = self.sampling_config(firsts, config, **options)
        self.check_inputs(config, output_type)
        self.check_call(config, batch_size, output_type, allow_oversize)
        self.warn_about_adapter_state(config)
        return config

    def finish(
        self,
        latents: torch.Tensor,
        config: SamplingConfig,
        output_type: str,
        keyframe_pixels: dict[int, torch.Tensor],
    ) -> list[list[PIL.Image.Image]] | np.ndarray | torch.Tensor:
        """The last step of every call: decode ``latents``, write the keyframes' own pixels at their frames when
        ``exact_ends`` is on (``{frame: (B, 3, H, W) in [-1, 1]}``), and hand the frames back as ``output_type``."""
        if output_type == "latent":
            return latents
        video = self.decode_latents(latents, config.decode_chunk_size)
        if config.exact_ends:
            video = with_frames(video, keyframe_pixels)
        return self.video_processor.postprocess_video(video=video, output_type=output_type)

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
        callback_on_step_end: StepEndCallback | None = None,
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
            **options: any field of :class:`~inbetween.config.SamplingConfig` as a keyword, overriding `config`:
                `num_frames` (default: the model's), `height`, `width` (multiples of `pipe.size_multiple`; default:
                the first keyframe's aspect with the long side `pipe.default_long_side`; PIL keyframes are resized
                and center-cropped to it), `num_inference_steps`, guidance, `sampler`, `fusion`, `rotation`,
                re-injection, `solver`, `exact_ends`, the family's own (SVD: `fps`, `motion_bucket_id`,
                `noise_aug_strength`; Wan: `prompt`, `negative_prompt`); named settings:
                `SamplingConfig.preset("fast")`.
            generator (`torch.Generator`, *optional*): source of ALL noise: the same seed gives the same video.
            latents (`torch.Tensor`, *optional*): unit-variance noise of the family's latent shape.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"latent"`.
            callback_on_step_end (`Callable`, *optional*): called as `callback(pipe, step, sigma, {"latents": ...})`
                after every step; may return `{"latents": new_latents}`.
            return_dict (`bool`, defaults to True): return an :class:`InbetweenPipelineOutput` instead of a tuple.
            allow_oversize (`bool`, defaults to False): run even when the call's estimated peak memory exceeds the
                memory available on the execution device (refused by default with a one-line `ValueError`).

        Returns:
            :class:`InbetweenPipelineOutput` or `(frames,)`.
        """
        # 0-1. The sampling options, filled in and checked
        self.check_keyframes(first_image, last_image)
        config = self.prepare(first_image, config, batch_size_of(first_image), output_type, allow_oversize, options)

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

        # 7. Decode, the keyframes' own pixels at the ends
        pixels = {}
        if config.exact_ends and output_type != "latent":
            first, last = (
                self.preprocess_keyframes(k, config.height, config.width) for k in (first_image, last_image)
            )
            pixels = {0: first, -1: last}
        frames = self.finish(x, config, output_type, pixels)
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
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
    ) -> torch.Tensor:
        """The sampled latents ``(B, N', C, h, w)`` of checked keyframes and a filled-in ``config`` (what
        :meth:`__call__` does between its checks and the decode). ``coupling`` ties the B videos to each other
        (:mod:`inbetween.sequence`: shared boundary frames); by default they are independent."""
        device = self._execution_device

        # 2. Encode keyframes (the family draws its keyframe noise, if any, from `generator` first)
        first = self.preprocess_keyframes(first_image, config.height, config.width)
        last = self.preprocess_keyframes(last_image, config.height, config.width)
        cond = self.encode_keyframes(KeyframePair(first, last, first_image, last_image), config, generator)

        # 3. The family's noise schedule as the samplers' sigmas
        sigmas = self.sampling_sigmas(config)

        # 4. Initial noise
        shape = self.latent_shape(config, first.shape[0])
        noise = gaussian_noise(generator, coupling)
        if latents is None:
            latents = noise(torch.empty(shape, device=device, dtype=torch.float32))
        elif tuple(latents.shape) != shape:
            raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}")
        x = self.initial_latents(latents.to(device, torch.float32), sigmas)

        # 5-6. The branch denoiser, handed to the sampler `config.sampler`
        model = self.make_branch_denoiser(cond, config)
        if not self.latent_frames_are_frames:
            # A causal VAE packs the far end's keyframe with other frames in one latent frame: no latent holds the
            # keyframe alone there, so exact ends are the keyframes' pixels written after decoding (:meth:`finish`).
            config = config.with_options(exact_ends=False)
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


def check_family_options(
    family: str, takes_prompt: bool, native_last_frame: bool, latent_frames_are_frames: bool, config: SamplingConfig
) -> None:
    """Raise ``ValueError`` for options a model of ``family`` does not take: a prompt where it takes no text, the
    ``native`` sampler where it was not trained on a last frame (the pipeline, and the CLI before loading)."""
    if config.prompt and not takes_prompt:
        raise ValueError(
            f"this {family} model takes no text prompt, got `prompt`={config.prompt!r}; drop --prompt "
            "(a Wan model takes one)"
        )
    if config.negative_prompt is not None and not takes_prompt:
        raise ValueError(f"this {family} model takes no text, so no `negative_prompt`; drop --negative-prompt")
    if config.keyframe_consistency and not latent_frames_are_frames:
        raise ValueError(
            f"`keyframe_consistency` sets a branch's far latent frame to the keyframe's latent, but this {family} "
            "model's causal VAE packs that keyframe with three other frames in one latent frame; drop it "
            "(--no-keyframe-consistency)"
        )
    if config.sampler == "native" and not native_last_frame:
        raise ValueError(
            f"`sampler` 'native' needs a model trained on first and last frames, and this {family} model is "
            "image-to-video only; use gi, vibid or trf (or a Wan FLF2V / Wan 2.2 A14B model)"
        )


def with_frames(video: torch.Tensor, frames: dict[int, torch.Tensor]) -> torch.Tensor:
    """``video`` ``(B, 3, N, H, W)`` with frame ``t`` replaced by ``frames[t]`` ``(B, 3, H, W)`` (same value range)
    for every ``t``: keyframe-exact ends write the keyframes' own pixels where the decoder's are near them."""
    out = video.clone()
    for t, pixels in frames.items():
        out[:, :, t] = pixels.to(out.device, out.dtype)
    return out


def batch_size_of(image: KeyframeInput) -> int:
    if isinstance(image, list):
        return len(image)
    if isinstance(image, torch.Tensor):
        return image.shape[0] if image.ndim == 4 else 1
    return 1


def image_size(image: KeyframeInput) -> tuple[int, int]:
    """``(width, height)`` of the first keyframe of ``image``."""
    if isinstance(image, list):
        image = image[0]
    if isinstance(image, torch.Tensor):
        return image.shape[-1], image.shape[-2]
    return image.size


def aspect_of(image: KeyframeInput) -> float:
    width, height = image_size(image)
    return width / height


def round_to_multiple(size: float, multiple: int) -> int:
    return max(multiple, int(round(size / multiple)) * multiple)
