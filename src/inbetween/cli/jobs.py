"""``inbetween train`` and ``inbetween evaluate``: the two jobs whose flags are their config dataclasses'."""

from __future__ import annotations

import argparse

from ..options import config_from_flat, flat_option_names
from .options import add_dataclass_arguments, add_preset_argument, errors_name_flags, model_device_of

TRAIN_HELP = "fine-tune a backward adapter on a folder of videos"
TRAIN_DESCRIPTION = (
    "Backward-motion fine-tuning of W_v / W_o (paper section 3.2). Several GPUs: "
    "`accelerate launch --num_processes N -m inbetween train ...` with the same options."
)
EVALUATE_HELP = "score methods on keyframe pairs from a folder of videos and write a report"
EVALUATE_DESCRIPTION = (
    "Draw keyframe pairs from DATA (or reuse the manifest), run each method, score PSNR / SSIM / LPIPS / FID / FVD "
    "and write summary.md, per_pair.csv, per_frame.png and contact sheets into OUT. Re-running into OUT resumes. "
    "Several GPUs: `accelerate launch --num_processes N -m inbetween evaluate ...`."
)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from ..training import TrainConfig

    add_dataclass_arguments(p, TrainConfig)


def run_train(args: argparse.Namespace) -> int:
    from ..training import TrainConfig, train_backward

    values = {name: getattr(args, name) for name in flat_option_names(TrainConfig)}
    values["validation_pairs"] = tuple(tuple(pair) for pair in values["validation_pairs"])
    final = train_backward(TrainConfig(**values))
    print(f"wrote {final}")
    return 0


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    from ..evaluation.harness import EvalConfig

    add_dataclass_arguments(p, EvalConfig)
    add_preset_argument(p, ignored=("rotation",))  # each method sets its own rotation


def run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.harness import EvalConfig, evaluate

    with errors_name_flags():
        config = config_from_flat(EvalConfig, {name: getattr(args, name) for name in flat_option_names(EvalConfig)})
    model_device_of(config.model)
    summary = evaluate(config)
    if summary is not None:  # rank 0 of a launched run, or a plain run
        print(f"wrote {summary}")
    return 0
