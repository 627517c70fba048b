"""The page: a gradio Blocks face over :mod:`inbetween.app.generation` (which knows nothing of gradio).

Two events run a generation, both through :func:`~inbetween.app.generation.generate` and one at a time
(``concurrency_id``): the Generate button (private: the page's own), and ``/interpolate``, the one public API
endpoint, whose options default to ``None`` ("the preset's"), exactly as the CLI's flags do.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import secrets
import typing
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from ..config import PRESETS, SamplingConfig
from ..errors import USER_ERRORS, one_line
from ..options import flag_of, with_flag_names
from .generation import (
    DEFAULT_PRESET,
    MAIN_OPTIONS,
    MAX_SEED,
    Cancelled,
    Job,
    ModelSlot,
    Progress,
    Result,
    RunFolders,
    generate,
)
from .uploads import LIMITS, read_keyframe

logger = logging.getLogger(__name__)

API_NAME = "interpolate"
GENERATION = "generation"  # the concurrency group of both generation events: one at a time per model
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".webp"]
TEXT_OPTIONS = ("prompt", "negative_prompt")
# The text fields lead the advanced group: a Wan user types a prompt first.
ADVANCED = TEXT_OPTIONS + tuple(
    name for name in SamplingConfig.field_names() if name not in MAIN_OPTIONS and name not in TEXT_OPTIONS
)
# Options whose default is unset (None: from the model or the keyframes): the page shows them as 0.
UNSET_IS_ZERO = frozenset(
    {f.name for f in dataclasses.fields(SamplingConfig) if f.default is None} | {"segment_batch"}
)
NEW_SEED_LIMIT = 2**31  # the "new seed" button draws below this: short enough to read and type
INTRO = """# inbetween
The video between your keyframes, generated with Stable Video Diffusion and the method of *Generative Inbetweening*
(Wang et al., ICLR 2025). Add two or more keyframes, press **Generate**."""


def build_app(slot: ModelSlot, folders: RunFolders) -> gr.Blocks:
    """The app's page and its ``/interpolate`` endpoint, serving ``slot``'s model and writing into ``folders``."""
    from ..families import default_config, guess_family

    family = guess_family(slot.config.model)
    takes_text = family == "wan"
    defaults = SamplingConfig.preset(DEFAULT_PRESET, default_config(slot.config.model))
    frames_default, multiple = _model_sizes(slot.config.model)
    with gr.Blocks(title="inbetween", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown(INTRO)
        model_status = gr.Markdown(status_text(slot), elem_id="model-status")
        with gr.Row():
            with gr.Column():
                keyframes = gr.File(
                    label="keyframes, in order",
                    file_count="multiple",
                    file_types=IMAGE_TYPES,
                    type="filepath",
                    allow_reordering=True,
                    elem_id="keyframes",
                )
                preview = gr.Gallery(
                    label="order of the keyframes",
                    columns=8,
                    height=120,
                    object_fit="contain",
                    fit_columns=False,
                    allow_preview=False,
                    interactive=False,
                    elem_id="keyframe-order",
                )
                gr.Markdown(f"Drag files in the list to reorder them, × removes one, drop more to add. {LIMITS}.")
                loop = gr.Checkbox(label="loop: end where the first keyframe starts", value=False, elem_id="loop")
                with gr.Row():
                    preset = gr.Dropdown(
                        label="sampler preset", choices=list(PRESETS), value=DEFAULT_PRESET, elem_id="preset"
                    )
                    seed = gr.Number(label="seed", value=0, precision=0, minimum=0, maximum=MAX_SEED, elem_id="seed")
                    new_seed = gr.Button("new seed", size="sm", elem_id="new-seed")
                with gr.Row():  # 0 stands for "unset": gradio's number box cannot be empty
                    num_frames = gr.Number(
                        label=f"frames per segment, keyframes included (0: the model's, {frames_default})",
                        value=0,
                        precision=0,
                        minimum=0,
                        elem_id="num-frames",
                    )
                    height = gr.Number(
                        label="height (0: from the keyframes)", value=0, precision=0, minimum=0, step=multiple
                    )
                    width = gr.Number(
                        label="width (0: from the keyframes)", value=0, precision=0, minimum=0, step=multiple
                    )
                with gr.Row():
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
                with gr.Accordion("advanced sampling options (defaults: the preset's)", open=False):
                    advanced = {name: option_component(name, getattr(defaults, name)) for name in ADVANCED}
                    for name in TEXT_OPTIONS:  # a text-conditioned family's (Wan's) prompt fields, hidden for SVD
                        advanced[name].visible = takes_text
                    segment_batch = gr.Number(
                        label="segment batch (0: all)",
                        info="segments sampled together; fewer lower the peak memory of long sequences",
                        value=0,
                        precision=0,
                        minimum=0,
                    )
            with gr.Column():
                video = gr.Video(
                    label="video", height=360, autoplay=True, loop=True, interactive=False, elem_id="video"
                )
                download = gr.File(label="mp4", interactive=False, elem_id="download")
                strip = gr.Image(
                    label="frames (keyframes outlined)", type="filepath", interactive=False, elem_id="strip"
                )
                command = gr.Code(
                    label="settings used: the same video from a shell",
                    language="shell",
                    interactive=False,
                    wrap_lines=True,
                    elem_id="command",
                )
                run_status = gr.Markdown(elem_id="run-status")

        # The API's own inputs: the same options as the page's, but unset (None: the preset's) unless given.
        with gr.Group(visible=False):
            api_keyframes = gr.File(file_count="multiple", file_types=IMAGE_TYPES, type="filepath")
            api_loop = gr.Checkbox(value=False)
            api_preset = gr.Dropdown(choices=list(PRESETS), value=DEFAULT_PRESET)
            api_seed = gr.Number(value=0, precision=0)
            api_options = {name: api_option_component(name) for name in SamplingConfig.field_names()}
            api_segment_batch = gr.Number(value=None, precision=0)
            api_video = gr.File()
            api_button = gr.Button()

        page_options = dict(advanced, num_frames=num_frames, height=height, width=width, segment_batch=segment_batch)
        generation = generate_button.click(
            page_generator(slot, folders),
            inputs=[keyframes, loop, preset, seed],
            inputs_kwargs=page_options,
            outputs=[video, download, strip, command, run_status],
            show_progress_on=video,
            api_visibility="private",
            concurrency_limit=1,
            concurrency_id=GENERATION,
        )
        cancel_button.click(
            page_canceller(slot), outputs=run_status, cancels=[generation], api_visibility="private", queue=False
        )
        api_button.click(
            api_generator(slot, folders),
            inputs=[api_keyframes, api_loop, api_preset, api_seed],
            inputs_kwargs=dict(api_options, segment_batch=api_segment_batch),
            outputs=api_video,
            api_name=API_NAME,
            concurrency_limit=1,
            concurrency_id=GENERATION,
        )
        keyframes.upload(accept_uploads, inputs=keyframes, outputs=keyframes, api_visibility="private")
        keyframes.change(keyframe_order, inputs=keyframes, outputs=preview, api_visibility="private")
        new_seed.click(lambda: secrets.randbelow(NEW_SEED_LIMIT), outputs=seed, api_visibility="private")
        preset.change(preset_values, inputs=preset, outputs=list(advanced.values()), api_visibility="private")
        timer = gr.Timer(1.0, active=slot.loading)
        timer.tick(lambda: (status_text(slot), gr.Timer(active=slot.loading)), outputs=[model_status, timer],
                   api_visibility="private")  # fmt: skip
        app.load(lambda: status_text(slot), outputs=model_status, api_visibility="private")
    return app


def _model_sizes(model: str) -> tuple[int | str, int]:
    """(frames per video, size multiple) by the model's family rules, from its configs on disk when there."""
    from ..families import size_rules_before_loading

    rules = size_rules_before_loading(model)
    return rules.num_frames, rules.multiple


def status_text(slot: ModelSlot) -> str:
    """The model line at the top of the page."""
    model = slot.config.model
    if slot.loading:
        return f"Loading the model `{model}`… the page works meanwhile; **Generate** waits for it."
    if slot.error:
        return f"**⚠ {slot.error}.** Restart the app with another `--model` or `--adapter` (`inbetween app --help`)."
    pipe = slot.pipe
    adapter = (
        "with its backward adapter"
        if pipe.has_backward_adapter
        else "**without a backward adapter** (the backward pass uses the base weights; start with `--adapter` for the "
        "paper's quality)"
    )
    dtype = str(pipe.dtype).removeprefix("torch.")
    return f"Model `{model}` ready on {pipe._execution_device}, {dtype}, {adapter}."


def option_component(name: str, value: object) -> gr.components.Component:
    """The page's input for one sampling option: its type, its help and the preset's value (0 for unset)."""
    option = _field(name)
    flag = flag_of(option)
    label = flag.removeprefix("--").replace("-", " ")
    info = f"{option.metadata.get('help', '')} ({flag})"
    kind = _base_type(name)
    common = dict(label=label, info=info, elem_id=f"option-{name.replace('_', '-')}")
    if kind is bool:
        return gr.Checkbox(value=value, **common)
    if "choices" in option.metadata:
        return gr.Dropdown(choices=list(option.metadata["choices"]), value=value, **common)
    if name in UNSET_IS_ZERO:
        common["label"] += " (0: the default)"
    if kind is int:
        return gr.Number(value=_shown(value), precision=0, **common)
    if kind is float:
        return gr.Number(value=value, **common)
    return gr.Textbox(value=value, **common)


def _shown(value: object) -> object:
    return 0 if value is None else value


def page_options(options: dict[str, object]) -> dict[str, object]:
    """The page's option values as the library's: 0 in an option whose default is unset means unset."""
    return {name: None if name in UNSET_IS_ZERO and value == 0 else value for name, value in options.items()}


def api_option_component(name: str) -> gr.components.Component:
    """The API's input for one sampling option: unset by default (None, the preset's); a checkbox cannot be unset,
    so a yes/no option is JSON (true, false or null)."""
    option = _field(name)
    kind = _base_type(name)
    if kind is bool:
        return gr.JSON(value=None)
    if "choices" in option.metadata:
        return gr.Dropdown(choices=list(option.metadata["choices"]), value=None)
    if kind in (int, float):
        return gr.Number(value=None, precision=0 if kind is int else None)
    return gr.Textbox(value=None)


def _field(name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(SamplingConfig) if f.name == name)


def _base_type(name: str) -> type:
    hint = typing.get_type_hints(SamplingConfig)[name]
    return next((t for t in typing.get_args(hint) if t is not type(None)), hint)


def preset_values(preset: str) -> list[object]:
    """The advanced inputs' values for ``preset``: choosing a preset shows what it sets."""
    config = SamplingConfig.preset(preset)
    return [_shown(getattr(config, name)) for name in ADVANCED]


def accept_uploads(paths: list[str] | None) -> list[str] | None:
    """The uploaded keyframes that decode safely; each one that does not is dropped with a message saying why."""
    kept = []
    for path in paths or []:
        try:
            read_keyframe(path)
        except ValueError as exc:
            gr.Warning(one_line(exc), duration=None)
            continue
        kept.append(path)
    return kept or None


def keyframe_order(paths: list[str] | None) -> list[tuple[str, str]]:
    """The keyframes as thumbnails numbered in the order they will be used."""
    return [(path, f"{index + 1}: {Path(path).name}") for index, path in enumerate(paths or [])]


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def _job(keyframes: list[str] | None, loop: bool, preset: str, seed: float | None, options: dict) -> Job:
    paths = tuple(keyframes or ())
    options = dict(options)
    segment_batch = options.pop("segment_batch", None)
    return Job(
        keyframes=paths,
        names=tuple(Path(path).name for path in paths),
        loop=bool(loop),
        preset=preset or DEFAULT_PRESET,
        seed=0 if seed is None else _whole(seed),
        segment_batch=None if segment_batch is None else _whole(segment_batch),
        options=options,
    )


def _whole(number: object) -> object:
    """A JSON number that is whole as an int (the job's checks refuse anything else with a message)."""
    return int(number) if isinstance(number, float) and number.is_integer() else number


def _run_job(slot: ModelSlot, folders: RunFolders, job: Job, progress: gr.Progress, owner: str | None, flags: bool):
    """``generate`` with its errors as messages in the page (``flags``: options named as the CLI's flags)."""
    from .generation import Run

    def show(step: Progress) -> None:
        progress((step.done, step.total), desc=step.text, unit="steps")

    try:
        result = generate(slot, job, folders, on_progress=show, run=Run(owner))
    except Cancelled as exc:
        print(f"inbetween app: {exc}; nothing written, the model is free", flush=True)  # the server's console
        raise gr.Error(f"{str(exc).capitalize()}: nothing was written.", print_exception=False) from None
    except USER_ERRORS as exc:
        message = with_flag_names(one_line(exc), SamplingConfig) if flags else one_line(exc)
        raise gr.Error(message, duration=None, print_exception=False) from None
    except Exception as exc:
        if _is_out_of_memory(exc):
            raise gr.Error(
                "out of memory; lower the frames per segment or the size, set a segment batch, or tick "
                "split guidance batch in the advanced options",
                duration=None,
                print_exception=False,
            ) from None
        logger.exception("generation failed")
        raise gr.Error(
            f"internal error ({type(exc).__name__}: {one_line(exc)[:200]}); the app's log has the details",
            duration=None,
            print_exception=False,
        ) from None
    print(f"inbetween app: {len(job.keyframes)} keyframes -> {result.summary}", flush=True)
    return result


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def with_option_parameters(fn: Callable, names: tuple[str, ...]) -> Callable:
    """``fn(keyframes, loop, preset, seed, progress, request, **options)`` shown to gradio with one keyword-only
    parameter per option, default None: the API then lists every option by name, each optional."""
    signature = inspect.signature(fn)
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in names]
    fn.__signature__ = signature.replace(parameters=kept + options)
    return fn


def page_generator(slot: ModelSlot, folders: RunFolders) -> Callable:
    """The Generate button: the video, its mp4, the frame strip, the command and a summary line."""

    def generate_for_page(
        keyframes: list[str] | None,
        loop: bool,
        preset: str,
        seed: float | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (gradio finds its progress tracker by this default)
        request: gr.Request = None,
        **options: object,
    ) -> tuple[str, str, str, str, str]:
        job = _job(keyframes, loop, preset, seed, page_options(options))
        result: Result = _run_job(slot, folders, job, progress, _session(request), flags=True)
        return str(result.video), str(result.video), str(result.strip), result.command, f"Done: {result.summary}."

    return with_option_parameters(generate_for_page, (*SamplingConfig.field_names(), "segment_batch"))


def api_generator(slot: ModelSlot, folders: RunFolders) -> Callable:
    """``/interpolate``: keyframe files in order, the video file out."""

    def interpolate(
        keyframes: list[str] | None,
        loop: bool = False,
        preset: str = DEFAULT_PRESET,
        seed: float | None = 0,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (gradio finds its progress tracker by this default)
        request: gr.Request = None,
        **options: object,
    ) -> str:
        """The video through ``keyframes`` (two or more image files, in order; ``loop`` returns to the first), as an
        mp4. ``preset`` (paper, fast, vibid, vibid-adapter) sets the sampler; every other option is a field of
        inbetween's SamplingConfig (num_frames per segment, height, width, num_inference_steps, ...), unset: the
        preset's, as with the CLI. ``segment_batch``: segments sampled together (default: all)."""
        job = _job(keyframes, loop, preset, seed, options)
        return str(_run_job(slot, folders, job, progress, _session(request), flags=False).video)

    return with_option_parameters(interpolate, (*SamplingConfig.field_names(), "segment_batch"))


def page_canceller(slot: ModelSlot) -> Callable:
    """The Cancel button: a queued generation leaves the queue (gradio's ``cancels``); a running one stops after its
    current denoising step and gives the model back."""

    def cancel(request: gr.Request = None) -> str:
        if slot.cancel(_session(request)):
            return "Cancelled: the generation stops after its current step; nothing is written."
        return "Cancelled: nothing of yours was running (one of yours that was waiting leaves the queue)."

    return cancel
