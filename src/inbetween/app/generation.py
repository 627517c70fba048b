"""One generation for the browser app, without gradio: the request's settings as a :class:`SamplingConfig`, the model
lent to one generation at a time, progress per denoising step, a cancel that stops between steps, and the outputs
(mp4, frame strip, the equivalent ``inbetween interpolate`` command) in the app's temporary folder.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import shlex
import shutil
import threading
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from ..config import PRESETS, SamplingConfig
from ..errors import USER_ERRORS, one_line
from ..model_config import ModelConfig
from ..progress import StepProgress, step_progress
from .uploads import read_keyframes

if typing.TYPE_CHECKING:
    from ..pipeline import InbetweenPipeline

logger = logging.getLogger(__name__)

DEFAULT_PRESET = "paper"  # the CLI's default: the paper's sampler
MAIN_OPTIONS = ("num_frames", "height", "width")  # shown next to the keyframes; the other options are "advanced"
MAX_SEED = 2**63 - 1
KEEP_RUNS = 2  # output folders kept: the newest may still be on its way to the browser when the next run starts
STRIP_COLUMNS = 12
STRIP_CELL = (96, 160)  # frames in the strip are at least 96 and at most 160 px on their long side
RED = (200, 0, 0)


class Cancelled(Exception):
    """The user cancelled the generation; raised between two denoising steps."""


@dataclass(frozen=True)
class Job:
    """One generation request: keyframe files in order (``names``: what the user called them), the sequence options,
    and the sampling options given explicitly (field name -> value; the others are the preset's)."""

    keyframes: tuple[str, ...]
    names: tuple[str, ...]
    loop: bool = False
    preset: str = DEFAULT_PRESET
    seed: int = 0
    segment_batch: int | None = None
    options: Mapping[str, object] = field(default_factory=dict)

    def config(self, base: SamplingConfig | None = None) -> SamplingConfig:
        """The preset over ``base`` (the model family's defaults; the paper's if None) with the given options;
        ``ValueError`` naming the option for a bad one."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        given = {name: value for name, value in self.options.items() if value is not None}
        hints = typing.get_type_hints(SamplingConfig)
        for name, value in given.items():
            if name not in hints:
                raise ValueError(
                    f"unknown sampling option `{name}`; the options are {', '.join(SamplingConfig.field_names())}"
                )
            check_option_type(name, value, hints[name])
        return SamplingConfig.preset(self.preset, base, **given)

    def check(self) -> None:
        """Refuse what the model cannot be asked (before it is waited for): bad seed, segment batch or options."""
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"`seed` must be a whole number from 0 to {MAX_SEED}, got {self.seed!r}")
        if self.segment_batch is not None and (not isinstance(self.segment_batch, int) or self.segment_batch < 1):
            raise ValueError(f"`segment_batch` must be a whole number of at least 1, got {self.segment_batch!r}")
        self.config()


def check_option_type(name: str, value: object, hint: object) -> None:
    """A value from the browser or an API client has the option's type (JSON gives no guarantee)."""
    kinds = tuple(t for t in typing.get_args(hint) if t is not type(None)) or (hint,)
    if bool in kinds:
        ok = isinstance(value, bool)
    elif int in kinds:
        ok = isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()
    elif float in kinds:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"`{name}` must be a {' or '.join(k.__name__ for k in kinds)}, got {value!r}")


@dataclass(frozen=True)
class Progress:
    """Where a generation is: ``done`` of ``total`` steps, and a sentence for the page."""

    done: int
    total: int
    text: str


@dataclass(frozen=True)
class Result:
    video: Path  # the mp4
    strip: Path  # every frame in one PNG, keyframes outlined
    command: str  # the same video from a shell
    frames: list[Image.Image]  # as generated, before the mp4's lossy encoding
    seconds: float  # from the model's turn to the written mp4

    @property
    def summary(self) -> str:
        width, height = self.frames[0].size
        return f"{len(self.frames)} frames, {width}x{height}, in {self.seconds:.1f} s"


class Run:
    """A generation in progress, owned by one browser session; :meth:`cancel` stops it at the next step."""

    def __init__(self, owner: str | None):
        self.owner = owner
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def check(self, where: str = "before the first step") -> None:
        if self._cancelled.is_set():
            raise Cancelled(f"cancelled {where}")


class ModelUnavailable(ValueError):
    """The model or its adapter could not be loaded; the message says why and how to fix it."""


class ModelSlot:
    """The app's one pipeline: loaded once in a background thread (the page is up meanwhile), then lent to one
    generation at a time. A failed load is kept as a one-line message for the page."""

    def __init__(self, config: ModelConfig, load: Callable[[ModelConfig], InbetweenPipeline]):
        self.config = config
        self._load = load
        self._loaded = threading.Event()
        self._pipe: InbetweenPipeline | None = None
        self._error: str | None = None
        self._turn = threading.Lock()  # one generation at a time, whatever the web server's queue does
        self._run: Run | None = None
        self._loader: threading.Thread | None = None

    def start(self) -> None:
        self._loader = threading.Thread(target=self._load_now, name="inbetween-model", daemon=True)
        self._loader.start()

    def close(self, timeout: float = 60.0) -> None:
        """Cancel the running generation; wait (up to ``timeout`` s each) for it and for the loading to end."""
        run = self._run
        if run is not None:
            run.cancel()
        if self._loader is not None:
            self._loader.join(timeout)
        if self._turn.acquire(timeout=timeout):
            self._turn.release()

    def _load_now(self) -> None:
        try:
            self._pipe = self._load(self.config)
        except USER_ERRORS as exc:
            self._error = f"model `{self.config.model}` could not be loaded: {one_line(exc)}"
        except Exception as exc:  # a bug or a broken install: the page says so, the log has the traceback
            logger.exception("loading %s failed", self.config.model)
            self._error = f"model `{self.config.model}` could not be loaded ({type(exc).__name__}: {one_line(exc)})"
        finally:
            self._loaded.set()

    @property
    def loading(self) -> bool:
        return not self._loaded.is_set()

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def pipe(self) -> InbetweenPipeline | None:
        return self._pipe

    @contextmanager
    def lend(self, run: Run) -> Iterator[InbetweenPipeline]:
        """The pipeline, once loaded and free; raises :class:`ModelUnavailable` if it failed to load."""
        self._loaded.wait()
        if self._pipe is None:
            raise ModelUnavailable(self._error or f"model `{self.config.model}` is not loaded")
        with self._turn:
            self._run = run
            try:
                yield self._pipe
            finally:
                self._run = None
                free_memory()

    def cancel(self, owner: str | None) -> bool:
        """Stop ``owner``'s running generation at its next step; False when it has none running."""
        run = self._run
        if run is None or run.owner != owner:
            return False
        run.cancel()
        return True


def free_memory() -> None:
    """Give back what a finished or cancelled generation held (its tensors are unreachable by now)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class RunFolders:
    """Output folders of the runs in the app's temporary folder, the oldest deleted as new ones are made."""

    def __init__(self, root: Path, keep: int = KEEP_RUNS):
        self.root = root
        self.keep = keep
        self._count = 0
        self._lock = threading.Lock()

    def new(self) -> Path:
        with self._lock:
            self._count += 1
            folder = self.root / f"run-{self._count:05d}"
            folder.mkdir(parents=True)
            runs = sorted(self.root.glob("run-*"))
            for old in runs[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
            return folder


def generate(
    slot: ModelSlot,
    job: Job,
    folders: RunFolders,
    on_progress: Callable[[Progress], None] = lambda progress: None,
    run: Run | None = None,
) -> Result:
    """Run ``job`` on the slot's model and write its outputs into a new run folder.

    Raises ``ValueError`` (and the other :data:`~inbetween.errors.USER_ERRORS`) with a one-line message for bad
    input or a model that is not available, :class:`Cancelled` when ``run`` is cancelled (between two steps).
    """
    run = run or Run(owner=None)
    job.check()
    images = read_keyframes(list(job.keyframes), list(job.names))
    config = job.config(family_defaults(slot.config))
    on_progress(Progress(0, 1, "waiting for the model"))
    with slot.lend(run) as pipe:
        # Imported once the model is loaded: the loading thread may still be importing diffusers until then.
        import torch

        from ..sequence import interpolate_sequence, keyframe_positions, plan_chunks
        from ..video_io import write_video

        check_aspects(images, job.names)
        started = time.monotonic()
        run.check()
        filled = pipe.sampling_config(images[0], config)
        segments = len(images) if job.loop else len(images) - 1
        chunks = plan_chunks(segments, job.segment_batch)
        steps = filled.num_inference_steps
        total = steps * len(chunks)

        def report(progress: StepProgress) -> None:
            text = step_text(progress.step, steps, progress.chunk, segments)
            on_progress(Progress(progress.done, total, text))
            run.check(f"after step {progress.done} of {total}")  # a cancel takes effect here, between two steps

        on_progress(Progress(0, total, step_text(0, steps, chunks[0], segments)))
        generator = torch.Generator(device="cpu").manual_seed(job.seed)  # the CLI's: same seed, same video
        frames = interpolate_sequence(
            pipe,
            images,
            config,
            loop=job.loop,
            generator=generator,
            segment_batch=job.segment_batch,
            callback_on_step_end=step_progress(steps, chunks, report),
        )
        folder = folders.new()
        video = write_video(frames, folder / f"inbetween-seed{job.seed}.mp4", fps=filled.fps)
        strip = folder / "frames.png"
        frame_strip(frames, keyframe_positions(len(images), filled.num_frames)).save(strip)
        seconds = time.monotonic() - started
    return Result(
        video=video,
        strip=strip,
        command=settings_command(slot.config, job, config),
        frames=frames,
        seconds=seconds,
    )


def check_aspects(images: list[Image.Image], names: tuple[str, ...]) -> None:
    """Every keyframe has the first one's aspect (the pipeline's rule), or an error naming both files."""
    from ..loading import check_keyframe_files

    for name, image in zip(names[1:], images[1:], strict=True):
        check_keyframe_files(names[0], images[0], name, image)


def step_text(step: int, steps: int, chunk: range, segments: int) -> str:
    """``segment 2 of 3: step 4 of 10`` (``segments 1-3 of 3, together`` when they are sampled in one batch)."""
    if len(chunk) == 1:
        which = f"segment {chunk.start + 1} of {segments}"
    else:
        which = f"segments {chunk.start + 1}-{chunk.stop} of {segments}, together"
    return f"{which}: step {step} of {steps}"


def family_defaults(model: ModelConfig) -> SamplingConfig:
    """The sampling options the model's family starts from (Wan: its guidance and frame rate), as the CLI's."""
    from ..families import default_config

    return default_config(model.model)


def settings_command(model: ModelConfig, job: Job, config: SamplingConfig, output: str | None = None) -> str:
    """The ``inbetween interpolate`` command that makes the same video from the same files: the model flags, the
    seed, the preset and every option whose value differs from the preset's."""
    from ..options import flag_of

    output = output or f"inbetween-seed{job.seed}.mp4"
    words = ["inbetween", "interpolate", *job.names, "-o", output, *model.cli_flags(), "--seed", str(job.seed)]
    if job.loop:
        words.append("--loop")
    if job.segment_batch is not None:
        words += ["--segment-batch", str(job.segment_batch)]
    if job.preset != DEFAULT_PRESET:
        words += ["--preset", job.preset]
    preset = SamplingConfig.preset(job.preset, family_defaults(model))
    for option in dataclasses.fields(SamplingConfig):
        value = getattr(config, option.name)
        if value == getattr(preset, option.name):
            continue
        flag = flag_of(option)
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag.removeprefix("--"))
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def frame_strip(frames: list[Image.Image], keyframes: list[int], columns: int = STRIP_COLUMNS) -> Image.Image:
    """Every frame in rows of ``columns``, numbered below, keyframes outlined; small frames enlarged with sharp
    pixels, large ones shrunk."""
    width, height = frames[0].size
    long_side = max(width, height)
    if long_side < STRIP_CELL[0]:
        scale, resample = STRIP_CELL[0] // long_side, Image.Resampling.NEAREST
    else:
        scale, resample = min(1.0, STRIP_CELL[1] / long_side), Image.Resampling.BILINEAR
    cell = (max(1, round(width * scale)), max(1, round(height * scale)))
    gap, label = 4, 14
    rows = -(-len(frames) // columns)
    size = (min(columns, len(frames)) * (cell[0] + gap) + gap, rows * (cell[1] + label + gap) + gap)
    strip = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(strip)
    marked = set(keyframes)
    for index, frame in enumerate(frames):
        x = gap + index % columns * (cell[0] + gap)
        y = gap + index // columns * (cell[1] + label + gap)
        strip.paste(frame.resize(cell, resample), (x, y))
        key = index in marked
        draw.text((x, y + cell[1] + 2), f"{index} key" if key else str(index), fill=RED if key else "black")
        if key:
            draw.rectangle((x - 2, y - 2, x + cell[0] + 1, y + cell[1] + 1), outline=RED, width=2)
    return strip
