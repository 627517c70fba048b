"""Tables and plots of docs/tiny_world/exact_ends from the per-pair CSVs that paired.py writes:

    PYTHONPATH=src python docs/tiny_world/exact_ends/report.py

Prints the re-judging table (each preset with the chosen exact ends, paired against fast, per world) and writes
mechanism.png (the far keyframe in each branch's estimate along fast's sampling, with and without the hold) and
deltas.png (the hold's paired change per sampler on both worlds).
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

HERE = Path(__file__).parent
WORLDS = {"ours": "our exact world", "second": "second exact world (soft keyframes, other videos)"}


def columns(path: Path) -> dict[str, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {name: np.array([int(r[name]) for r in rows]) for name in rows[0] if " | " in name}


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = a.astype(float) - b.astype(float)
    return d.mean(), stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / len(d) ** 0.5


def rejudge() -> str:
    lines = [
        "| world | sampler (exact ends: the pixel write) | consistent | Δ vs fast (paired, t 95 %) |",
        "|---|---|---|---|",
    ]
    for world, title in WORLDS.items():
        flags = columns(HERE / f"{world}_presets_pairs.csv") | columns(HERE / f"{world}_mechanism_pairs.csv")
        fast = flags["fast | exact_ends"]
        for name in ("fast", "paper", "vibid", "vibid-adapter", "fast, 15 steps"):
            key = f"{name} | exact_ends" if f"{name} | exact_ends" in flags else f"{name} | none"
            mean, half = paired(flags[key], fast)
            delta = "–" if name == "fast" else f"{mean:+.3f} ± {half:.3f}"
            lines.append(f"| {title} | {name} | {flags[key].mean():.3f} | {delta} |")
    return "\n".join(lines)


def mechanism_plot() -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, world in zip(axes, WORLDS, strict=True):
        with open(HERE / f"{world}_mechanism_trace.csv") as f:
            rows = list(csv.DictReader(f))
        for hold, style in (("none", "-"), ("every", "--"), ("below:1", ":")):
            first_seen = {}  # each sigma's first evaluation (a re-injected step is evaluated again at its sigma)
            for r in rows:
                if r["hold"] == hold:
                    first_seen.setdefault(float(r["sigma"]), r)
            sigma = np.array(sorted(first_seen, reverse=True))
            picked = [first_seen[s] for s in sigma]
            for column, colour, label in (
                ("forward_last_vs_last_keyframe", "tab:blue", "forward branch's last frame vs last keyframe"),
                ("backward_first_vs_first_keyframe", "tab:red", "backward branch's first frame vs first keyframe"),
            ):
                ax.plot(sigma, [float(r[column]) for r in picked], style, color=colour, lw=1,
                        label=f"{label}, hold {hold}")  # fmt: skip
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("sigma (sampling goes left to right)")
        ax.set_title(f"fast on {WORLDS[world]}", fontsize=9)
    axes[0].set_ylabel("RMSE (0-255), mean over 200 pairs")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(HERE / "mechanism.png", dpi=120)


def deltas_plot() -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    names = ["fast", "vibid-adapter", "fast, 15 steps", "poe g=1 weighted", "poe g=1.5", "gi at fast's steps", "paper"]
    for offset, world in zip((-0.2, 0.2), WORLDS, strict=True):
        flags = columns(HERE / f"{world}_mechanism_pairs.csv") | columns(HERE / f"{world}_presets_pairs.csv")
        shown = [n for n in names if f"{n} | every" in flags]
        values = [paired(flags[f"{n} | every"], flags[f"{n} | none"]) for n in shown]
        x = np.array([names.index(n) for n in shown]) + offset
        ax.bar(x, [v[0] for v in values], 0.4, yerr=[v[1] for v in values], label=WORLDS[world], capsize=3)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_ylabel("consistent: hold on every estimate minus none")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "deltas.png", dpi=120)


if __name__ == "__main__":
    print(rejudge())
    mechanism_plot()
    deltas_plot()
