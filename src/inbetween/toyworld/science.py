"""The science check in miniature: the paper's claims tested on held-out toy-world videos with known ball paths.

Each method interpolates the first and last frames of held-out videos whose motion between the keyframes is
not a straight line (a bounce or a clear arc). Scores per pair, over the in-between frames:

- hit rate (the headline): the share of ground-truth balls that the ball finder
  (:func:`inbetween.toyworld.world.find_ball_centre`: a disc of the ball's radius, less its rim, of the ball's own
  colour, so a faded ghost is never a ball) finds within the ball's radius of its true centre; a miss and a
  ball in the wrong place both fail. Only balls at least ``VISIBLE_FRACTION`` visible in the ground truth
  (not hidden by a ball drawn over them, from the true geometry) are scored;
- ball-centre error (px): distance from the true centre of each scored ball that is found, wherever it is;
- miss rate: the share of scored balls that are not found at all (absent, faded, or two of them);
- PSNR and SSIM against the ground-truth frames.

Run it:

    inbetween toyworld evaluate --pairs 64 --out results/tiny_world
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..adapter import BackwardAdapter
from ..config import SamplingConfig
from ..evaluation.metrics import psnr, ssim
from ..evaluation.pairs import blend
from ..evaluation.report import mean_interval
from ..files import atomic_output
from ..hub import TINY_WORLD, resolve_model_folder
from ..options import flat_values
from ..pipeline import ADAPTER_FILE, InbetweenPipeline
from .candidates import TINY_WORLD_SAMPLING
from .recipe import ABLATION_ADAPTER_FILE, model_world
from .seeds import HELDOUT_SEEDS
from .world import WorldConfig, WorldVideo, find_ball_centre, interpolation_pairs, visible_fraction

logger = logging.getLogger(__name__)

# The tiny model samples by default with few steps and no classifier-free guidance (TINY_WORLD_*: half the UNet
# batch; the conditioning latent already pins the colours), with the paper's re-injection (5 per step, first half).

# A ball is scored in a frame only where at least this share of its disc is visible in the ground truth (not
# covered by balls drawn over it): the finder then finds every such ground-truth ball, within 0.65 px.
VISIBLE_FRACTION = 0.9


@dataclass(frozen=True)
class WorldMethod:
    """One way to fill the in-between frames: a model-free baseline (``"crossfade"``, ``"flow"``), or the sampling
    config it is run under (``--preset``, ``--sampler``, ...) with what this method changes in it (``None``: keep
    the config's)."""

    key: str  # its `--methods` name
    name: str
    baseline: str | None = None  # a model-free way to fill the frames, from MODEL_FREE
    fusion: str | None = None
    rotation: bool | None = None
    adapter: str | None = ADAPTER_FILE  # the backward adapter file of the model folder; None: base weights
    reinjection: bool = True

    def sampling(self, base: SamplingConfig) -> SamplingConfig:
        """``base`` with this method's branches, rotation and re-injection."""
        changes = {"fusion": self.fusion, "rotation": self.rotation}
        changes = {name: value for name, value in changes.items() if value is not None}
        if not self.reinjection:
            changes["noise_injection_steps"] = 0
        return replace(base, **changes)


CROSSFADE = WorldMethod("crossfade", "linear cross-fade", baseline="crossfade", adapter=None)
OPTICAL_FLOW = WorldMethod("flow", "optical flow (DIS, bidirectional warp)", baseline="flow", adapter=None)
FORWARD_ONLY = WorldMethod(  # plain SVD image-to-video
    "forward-only", "forward-only I2V", fusion="forward", adapter=None, reinjection=False
)
BACKWARD_ONLY = WorldMethod("backward-only", "backward-only (adapter)", fusion="backward")
TIME_REVERSAL = WorldMethod("trf", "dual, own attention, no FT (TRF)", rotation=False, adapter=None)
DUAL_NO_FT = WorldMethod("dual-no-ft", "dual, rotated, no fine-tuning", adapter=None)
FULL_NO_REINJECTION = WorldMethod("full-no-reinjection", "full method, no re-injection", reinjection=False)
FULL = WorldMethod("full", "full method")
# The paper's "w/o RA": a backward model fine-tuned on W_q, W_k, W_v, W_o that attends with its own maps.
WITHOUT_RA = WorldMethod(  # the dual call is what runs its own-attention backward branch: rotation stays on
    "without-ra", "w/o RA (own attention, W_q,k,v,o FT)", rotation=True, adapter=ABLATION_ADAPTER_FILE
)
WORLD_METHODS = (
    CROSSFADE,
    OPTICAL_FLOW,
    FORWARD_ONLY,
    DUAL_NO_FT,
    FULL,
    FULL_NO_REINJECTION,
    BACKWARD_ONLY,
    TIME_REVERSAL,
    WITHOUT_RA,
)


def world_methods(keys: Iterable[str] | None = None) -> tuple[WorldMethod, ...]:
    """The methods named by ``keys`` (their ``key``s, e.g. ``["crossfade", "full"]``), in that order; all of them by
    default."""
    if keys is None:
        return WORLD_METHODS
    by_key = {method.key: method for method in WORLD_METHODS}
    unknown = [key for key in keys if key not in by_key]
    if unknown:
        raise ValueError(f"unknown method `{unknown[0]}` for `--methods`; choose from {', '.join(by_key)}")
    return tuple(by_key[key] for key in keys)


def load_tiny_world(model: str = TINY_WORLD) -> tuple[InbetweenPipeline, dict[str, BackwardAdapter]]:
    """The tiny-world pipeline (float32, CPU, no progress bars) and the backward adapters of its folder, by file
    name (the adapter; the "w/o RA" ablation's where the model has one)."""
    folder = resolve_model_folder(model)
    pipe = InbetweenPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    files = (ADAPTER_FILE, ABLATION_ADAPTER_FILE)
    return pipe, {name: BackwardAdapter.load(folder / name) for name in files if (folder / name).is_file()}


def heldout_videos(count: int, start: int = HELDOUT_SEEDS, world: WorldConfig | None = None) -> list[WorldVideo]:
    """The first ``count`` interesting (bouncing or arcing) held-out videos, seeds from ``start`` upwards, of
    ``world`` (default: the shipped model's, :func:`model_world`)."""
    if start < HELDOUT_SEEDS:
        raise ValueError(f"held-out seeds start at {HELDOUT_SEEDS} (lower ones are training videos), got {start}")
    world = model_world() if world is None else world
    videos = interpolation_pairs(range(start, start + 100 * count), world)
    return [video for _, video in zip(range(count), videos, strict=False)]


def _as_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float ``(..., 3, H, W)`` in [0, 1]."""
    return torch.from_numpy(frames).movedim(-1, -3).float() / 255


def _as_uint8(frames: torch.Tensor) -> np.ndarray:
    """float ``(..., 3, H, W)`` in [0, 1] -> uint8 ``(..., H, W, 3)``."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).numpy()


def model_free_frames(baseline: str, first: np.ndarray, last: np.ndarray, num_frames: int) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 frames from ``first`` to ``last`` (``(H, W, 3)`` uint8) by a model-free baseline."""
    if baseline == "crossfade":
        return _as_uint8(blend(_as_float(first), _as_float(last), num_frames))
    if baseline == "flow":
        from ..evaluation.flow import interpolate_flow  # OpenCV: only this row needs it

        return interpolate_flow(first, last, num_frames)
    raise ValueError(f"unknown baseline `{baseline}`; choose crossfade or flow")


def interpolate_videos(
    pipe: InbetweenPipeline,
    adapters: Mapping[str, BackwardAdapter],
    method: WorldMethod,
    videos: list[WorldVideo],
    sampling: SamplingConfig = TINY_WORLD_SAMPLING,
    seed: int = 0,
) -> np.ndarray:
    """Frames ``(B, N, H, W, 3)`` uint8 of ``method`` between the first and last frames of ``videos`` (one batch),
    sampled with ``sampling`` (default: the tiny world's) under the method's own branches."""
    frames = np.stack([video.frames for video in videos])  # (B, N, H, W, 3)
    first, last = _as_float(frames[:, 0]), _as_float(frames[:, -1])
    num_frames, size = frames.shape[1], frames.shape[2]
    if method.baseline is not None:
        return np.stack(
            [
                model_free_frames(method.baseline, a, b, num_frames)
                for a, b in zip(frames[:, 0], frames[:, -1], strict=True)
            ]
        )
    if method.adapter is None:
        pipe.unload_backward_adapter()
    elif method.adapter in adapters:
        pipe.load_backward_adapter(adapters[method.adapter])
    else:
        raise ValueError(f"method `{method.name}` needs `{method.adapter}`, which this tiny-world model does not have")
    config = replace(method.sampling(sampling), height=size, width=size, num_frames=num_frames)
    generator = torch.Generator().manual_seed(seed)
    video = pipe(first, last, config, generator=generator, output_type="pt").frames  # (B, N, 3, H, W) in [0, 1]
    return _as_uint8(video)


@dataclass(frozen=True)
class BallScores:
    """Ball scores over the in-between frames of one pair: ``scored`` balls (visible enough in the ground
    truth), of which ``missed`` were not found and ``hits`` were found within their radius of the true centre;
    ``errors`` holds the centre error (px) of every ball found."""

    errors: list[float]
    missed: int
    scored: int
    hits: int


def ball_scores(generated: np.ndarray, video: WorldVideo) -> BallScores:
    """Score the balls of ``generated`` ``(N, H, W, 3)`` against ``video`` over the in-between frames."""
    visible = visible_fraction(video.centres, video.radii)  # (N, B)
    errors, missed, scored, hits = [], 0, 0, 0
    for t in range(1, len(video.frames) - 1):
        for ball, (colour, radius) in enumerate(zip(video.colours, video.radii, strict=True)):
            if visible[t, ball] < VISIBLE_FRACTION:
                continue
            scored += 1
            found = find_ball_centre(generated[t], colour, radius)
            if found is None:
                missed += 1
                continue
            error = float(np.hypot(*(np.array(found) - video.centres[t, ball])))
            errors.append(error)
            hits += int(error <= radius)
    return BallScores(errors, missed, scored, hits)


def ends_psnr(generated: np.ndarray, video: WorldVideo) -> float:
    """The mean PSNR (dB, capped at 100: identical frames) of the first and last generated frames against the
    keyframes they should be."""
    pred, truth = _as_float(generated[[0, -1]]), _as_float(video.frames[[0, -1]])
    return float(psnr(pred, truth).clamp(max=100).mean())


def score_pair(generated: np.ndarray, video: WorldVideo) -> dict[str, float]:
    """Per-pair means over the in-between frames (hit rate, centre error, miss rate, PSNR, SSIM) and the ends'
    PSNR against the keyframes (:func:`ends_psnr`)."""
    balls = ball_scores(generated, video)
    errors, missed, scored = balls.errors, balls.missed, balls.scored
    pred, truth = _as_float(generated[1:-1]), _as_float(video.frames[1:-1])
    return {
        "hit_rate": balls.hits / scored if scored else float("nan"),
        "centre_error": float(np.mean(errors)) if errors else float("nan"),
        "miss_rate": missed / scored if scored else float("nan"),
        "psnr": float(psnr(pred, truth).clamp(max=100).mean()),
        "ssim": float(ssim(pred, truth).mean()),
        "ends_psnr": ends_psnr(generated, video),
    }


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def evaluate_methods(
    pipe: InbetweenPipeline,
    adapters: Mapping[str, BackwardAdapter],
    videos: list[WorldVideo],
    methods: Iterable[WorldMethod] = WORLD_METHODS,
    sampling: SamplingConfig = TINY_WORLD_SAMPLING,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, list[dict[str, float]]]:
    """Per-pair scores of every method: ``{method name: [scores of pair 0, ...]}``; batch ``b`` is seeded
    ``seed + b`` for every method, so methods differ only in what they are."""
    methods = list(methods)
    results: dict[str, list[dict[str, float]]] = {m.name: [] for m in methods}
    with tqdm(total=len(methods) * len(videos), desc="toy-world evaluation", unit="pair") as progress:
        for method in methods:
            for index, batch in enumerate(_batches(videos, batch_size)):
                generated = interpolate_videos(pipe, adapters, method, batch, sampling, seed + index)
                results[method.name] += [score_pair(g, v) for g, v in zip(generated, batch, strict=True)]
                progress.update(len(batch))
    return results


METRICS = (
    ("hit_rate", "hit rate ↑"),
    ("centre_error", "centre error (px) ↓"),
    ("miss_rate", "miss rate ↓"),
    ("psnr", "PSNR (dB) ↑"),
    ("ssim", "SSIM ↑"),
    ("ends_psnr", "ends vs keyframes PSNR (dB) ↑"),
)


def summary_table(results: dict[str, list[dict[str, float]]]) -> str:
    """A Markdown table: mean ± half-width of the 95 % Student-t interval over pairs, per method and metric
    (pairs where a metric is undefined, e.g. no ball found for the centre error, are left out of it)."""
    header = "| method | " + " | ".join(label for _, label in METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for name, pairs in results.items():
        cells = []
        for key, _ in METRICS:
            values = [p[key] for p in pairs if key in p and math.isfinite(p[key])]  # older runs lack new keys
            mean, half = mean_interval(values) if values else (math.nan, None)
            digits = 3 if key in ("hit_rate", "miss_rate", "ssim") else 2
            cells.append(f"{mean:.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_evaluation(
    out: str | Path | None = None,
    model: str = TINY_WORLD,
    pairs: int = 50,
    sampling: SamplingConfig = TINY_WORLD_SAMPLING,
    seed: int = 0,
    methods: Iterable[WorldMethod] = WORLD_METHODS,
    overwrite: bool = False,
    first_seed: int = HELDOUT_SEEDS,
    resume: bool = False,
) -> str:
    """Evaluate ``methods`` on the first ``pairs`` interesting held-out videos from seed ``first_seed`` up;
    returns the Markdown table and, with ``out``, writes ``summary.md`` and ``per_pair.json`` there. With
    ``resume``, the rows already in ``out/per_pair.json`` (same model, pairs and sampling) are kept, not re-run,
    and the table holds them and the new ones."""
    methods = tuple(methods)
    if pairs < 2:
        raise ValueError(f"`--pairs` must be at least 2 for an interval, got {pairs}")
    if first_seed < HELDOUT_SEEDS:
        raise ValueError(f"`--first-seed` must be a held-out seed, at least {HELDOUT_SEEDS}, got {first_seed}")
    if resume and out is None:
        raise ValueError("`--resume` needs `--out` (the folder whose per_pair.json it goes on from)")
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("summary.md", "per_pair.json"):
            if (out / name).exists() and not (overwrite or resume):
                raise FileExistsError(f"`{out / name}` already exists; pass --resume to add rows or --overwrite")
    videos = heldout_videos(pairs, first_seed, model_world(model))
    settings = {"model": str(model), "pairs": pairs, "first_seed": first_seed, "seed": seed} | flat_values(sampling)
    settings = json.loads(json.dumps(settings))  # as per_pair.json holds them (tuples as lists)
    # Before the model loads: a run that cannot go on says so at once.
    results, done = previous_results(out / "per_pair.json", settings, videos) if resume else ({}, ())
    pipe, adapters = load_tiny_world(model)
    missing = [m for m in methods if m.adapter is not None and m.adapter not in adapters]
    for method in missing:  # the shipped v1 model predates the ablation
        logger.warning("skipping `%s`: the model has no `%s`", method.name, method.adapter)
    methods = tuple(m for m in methods if m not in missing)
    methods = (*done, *(m for m in methods if m not in done))
    for method in methods:  # the files are rewritten after each method: a long run shows its progress
        if method.name in results:
            logger.info("keeping `%s` from %s", method.name, out / "per_pair.json")
            continue
        results |= evaluate_methods(pipe, adapters, videos, [method], sampling, seed, batch_size=25)
        if out is not None:
            write_results(out, results, settings, methods, videos)
    return summary_table(results)


def previous_results(
    path: Path, settings: dict, videos: list[WorldVideo]
) -> tuple[dict[str, list[dict[str, float]]], tuple[WorldMethod, ...]]:
    """The rows of an earlier ``per_pair.json`` and their methods, checked to be of the same evaluation."""
    if not path.is_file():
        return {}, ()
    try:
        record = json.loads(path.read_text())
        methods = tuple(WorldMethod(**m) for m in record["methods"] if m["name"] in record["results"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:  # truncated, or written by an older inbetween
        raise ValueError(
            f"`{path}` is not a per_pair.json this version can go on from ({type(exc).__name__}: {exc}); "
            "pass --overwrite to start over, or another --out"
        ) from exc
    if record["settings"] != settings or record["seeds"] != [v.seed for v in videos]:
        changed = sorted(
            k for k in settings.keys() | record["settings"].keys() if settings.get(k) != record["settings"].get(k)
        ) or ["seeds"]
        raise ValueError(
            f"`{path}` was made with other settings ({', '.join(changed)}); "
            "pass the same ones to --resume, or --overwrite to start over"
        )
    return record["results"], methods


def write_results(
    out: Path,
    results: dict[str, list[dict[str, float]]],
    settings: dict,
    methods: tuple[WorldMethod, ...],
    videos: list[WorldVideo],
) -> None:
    """``summary.md`` (the table, how it was made) and ``per_pair.json`` (every score), each written atomically."""
    text = (
        f"# Tiny-world science check\n\n{summary_table(results)}\n\nMean ± 95 % Student-t interval over "
        f"{len(videos)} held-out pairs (seeds from {settings['first_seed']}), in-between frames only. Settings: "
        f"{settings}.\n"
    )
    with atomic_output(out / "summary.md", overwrite=True) as tmp:
        tmp.write_text(text)
    record = {"settings": settings, "methods": [asdict(m) for m in methods], "seeds": [v.seed for v in videos]}
    with atomic_output(out / "per_pair.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps({**record, "results": results}, indent=1))


def hit_rate_table(runs: Iterable[str | Path], reference: str = CROSSFADE.name) -> str:
    """The held-out hit-rate table from the ``per_pair.json`` of one or more ``inbetween toyworld evaluate --out``
    folders (each may run its methods under its own sampling, e.g. the baselines under the tiny world's and the full
    method under ``--preset fast``), which must score the same held-out pairs: per method the mean hit rate ± the
    95 % Student-t half-width over pairs, and its paired difference per pair from ``reference`` (same pairs)."""
    runs = list(runs)
    results, seeds, sampling = {}, None, {}
    for folder in runs:
        record = json.loads((Path(folder) / "per_pair.json").read_text())
        if seeds is not None and record["seeds"] != seeds:
            raise ValueError(f"`{folder}` scored other held-out pairs than the first folder; run both with the same "
                             "--pairs and --first-seed")  # fmt: skip
        seeds = record["seeds"]
        settings = record["settings"]
        methods = {m["name"]: m for m in record.get("methods", [])}
        for name, pairs in record["results"].items():
            results[name] = np.array([p["hit_rate"] for p in pairs], dtype=np.float64)
            method = methods.get(name, {})
            if method.get("baseline"):
                sampling[name] = "model-free"
                continue
            fusion = method.get("fusion") or settings["fusion"]
            ends = ", exact ends" if settings.get("exact_ends") else ""
            sampling[name] = f"{settings['num_inference_steps']} steps, {settings['solver']}, {fusion}{ends}"
    if reference not in results:
        raise ValueError(f"no `{reference}` row in {', '.join(map(str, runs))}; evaluate it too (--methods crossfade)")
    lines = [
        f"| method | sampling | hit rate ↑ | Δ vs {reference} (paired) |",
        "|---|---|---|---|",
    ]
    for name, hits in results.items():
        both = np.isfinite(hits) & np.isfinite(results[reference])
        mean, half = mean_interval(list(hits[np.isfinite(hits)]))
        delta = "–"
        if name != reference:
            d_mean, d_half = mean_interval(list(hits[both] - results[reference][both]))
            delta = f"{d_mean:+.3f} ± {d_half:.3f}"
        lines.append(f"| {name} | {sampling[name]} | {mean:.3f} ± {half:.3f} | {delta} |")
    lines.append("")
    lines.append(f"{len(seeds)} held-out pairs (seeds from {seeds[0]}), in-between frames; mean ± 95 % Student-t.")
    return "\n".join(lines)
