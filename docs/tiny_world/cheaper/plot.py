"""The cheaper candidates against fast, paired, on both worlds, against their UNet rows: candidates.png.

Tiny world: each candidate's `inbetween toyworld evaluate --methods full` folder (per_pair.json, 50 held-out pairs
from seed 90000000, run by run.sh) minus fast's, hit rate per pair. Exact-denoiser world: the same candidates'
rows of `inbetween toyworld samplers` (200 pairs, seed 0), recomputed here (deterministic, about a minute), the
consistent-with-both-keyframes flag per pair minus fast's. Mean and 95 % Student-t interval of the paired
differences.

    python docs/tiny_world/cheaper/plot.py RUNS_FOLDER docs/tiny_world/cheaper/candidates.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from inbetween.cost import unet_rows_per_video  # noqa: E402
from inbetween.toyworld.exact import study  # noqa: E402
from inbetween.toyworld.exact.config import SamplerStudyConfig  # noqa: E402
from inbetween.toyworld.exact.world import build_exact_world  # noqa: E402

# run folder -> the exact world's row of the same sampler
CANDIDATES = {
    "fasts": "fast, shared uncond",
    "fast20s": "fast, 20 steps, shared uncond",
    "fast15s": "fast, 15 steps, shared uncond",
    "fast15": "fast, 15 steps",
    "fast12": "fast, 12 steps",
    "fastnr": "fast, no re-injection",
    "fast20nr": "fast, 20 steps, no re-injection",
}


def paired(values: np.ndarray) -> tuple[float, float]:
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / len(values) ** 0.5
    return float(values.mean()), float(half)


def tiny_hits(runs: Path, name: str) -> np.ndarray:
    results = json.loads((runs / name / "per_pair.json").read_text())["results"]["full method"]
    return np.array([pair["hit_rate"] for pair in results])


def exact_flags() -> dict[str, np.ndarray]:
    config = SamplerStudyConfig()
    world = build_exact_world(config.world)
    videos = study.draw_pairs(world, config.pairs, config.seed)
    tolerance = study.frame_tolerance(world)
    rows = study.study_rows()
    flags = {}
    for name in ["fast", *CANDIDATES.values()]:
        run = study.run_row(world, rows[name], videos, config.seed)
        flags[name] = np.asarray(study.score_outputs(world, run.outputs, videos, tolerance)["consistent"], float)
    return flags


def main(runs: Path, out: Path) -> None:
    rows = study.study_rows()
    exact = exact_flags()
    fast_hits = tiny_hits(runs, "fast")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for folder, row in CANDIDATES.items():
        cost = unet_rows_per_video(rows[row])
        for axis, (mean, half) in zip(
            axes,
            [paired(exact[row] - exact["fast"]), paired(tiny_hits(runs, folder) - fast_hits)],
            strict=True,
        ):
            colour = "tab:red" if row == "fast, 15 steps" else "tab:blue"
            axis.errorbar(cost, mean, yerr=half, fmt="o", color=colour, capsize=3)
            axis.annotate(row, (cost, mean), textcoords="offset points", xytext=(5, 4), fontsize=7)
    for axis, title in zip(
        axes,
        ["exact-denoiser world: consistent, minus fast (200 pairs)", "tiny world: hit rate, minus fast (50 pairs)"],
        strict=True,
    ):
        axis.axhline(0, color="grey", lw=0.8)
        axis.axvline(100, color="grey", lw=0.8, ls=":")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("UNet rows per video (fast: 148, paper: 700; dotted: the 100-row goal)")
    axes[0].set_ylabel("paired difference, mean and 95 % interval")
    figure.tight_layout()
    figure.savefig(out, dpi=120)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
