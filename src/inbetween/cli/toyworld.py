"""``inbetween demo`` and ``inbetween toyworld train|evaluate``: the tiny world of bouncing balls."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import SamplingConfig
from ..hub import TINY_WORLD
from ..toyworld.candidates import DEMO_PAIRS, TINY_WORLD_SAMPLING
from ..toyworld.seeds import HELDOUT_SEEDS
from .options import add_dataclass_arguments, add_model_arguments, add_preset_argument, errors_name_flags

DEMO_HELP = "see the method work offline in under a minute (the bundled tiny-world model)"
DEMO_DESCRIPTION = (
    "Interpolate bundled toy-world keyframe pairs with the shipped tiny model; write the videos and a comparison "
    "sheet (ground truth, cross-fade, forward-only, dual without fine-tuning, the full method under the paper's "
    "sampling and under the best measured preset with keyframe-exact ends)."
)
HELP = "train the tiny-world model, or check the paper's claims with it"
DESCRIPTION = "The toy world of bouncing balls: reproduce the shipped model, or evaluate the methods on it."
TRAIN_HELP = "train autoencoder, forward I2V model and backward adapter from a seed (resumable)"
TRAIN_DESCRIPTION = (
    "Four resumable stages into OUT (autoencoder, forward model, backward adapter, the w/o-RA ablation; re-run the "
    "same command to resume). "
    "Settings: inbetween.toyworld.recipe.TinyWorldRecipe."
)
EVALUATE_HELP = "hit rate, ball-centre error, miss rate, PSNR, SSIM of every method on held-out pairs"
EVALUATE_DESCRIPTION = "Interpolate held-out toy-world pairs with every method and print a table with 95 % intervals."


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """The sampling flags with the tiny world's defaults (few steps, no guidance), and the seed; each method then
    sets its own branches. Size and frame count are the world's."""
    p.add_argument("--seed", type=int, default=0, help="same seed, same videos (default: %(default)s)")
    group = p.add_argument_group("sampling (defaults: the tiny world's)")
    add_dataclass_arguments(group, SamplingConfig, defaults=TINY_WORLD_SAMPLING)
    add_preset_argument(group)


def add_heldout_arguments(p: argparse.ArgumentParser, count: str, default: int, what: str) -> None:
    """The model folder, how many held-out ``what`` (``--COUNT``) and the first held-out seed they are drawn from."""
    add_model_arguments(p, defaults={"model": TINY_WORLD}, only=("model",))  # a model trained in the tiny world
    p.add_argument(f"--{count}", type=int, default=default, help=f"held-out {what} (default: %(default)s)")
    p.add_argument(
        "--first-seed",
        type=int,
        default=HELDOUT_SEEDS,
        help=f"first held-out seed: the {what} are the interesting videos from it up (default: %(default)s)",
    )


def print_table(table: str, out: str | None, files: str) -> int:
    """Print a command's table and, where it wrote to ``out``, which ``files``; the command's exit code."""
    print(table)
    if out:
        print(f"wrote {out}/{files}")
    return 0


def sampling_of(args: argparse.Namespace) -> SamplingConfig:
    """The sampling config the tiny-world flags ask for; its errors name the flags."""
    with errors_name_flags():
        return SamplingConfig(**{name: getattr(args, name) for name in SamplingConfig.field_names()})


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="inbetween-demo", help="output folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--pairs", type=int, default=DEMO_PAIRS, help="keyframe pairs (default: %(default)s)")
    add_model_arguments(p, defaults={"model": TINY_WORLD}, only=("model",))  # a model trained in the tiny world
    add_sampling_arguments(p)


def run_demo(args: argparse.Namespace) -> int:
    from ..toyworld.demo import BEST_PRESET, run_demo

    out = run_demo(args.out, args.pairs, sampling_of(args), args.seed, model=args.model, overwrite=args.overwrite)
    print(
        f"wrote {out}/: comparison.png (rows: ground truth, cross-fade, forward-only, dual no fine-tuning, full "
        f"method under the paper's sampling and under {BEST_PRESET} with exact ends), one mp4 per pair and row, and "
        "the keyframes as PNG"
    )
    print(f"try: inbetween interpolate {out}/pair0-first.png {out}/pair0-last.png -o pair0.mp4 --model {TINY_WORLD}")
    return 0


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, the model)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument(
        "--install", action="store_true", help="copy the finished model into the package (what `tiny-world` loads)"
    )


def run_train(args: argparse.Namespace) -> int:
    from ..toyworld.recipe import TinyWorldRecipe, install_tiny_world, train_tiny_world

    model = train_tiny_world(args.out, TinyWorldRecipe(seed=args.seed))
    print(f"wrote {model} and {Path(args.out) / 'loss_curves.png'}")
    if args.install:
        print(f"installed into {install_tiny_world(model)}")
    return 0


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    add_heldout_arguments(p, "pairs", 50, "pairs")
    p.add_argument(
        "--methods",
        metavar="KEY,...",
        help="only these rows, e.g. crossfade,forward-only,full (keys: crossfade, flow, forward-only, dual-no-ft, "
        "full, full-no-reinjection, backward-only, trf, without-ra; default: all); model rows run under the sampling "
        "below",
    )
    add_sampling_arguments(p)
    p.add_argument("--out", help="also write summary.md and per_pair.json here")
    p.add_argument("--overwrite", action="store_true", help="replace files in OUT")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows already in OUT/per_pair.json (same settings) and add the missing ones",
    )


def run_evaluate(args: argparse.Namespace) -> int:
    from ..toyworld.science import run_evaluation, world_methods

    methods = world_methods(args.methods.split(",") if args.methods else None)
    options = dict(methods=methods, overwrite=args.overwrite, first_seed=args.first_seed, resume=args.resume)
    table = run_evaluation(args.out, args.model, args.pairs, sampling_of(args), args.seed, **options)
    return print_table(table, args.out, "summary.md and per_pair.json")


HITRATES_HELP = "the held-out hit-rate table (mean, 95 % interval, paired against the cross-fade) of evaluate runs"
HITRATES_DESCRIPTION = (
    "Print the held-out hit-rate table of one or more `inbetween toyworld evaluate --out DIR` folders that scored the "
    "same held-out pairs (each may run its methods under its own sampling): per method the mean hit rate, its 95 % "
    "Student-t interval, and its paired difference per pair from the linear cross-fade."
)


def add_hitrates_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="DIR", help="evaluate --out folders (their per_pair.json)")


def run_hitrates(args: argparse.Namespace) -> int:
    from ..toyworld.science import hit_rate_table

    print(hit_rate_table(args.runs))
    return 0


SAMPLERS_HELP = "judge every sampler and preset on the exact denoisers of an enumerated toy world (CPU, minutes)"
SAMPLERS_DESCRIPTION = (
    "Run every sampler, preset and fusion candidate on exact posterior-mean denoisers of a finite world of "
    "bouncing-ball videos, where the ideal in-between of every keyframe pair is known; print the table (95 % "
    "intervals) and, with --out, write summary.md and a contact sheet. Settings: "
    "inbetween.toyworld.exact.config.SamplerStudyConfig; rows: inbetween.toyworld.exact.study.study_rows."
)


def add_samplers_arguments(p: argparse.ArgumentParser) -> None:
    from ..toyworld.exact.config import SamplerStudyConfig

    add_dataclass_arguments(p, SamplerStudyConfig)
    p.add_argument("--out", help="also write summary.md and samplers.png here")
    p.add_argument("--overwrite", action="store_true", help="replace those files in OUT")


def run_samplers(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ..toyworld.exact.config import ExactWorldConfig, SamplerStudyConfig
    from ..toyworld.exact.study import SHEET, SUMMARY, run_sampler_study

    with errors_name_flags(ExactWorldConfig):
        world = ExactWorldConfig(**{f.name: getattr(args, f.name) for f in fields(ExactWorldConfig)})
    with errors_name_flags(SamplerStudyConfig):
        config = SamplerStudyConfig(pairs=args.pairs, seed=args.seed, world=world)
    print(run_sampler_study(config, args.out, overwrite=args.overwrite))
    if args.out:
        print(f"wrote {Path(args.out) / SUMMARY} and {Path(args.out) / SHEET}")
    return 0


SEQUENCES_HELP = "keyframe sequences: joint sampling vs independent segments vs cross-fade on long held-out videos"
SEQUENCES_DESCRIPTION = (
    "Interpolate long held-out toy-world videos through keyframes every N-1 frames (N: the model's segment length) "
    "with joint sampling, independent segments and a cross-fade; print ball-centre error and the velocity jump at "
    "the joins with 95 % intervals and, with --out, write summary.md, per_sequence.json and contact sheets of one "
    "sequence and one loop. See inbetween.toyworld.sequences."
)


def add_sequences_arguments(p: argparse.ArgumentParser) -> None:
    add_heldout_arguments(p, "sequences", 40, "long videos")
    p.add_argument("--segments", type=int, default=3, help="segments per video (default: %(default)s)")
    add_sampling_arguments(p)
    p.add_argument("--out", help="also write summary.md, per_sequence.json, sequence.png, loop.png, loop.gif here")
    p.add_argument("--overwrite", action="store_true", help="replace those files in OUT")


def run_sequences(args: argparse.Namespace) -> int:
    from ..toyworld.sequences import run_sequences

    if args.first_seed < HELDOUT_SEEDS:
        raise ValueError(f"`--first-seed` must be a held-out seed, at least {HELDOUT_SEEDS}, got {args.first_seed}")
    options = dict(first_seed=args.first_seed, overwrite=args.overwrite)
    table = run_sequences(args.out, args.model, args.sequences, args.segments, sampling_of(args), args.seed, **options)
    return print_table(table, args.out, "summary.md, per_sequence.json, sequence.png, loop.png and loop.gif")
