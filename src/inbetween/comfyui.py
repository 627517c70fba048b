"""ComfyUI nodes over the library: load a model, interpolate an IMAGE batch of keyframes (Wang et al., ICLR 2025).

Two nodes, thin over what the CLI and the app call (no second implementation):

- **Load inbetween model** (:class:`LoadInbetweenModel`): the :class:`~inbetween.model_config.ModelConfig` fields as
  inputs: a Hub id or a local SVD folder (``tiny-world``: the tiny model shipped in the package), an optional backward
  adapter file, dtype, CPU offload, and optionally the weights variant and the device; gives an
  ``INBETWEEN_PIPELINE``, loaded as ``inbetween interpolate`` loads it (:func:`inbetween.app.load_model`).
- **Inbetween interpolate** (:class:`InbetweenInterpolate`): the keyframes in order as ComfyUI's IMAGE batch
  ``(B, H, W, C)`` float in [0, 1] (and an optional second batch appended after them), loop, preset, seed, frames per
  segment, size, steps, segment batch and any other :class:`~inbetween.config.SamplingConfig` field in ``options``
  (``name=value, ...``); gives the IMAGE batch of every frame, the joins once
  (:func:`inbetween.sequence.interpolate_sequence`), for ComfyUI's own save and video nodes.

ComfyUI's progress bar advances per denoising step and its cancel button stops the run after the current step
(``comfy.utils.ProgressBar``, ``comfy.model_management.throw_exception_if_processing_interrupted``, looked up when a
node runs, so this module imports without ComfyUI). A mistake is raised as :class:`InbetweenError` carrying the
library's one-line message, which ComfyUI shows as the node's error.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields

from .config import PRESETS, SamplingConfig
from .errors import USER_ERRORS, one_line
from .hub import TINY_WORLD
from .model_config import DTYPES, ModelConfig
from .progress import StepProgress, step_progress

if typing.TYPE_CHECKING:
    import torch

    from .pipeline import InbetweenPipeline

PIPELINE_TYPE = "INBETWEEN_PIPELINE"
CATEGORY = "inbetween"
MAX_SEED = 2**63 - 1
MAX_SIZE = 16384
# The loader's inputs are ModelConfig's fields; these come first, in the order saved workflows list their widgets
# (the others were added later, as optional inputs). An empty path input means none.
LOADER_REQUIRED = ("model", "adapter", "dtype", "cpu_offload")
OPTIONAL_PATHS = ("adapter", "variant")
# The node's own inputs that are SamplingConfig fields; `options` may not set them a second time.
NODE_FIELDS = {
    "num_frames": "frames_per_segment",
    "height": "height",
    "width": "width",
    "num_inference_steps": "steps",
}


class InbetweenError(ValueError):
    """A bad input or a model that cannot run it: the library's one-line message, no traceback of ours."""


@dataclass(frozen=True)
class StepHooks:
    """What a run reports to its host after every denoising step: ``progress(done, total)``, and ``check()``, which
    raises to stop the run (ComfyUI's cancel)."""

    progress: Callable[[int, int], None] = lambda done, total: None
    check: Callable[[], None] = lambda: None


def comfy_hooks(total: int) -> StepHooks:
    """ComfyUI's progress bar of ``total`` steps and its interrupt check; no-ops outside ComfyUI."""
    try:
        import comfy.model_management
        import comfy.utils
    except ImportError:
        return StepHooks()
    bar = comfy.utils.ProgressBar(total)
    return StepHooks(
        progress=lambda done, total: bar.update_absolute(done, total),
        check=comfy.model_management.throw_exception_if_processing_interrupted,
    )


def user_errors(run: Callable[[], object]) -> object:
    """``run()``, with the library's user errors re-raised as one-line :class:`InbetweenError` s."""
    try:
        return run()
    except InbetweenError:
        raise
    except USER_ERRORS as exc:
        raise InbetweenError(one_line(exc)) from None


def load_model(model: str = TINY_WORLD, adapter: str = "", **options: object) -> tuple[InbetweenPipeline]:
    """The pipeline of ``model`` (Hub id or folder) with the backward adapter file ``adapter`` ("" for none, or the
    model folder's own), as ``inbetween interpolate --model ... --adapter ...`` loads it; ``options``: the other
    :class:`~inbetween.model_config.ModelConfig` fields (``dtype``, ``cpu_offload``, ``device``, ``variant``)."""
    from .app import load_model as load_config

    values = {name: value.strip() if isinstance(value, str) else value for name, value in options.items()}
    values |= {name: values.get(name) or None for name in OPTIONAL_PATHS if name in values}  # widgets send ""
    config = user_errors(lambda: ModelConfig(model.strip(), adapter=adapter.strip() or None, **values))
    return (user_errors(lambda: load_config(config)),)


def loader_inputs() -> dict[str, dict[str, tuple]]:
    """The loader node's inputs, one per :class:`~inbetween.model_config.ModelConfig` field, typed and explained by
    the field itself; the default model is the one shipped with the package (a node works offline at once)."""
    hints = typing.get_type_hints(ModelConfig)
    inputs: dict[str, dict[str, tuple]] = {"required": {}, "optional": {}}
    for option in fields(ModelConfig):
        default = TINY_WORLD if option.name == "model" else option.default
        extra = {"default": "" if default is None else default, "tooltip": option.metadata["help"]}
        if option.name == "dtype":
            kind: object = DTYPES
        else:
            kind = "BOOLEAN" if hints[option.name] is bool else "STRING"
        group = "required" if option.name in LOADER_REQUIRED else "optional"
        inputs[group][option.name] = (kind, extra)
    inputs["required"] = {name: inputs["required"][name] for name in LOADER_REQUIRED}
    return inputs


def parse_options(text: str) -> dict[str, object]:
    """``"fusion=poe, min_guidance_scale=1.5, exact_ends=true"`` -> a dict of SamplingConfig fields; values are JSON
    (numbers, true/false, null) or bare words (strings)."""
    options: dict[str, object] = {}
    for item in (part.strip() for part in text.replace("\n", ",").split(",")):
        if not item:
            continue
        name, sep, value = (piece.strip() for piece in item.partition("="))
        if not sep or not name:
            raise InbetweenError(f"option `{item}` is not name=value; write e.g. `fusion=poe, exact_ends=true`")
        try:
            options[name] = json.loads(value)
        except json.JSONDecodeError:
            options[name] = value
    return options


def sampling_config(
    preset: str,
    frames_per_segment: int = 0,
    width: int = 0,
    height: int = 0,
    steps: int = 0,
    options: str = "",
    base: SamplingConfig | None = None,
    **text: str,
) -> SamplingConfig:
    """The preset over ``base`` (the model family's defaults) with the node's inputs (0: the model's / the preset's;
    ``text``: a prompt and negative prompt where not empty) and ``options`` over it."""
    from .app.generation import Job

    given = parse_options(options)
    twice = sorted(set(given) & set(NODE_FIELDS))
    if twice:
        raise InbetweenError(f"set `{twice[0]}` with the node's `{NODE_FIELDS[twice[0]]}` input, not in `options`")
    node = {"num_frames": frames_per_segment, "width": width, "height": height, "num_inference_steps": steps}
    given |= {name: value for name, value in {**node, **text}.items() if value}
    job = Job((), (), preset=preset, options=given)
    return typing.cast(SamplingConfig, user_errors(lambda: job.config(base)))


def keyframe_batch(keyframes: torch.Tensor, more: torch.Tensor | None = None) -> torch.Tensor:
    """ComfyUI IMAGE batches ``(B, H, W, C)`` in [0, 1] -> the library's keyframes ``(n, 3, H, W)``: ``keyframes``,
    then ``more``, in order; their sizes must share one aspect."""
    import torch

    from .pipeline import InbetweenPipeline

    batches = [keyframes] + ([more] if more is not None else [])
    for batch in batches:
        if batch.ndim != 4 or batch.shape[-1] not in (3, 4):
            raise InbetweenError(f"keyframes must be an IMAGE batch (B, H, W, 3), got shape {tuple(batch.shape)}")
    frames = [image[..., :3].movedim(-1, 0).float().clamp(0, 1) for batch in batches for image in batch]
    if len(frames) < 2:
        raise InbetweenError(f"got {len(frames)} keyframe; give at least two (first and last) in the IMAGE batch")
    first = frames[0]
    for index, frame in enumerate(frames[1:], start=1):
        try:
            InbetweenPipeline.check_keyframes(first, frame)  # the pipeline's rule: one aspect, within 2 %
        except ValueError as exc:
            raise InbetweenError(
                f"keyframe {index + 1} ({frame.shape[2]}x{frame.shape[1]}) and the first "
                f"({first.shape[2]}x{first.shape[1]}): {one_line(exc)}"
            ) from None
    if any(frame.shape != first.shape for frame in frames):  # one aspect, other sizes: bring them to the first's
        frames = [
            torch.nn.functional.interpolate(f[None], size=first.shape[1:], mode="bilinear", antialias=True)[0]
            for f in frames
        ]
    return torch.stack(frames)


def interpolate(
    pipe: InbetweenPipeline,
    keyframes: torch.Tensor,
    loop: bool = False,
    preset: str = "fast",
    seed: int = 0,
    frames_per_segment: int = 0,
    width: int = 0,
    height: int = 0,
    steps: int = 0,
    segment_batch: int = 0,
    options: str = "",
    more_keyframes: torch.Tensor | None = None,
    hooks: StepHooks | None = None,
    prompt: str = "",
    negative_prompt: str = "",
) -> tuple[torch.Tensor]:
    """Every frame through ``keyframes`` (IMAGE ``(B, H, W, C)``, then ``more_keyframes``) as an IMAGE batch
    ``(L, H', W', 3)`` float32 in [0, 1] on the CPU: :func:`inbetween.sequence.interpolate_sequence` with the
    preset, the node's inputs (0: the model's or the preset's) and ``options``, seeded by ``seed`` as the CLI is
    (same seed, same frames as ``inbetween interpolate --seed``)."""
    import torch

    from .sequence import interpolate_sequence, plan_chunks

    if not 0 <= seed <= MAX_SEED:
        raise InbetweenError(f"`seed` must be from 0 to {MAX_SEED}, got {seed}")
    frames = keyframe_batch(keyframes, more_keyframes)
    text = dict(prompt=prompt, negative_prompt=negative_prompt)  # Wan's; an SVD model refuses a prompt in one line
    config = sampling_config(preset, frames_per_segment, width, height, steps, options, pipe.default_config(), **text)
    segments = len(frames) if loop else len(frames) - 1
    filled = user_errors(lambda: pipe.sampling_config(frames[0:1], config))
    chunks = plan_chunks(segments, segment_batch or None)
    hooks = hooks or comfy_hooks(filled.num_inference_steps * len(chunks))

    def report(progress: StepProgress) -> None:
        hooks.progress(progress.done, progress.total)
        hooks.check()  # ComfyUI's cancel raises here, between two steps

    video = user_errors(
        lambda: interpolate_sequence(
            pipe,
            frames,
            config,
            loop=loop,
            generator=torch.Generator(device="cpu").manual_seed(seed),
            segment_batch=segment_batch or None,
            output_type="pt",
            callback_on_step_end=step_progress(filled.num_inference_steps, chunks, report),
        )
    )
    return (video.movedim(1, -1).float().cpu().contiguous(),)


class LoadInbetweenModel:
    """ComfyUI node: the pipeline of a model folder or Hub id, with its backward adapter."""

    RETURN_TYPES = (PIPELINE_TYPE,)
    RETURN_NAMES = ("pipeline",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Load SVD (a Hub id or folder; tiny-world: the tiny offline model) and a backward adapter."

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 (ComfyUI's name)
        return loader_inputs()

    def load(self, **inputs: object) -> tuple[InbetweenPipeline]:
        return load_model(**inputs)


class InbetweenInterpolate:
    """ComfyUI node: the frames between keyframes (an IMAGE batch in order), joins once."""

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    FUNCTION = "interpolate"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Generative Inbetweening (Wang et al., ICLR 2025): every frame through the keyframes of the IMAGE batch, in "
        "order; loop returns to the first."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 (ComfyUI's name)
        names = ", ".join(name for name in SamplingConfig.field_names() if name not in NODE_FIELDS)
        return {
            "required": {
                "pipeline": (PIPELINE_TYPE,),
                "keyframes": ("IMAGE", {"tooltip": "two or more keyframes, in order"}),
                "loop": ("BOOLEAN", {"default": False}),
                "preset": (tuple(PRESETS), {"default": "fast"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED}),
                "frames_per_segment": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip": "0: the model's"}),
                "width": ("INT", {"default": 0, "min": 0, "max": MAX_SIZE, "step": 8, "tooltip": "0: automatic"}),
                "height": ("INT", {"default": 0, "min": 0, "max": MAX_SIZE, "step": 8, "tooltip": "0: automatic"}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": "0: the preset's"}),
                "segment_batch": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip": "0: all segments at once"}),
            },
            "optional": {
                "options": ("STRING", {"default": "", "multiline": True, "tooltip": f"name=value, ... of: {names}"}),
                "more_keyframes": ("IMAGE", {"tooltip": "appended after the keyframes"}),
                "prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "text prompt (Wan models)"}),
                "negative_prompt": (
                    "STRING",
                    {"default": "", "multiline": True, "tooltip": "negative prompt (Wan; empty: Wan's own)"},
                ),
            },
        }

    def interpolate(self, pipeline: InbetweenPipeline, keyframes: torch.Tensor, **inputs) -> tuple[torch.Tensor]:
        return interpolate(pipeline, keyframes, **inputs)


NODE_CLASS_MAPPINGS = {"LoadInbetweenModel": LoadInbetweenModel, "InbetweenInterpolate": InbetweenInterpolate}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadInbetweenModel": "Load inbetween model",
    "InbetweenInterpolate": "Inbetween interpolate",
}
