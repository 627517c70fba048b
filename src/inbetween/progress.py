"""Progress per denoising step for a host that shows it (the browser app, ComfyUI): one step callback over the calls
of a keyframe sequence (:func:`inbetween.sequence.interpolate_sequence`), which samples its chunks of segments in
turn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StepProgress:
    """After a denoising step: ``done`` of ``total`` steps over the whole sequence; ``step`` (1-based) of ``steps``
    in the chunk ``chunk`` (the segment indices sampled together)."""

    done: int
    total: int
    step: int
    steps: int
    chunk: range


def step_progress(steps: int, chunks: list[range], report: Callable[[StepProgress], None]) -> Callable:
    """A ``callback_on_step_end`` for a sequence of ``chunks`` sampled in turn, ``steps`` each, calling
    ``report(progress)`` after every step. An exception raised by ``report`` stops the run between two steps (how
    a host cancels)."""
    total = steps * len(chunks)
    done = 0

    def on_step_end(pipe, step: int, sigma, tensors: dict) -> dict:
        nonlocal done
        done += 1
        chunk = chunks[min((done - 1) // steps, len(chunks) - 1)]  # each chunk runs all the steps in turn
        report(StepProgress(done, total, step + 1, steps, chunk))
        return {}

    return on_step_end
