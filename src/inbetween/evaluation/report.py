"""The evaluation report: summary.md, per_pair.csv, a per-frame plot and contact sheets.

Every pair-level number is first averaged over the pair's scored in-between frames (those with ground truth,
`pairs.scored_frames`); the summary then gives the mean over pairs and its 95 % Student-t interval,
mean +- t(0.975, n - 1) * s / sqrt(n) with s the sample standard deviation.
FID and FVD are one number per method over all its samples (no interval); their sample count is printed with them.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..files import atomic_output
from ..options import flat_values
from .pairs import KeyframePair, scored_frames

FRAME_METRICS = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓"}
SET_METRIC_NAMES = {"fid": "FID ↓", "fvd_i3d": "FVD-I3D ↓", "fvd_videomae": "FVD-VideoMAE ↓"}
SET_METRIC_SAMPLES = {"fid": "scored in-between frames", "fvd_i3d": "16-frame clips", "fvd_videomae": "16-frame clips"}
PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "numpy",
    "av",
    "opencv-python-headless",
    "matplotlib",
    "scenedetect-headless",
)
CONTACT_CELL_WIDTH = 160  # pixels per frame in a contact sheet, at most
CONTACT_LABEL_WIDTH = 110


@dataclass
class EvalSummary:
    """Everything the report shows: the run's settings, its pairs, one row per (method, pair), set metrics."""

    config: object  # EvalConfig (not imported: evaluation imports this module)
    pairs: list[KeyframePair]
    rows: list[dict]  # the per-pair result JSONs, method-major, in manifest order
    set_metrics: dict[str, dict[str, object]]  # method -> metric -> evaluation.SetMetric
    num_processes: int = 1


# statistics -----------------------------------------------------------------------------------------


def t_critical(dof: int, confidence: float = 0.95) -> float:
    """Two-sided Student-t critical value: P(|T| <= t) = `confidence` for `dof` degrees of freedom.

    Bisection on the CDF, integrated with Simpson's rule from the density; agrees with scipy.stats.t.ppf to 1e-6.
    """
    if dof < 1:
        raise ValueError(f"`dof` must be at least 1, got {dof}")
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)

    def mass(t: float) -> float:  # P(0 <= T <= t)
        x = np.linspace(0.0, t, 4001)
        density = np.exp(log_norm - (dof + 1) / 2 * np.log1p(x * x / dof))
        return float(
            (x[1] - x[0]) / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())
        )

    low, high = 0.0, 1.0
    while mass(high) < confidence / 2:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if mass(mid) < confidence / 2 else (low, mid)
    return (low + high) / 2


def mean_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """Mean of `values` and the half-width of its Student-t interval (None for fewer than 2 values)."""
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if len(array) < 2:
        return mean, None
    return mean, t_critical(len(array) - 1, confidence) * float(array.std(ddof=1)) / math.sqrt(len(array))


def pair_mean(values: list[float] | None) -> float | None:
    """Mean over a pair's scored in-between frames; infinite PSNR (a frame reproduced exactly) is left out."""
    if values is None:
        return None
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.inf


# tables -----------------------------------------------------------------------------------------------


def _format(mean: float, half: float | None) -> str:
    digits = 4 if abs(mean) < 10 else 2
    return f"{mean:.{digits}f}" if half is None else f"{mean:.{digits}f} ± {half:.{digits}f}"


def frame_metric_cell(rows: list[dict], metric: str) -> str:
    values = [pair_mean(row[metric]) for row in rows]
    present = [v for v in values if v is not None]
    if not present:
        return "skipped"
    cell = _format(*mean_interval(present))
    return cell if len(present) == len(values) else f"{cell} (n={len(present)})"


def set_metric_cell(metric) -> str:
    if metric.skipped is not None:
        return "skipped"
    value = f"{metric.value:.2f}" if abs(metric.value) >= 1 else f"{metric.value:.3g}"  # random test networks: tiny
    return f"{value} (N={metric.samples})"


def method_table(summary: EvalSummary) -> str:
    header = ["method", "pairs", *FRAME_METRICS.values(), *SET_METRIC_NAMES.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in summary.config.methods:
        rows = [row for row in summary.rows if row["method"] == name]
        cells = [name, str(len(rows))]
        cells += [frame_metric_cell(rows, metric) for metric in FRAME_METRICS]
        cells += [set_metric_cell(summary.set_metrics[name][metric]) for metric in SET_METRIC_NAMES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def skipped_metrics(summary: EvalSummary) -> dict[str, str]:
    """{metric label: reason} for every metric skipped for some method."""
    skipped = {}
    for row in summary.rows:
        if row["lpips"] is None and row.get("lpips_skipped"):
            skipped.setdefault(FRAME_METRICS["lpips"], row["lpips_skipped"])
    for metrics in summary.set_metrics.values():
        for metric, value in metrics.items():
            if value.skipped is not None:
                skipped.setdefault(SET_METRIC_NAMES[metric], value.skipped)
    return skipped


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("inbetween", *PACKAGES):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def scored_sentence(gap: int, num_frames: int) -> str:
    """How many frames per pair were scored, and which."""
    scored, between, steps = scored_frames(gap, num_frames), num_frames - 2, num_frames - 1
    if len(scored) == between:
        return f"Scored frames: all {between} in-between frames of each pair (every one falls on a source frame)."
    shown = ", ".join(map(str, scored)) if len(scored) <= 8 else f"{scored[0]}, {scored[1]}, …, {scored[-1]}"
    return (
        f"Scored frames: {len(scored)} of the {between} in-between frames of each pair, output frames {shown}: "
        f"those whose time i·{gap}/{steps} falls on a source frame. The others have no ground truth and are not "
        "scored (no neighbouring source frame stands in for them)."
    )


def summary_markdown(summary: EvalSummary, date: str | None = None) -> str:
    config = summary.config
    spec = config.pair_spec
    sources = sorted({pair.source for pair in summary.pairs})
    date = date or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = "drawn across shot cuts too (--allow-cuts)" if spec.allow_cuts else "each inside one shot"
    lines = [
        "# Keyframe interpolation evaluation",
        "",
        f"{len(summary.pairs)} keyframe pairs from {len(sources)} videos or frame folders in `{config.data}`, "
        f"{where}; {spec.num_frames} frames per pair at {spec.width}x{spec.height}, keyframes "
        f"{spec.frame_gap} source frames apart. Date: {date}.",
        "",
        scored_sentence(spec.frame_gap, spec.num_frames),
        "",
        method_table(summary),
        "",
        "PSNR, SSIM and LPIPS: per pair, the mean over the scored in-between frames (keyframes excluded), then mean "
        "± half-width of the 95 % Student-t interval over pairs (mean ± t(0.975, n-1) s / √n). FID: Inception pool3 "
        "features of the scored in-between frames against their ground truth; FVD: I3D logits / VideoMAE features "
        "of each whole clip from first to last keyframe (generated: its frames; real: the source frames in "
        "between) resampled to 16 frames (nearest, evenly spaced); N = samples per set. "
        "With fewer samples than feature dimensions (2048 for FID, 400 for I3D, 768 for VideoMAE) FID/FVD are "
        "strongly biased: compare them only between runs with the same N. See docs/metrics.md.",
        "",
    ]
    skipped = skipped_metrics(summary)
    if skipped:
        lines += ["## Skipped metrics", ""]
        lines += [f"- {label}: skipped: {reason}" for label, reason in skipped.items()]
        lines.append("")
    lines += ["## Settings", ""]
    lines += [f"- {name}: `{value}`" for name, value in flat_values(config).items()]
    lines += [f"- processes: {summary.num_processes}", "", "## Versions", ""]
    lines += [f"- {package}: {version}" for package, version in versions().items()]
    return "\n".join(lines) + "\n"


def per_pair_csv(summary: EvalSummary) -> str:
    """One line per (method, pair): the pair, then PSNR / SSIM / LPIPS averaged over its in-between frames."""
    pairs = {pair.name: pair for pair in summary.pairs}
    data = os.path.realpath(summary.config.data)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "pair", "source", "start", "gap", *FRAME_METRICS])
    for row in summary.rows:
        pair = pairs[row["pair"]]
        source = os.path.realpath(pair.source)
        if os.path.commonpath([data, source]) == data:
            source = os.path.relpath(source, data)
        means = [pair_mean(row[metric]) for metric in FRAME_METRICS]
        writer.writerow(
            [row["method"], pair.name, source, pair.start, pair.gap, *("" if v is None else f"{v:.6g}" for v in means)]
        )
    return buffer.getvalue()


# figures ----------------------------------------------------------------------------------------------


def plot_per_frame(summary: EvalSummary, path: Path) -> None:
    """PSNR and LPIPS against the in-between index, one line per method (mean over pairs, 95 % t-band)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('the report plot needs matplotlib: pip install "inbetween[eval]"') from exc
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas, without pyplot's global state
    for axes, metric in zip(figure.subplots(1, 2), ("psnr", "lpips"), strict=True):
        axes.set_xlabel("in-between frame")
        axes.set_ylabel(FRAME_METRICS[metric])
        for name in summary.config.methods:
            rows = [row for row in summary.rows if row["method"] == name and row[metric] is not None]
            if not rows:
                continue
            values = np.array([row[metric] for row in rows], dtype=np.float64)  # (pairs, N - 2)
            values[~np.isfinite(values)] = np.nan
            x = rows[0]["frames"]
            stats = [mean_interval(column[np.isfinite(column)].tolist()) for column in values.T]
            mean = np.array([m for m, _ in stats])
            axes.plot(x, mean, marker="o", label=name)
            axes.set_xticks(x)
            if len(rows) > 1:
                half = np.array([h if h is not None else 0.0 for _, h in stats])
                axes.fill_between(x, mean - half, mean + half, alpha=0.15)
        if axes.lines:
            axes.legend()
        else:
            axes.text(0.5, 0.5, f"{metric.upper()} skipped", ha="center", va="center", transform=axes.transAxes)
    with atomic_output(path, overwrite=True) as tmp:
        figure.savefig(tmp, dpi=120, format="png")


def contact_sheet(videos: dict[str, np.ndarray], zoom: int | None = None) -> Image.Image:
    """One row per video (label on the left), one column per frame; `videos`: name -> (N, H, W, 3) uint8.

    Frames are shrunk to at most `CONTACT_CELL_WIDTH` pixels wide, or, with `zoom`, enlarged by pixel repetition
    (small frames stay sharp).
    """
    first = next(iter(videos.values()))
    num_frames, height, width = first.shape[:3]
    if zoom is None:
        scale, resample = min(1.0, CONTACT_CELL_WIDTH / width), Image.Resampling.BILINEAR
    else:
        scale, resample = float(zoom), Image.Resampling.NEAREST
    cell = (max(1, round(width * scale)), max(1, round(height * scale)))
    label_width = max(CONTACT_LABEL_WIDTH, 6 * max(len(name) for name in videos) + 10)  # default font: ~6 px/char
    sheet = Image.new("RGB", (label_width + num_frames * cell[0], len(videos) * cell[1]), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (name, frames) in enumerate(videos.items()):
        draw.text((4, row * cell[1] + 4), name, fill="black")
        for column, frame in enumerate(frames):
            image = Image.fromarray(frame).resize(cell, resample)
            sheet.paste(image, (label_width + column * cell[0], row * cell[1]))
    return sheet


def write_contact_sheet(path: Path, videos: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        contact_sheet(videos).save(tmp, format="PNG")


def _write_text(path: Path, text: str) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(text)


def write_report(out: Path, summary: EvalSummary) -> Path:
    """Write summary.md, per_pair.csv and per_frame.png into `out` (atomically); returns summary.md's path."""
    _write_text(out / "per_pair.csv", per_pair_csv(summary))
    plot_per_frame(summary, out / "per_frame.png")
    _write_text(out / "summary.md", summary_markdown(summary))
    return out / "summary.md"
