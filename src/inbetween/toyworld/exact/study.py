"""The sampler study: every sampler and preset run on the exact denoisers of the enumerated world, judged against
the ideal answer of every keyframe pair.

A keyframe pair is the first and last frame of a video of the world (a seeded draw of distinct videos). Its ideal
answers are the videos of the world that pass through both keyframes (:meth:`ExactWorld.consistent`). Every sampler
runs through the one entry point, :func:`inbetween.sampling.sample`, from the same initial noise, on SVD's Karras
sigmas (pixel space in [-1, 1] stands for the latent space). Scores per pair (outputs clamped to [-1, 1], the image
range; errors on the 0-255 scale):

- consistent: every frame of the output is within the tolerance of the same ideal answer. The tolerance is half the
  smallest RMSE between two distinct frames of the world, so an output frame within it is nearer that frame than
  any other frame of the world;
- a world video: the same, against any video of the world (consistent with the keyframes or not);
- distance: RMSE over the whole video to the nearest ideal answer;
- ball found: the share of in-between frames in which :func:`inbetween.toyworld.world.find_ball_centre` finds the
  ball (a disc of its colour: a half-transparent ball is not one); path error: distance in px from the found centre
  to the nearest ideal answer's centre in that frame, averaged over the frames where it is found;
- half-transparent: the share of in-between frames with no ball found but at least half a ball's area of pixels
  blended 25-75 % between the background and the ball's colour (a ghost, as two branches averaged leave).

Run it:

    inbetween toyworld samplers --out results/samplers
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ...config import BACKWARD, FORWARD, SamplingConfig
from ...cost import request_layout
from ...evaluation.report import contact_sheet, mean_interval, t_critical
from ...files import atomic_output
from ...options import flat_values
from ...sampling import BranchDenoiser, BranchEstimates, gaussian_noise, sample
from ..candidates import sampler_candidates
from ..world import find_ball_centre
from .config import SamplerStudyConfig
from .denoisers import Candidates, exact_branch_denoiser, frame_distances, ideal_denoiser
from .world import BALL_COLOUR, ExactWorld, build_exact_world

REFERENCE = "paper"  # the row every other is compared with, pair by pair
FORWARD_ONLY, BACKWARD_ONLY = "forward", "backward only"
# The average fusion alone (no guidance). With the paper's guidance, 1 -> 3 symmetrised to 2 at every frame, the
# average is 0.5 (2 D_f - D_fu) + 0.5 (2 D_b - D_bu) = D_f + D_b - (D_fu + D_bu) / 2: the product of experts.
AVERAGE = "paper, g=1"
SHEET_ROWS = (
    FORWARD_ONLY,
    BACKWARD_ONLY,
    AVERAGE,
    "paper",
    "trf",
    "vibid",
    "vibid-adapter",
    "fast",
    "gi at fast's steps",
)
# The ceiling: plain Euler from the same noise on the posterior mean given both keyframes (not a sampler of the
# two branches: no model provides that denoiser).
IDEAL = "ideal denoiser (both keyframes; the ceiling)"
IDEAL_SAMPLING = SamplingConfig(sampler=FORWARD, min_guidance_scale=1.0, max_guidance_scale=1.0)
SHEET_PAIRS = 3
ZOOM = 6  # 16 px frames, enlarged with nearest-neighbour pixels in the sheet
SUMMARY, SHEET = "summary.md", "samplers.png"


def study_rows(base: SamplingConfig | None = None) -> dict[str, SamplingConfig]:
    """The rows of the table, by name: the two one-branch baselines (plain image-to-video, and the backward model
    alone), the paper's sampler without guidance (the exact conditionals need none), then every sampler, preset and
    candidate of :func:`~inbetween.toyworld.candidates.sampler_candidates`. ``rotation=False`` rows (trf, vibid)
    get the backward branch without fine-tuning. One line adds a row."""
    candidates = sampler_candidates(base)
    paper, vibid_adapter = candidates["paper"], candidates["vibid-adapter"]
    gi_fast_steps = candidates["gi at fast's steps"]
    unguided = dict(min_guidance_scale=1.0, max_guidance_scale=1.0)
    baselines = {
        FORWARD_ONLY: candidates.pop("forward"),
        BACKWARD_ONLY: replace(paper, fusion=BACKWARD, noise_injection_steps=0),
        AVERAGE: replace(paper, **unguided),
    }
    # Candidates for `fast` at most a quarter of paper's UNet rows (the preset is the weighted product of experts at
    # these steps, chosen from this table): the other fusions and samplers at fast's cost.
    cheap = {
        "gi at fast's steps, g=1": replace(gi_fast_steps, **unguided),
        "vibid-adapter, no DDS": replace(vibid_adapter, keyframe_consistency=False),
        "vibid-adapter, no CFG++": replace(vibid_adapter, cfg_pp=False),
    }
    return baselines | candidates | cheap


# running ------------------------------------------------------------------------------------------------------


def karras_sigmas(num_steps: int) -> tuple[torch.Tensor, float]:
    """SVD's sigmas for ``num_steps`` steps (its EulerDiscreteScheduler: Karras, 700 -> 0.002, then 0) and the
    initial noise's scale (``init_noise_sigma``), as the pipeline takes them."""
    from diffusers import EulerDiscreteScheduler

    from ...hub import SVD_SCHEDULER_CONFIG

    scheduler = EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(num_steps)
    return scheduler.sigmas.float(), float(scheduler.init_noise_sigma)


def draw_pairs(world: ExactWorld, count: int, seed: int) -> torch.Tensor:
    """``count`` distinct videos of the world, drawn uniformly with ``seed``: long ``(P,)``; their first and last
    frames are the keyframe pairs."""
    if count > world.num_videos:
        raise ValueError(f"`pairs` can be at most the world's {world.num_videos} videos, got {count}")
    chosen = np.random.default_rng(seed).choice(world.num_videos, size=count, replace=False)
    return torch.from_numpy(np.sort(chosen)).long()


@dataclass(frozen=True)
class RowRun:
    """One row's outputs, float32 ``(P, N, 3, H, W)`` clamped to [-1, 1], and what they cost: branch-denoiser
    requests and UNet-equivalent rows per video (the rows the pipeline would evaluate for those requests)."""

    outputs: torch.Tensor
    evaluations: int
    unet_rows: int
    seconds: float


def counted(model: BranchDenoiser, config: SamplingConfig) -> tuple[BranchDenoiser, list[int]]:
    """``model``, counting its requests and their UNet rows per pair into the returned ``[requests, rows]``."""
    tally = [0, 0]

    def denoise(x: torch.Tensor, sigma: torch.Tensor, branches: tuple[str, ...]) -> BranchEstimates:
        tally[0] += 1
        tally[1] += request_layout(config, branches).rows_per_pair
        return model(x, sigma, branches)

    return denoise, tally


def run_row(
    world: ExactWorld,
    config: SamplingConfig,
    videos: torch.Tensor,
    seed: int,
    on_step: Callable[[], None] | None = None,
    ideal: bool = False,
) -> RowRun:
    """Sample the in-betweens of the keyframe pairs of ``videos`` with ``config`` on the exact denoisers (with
    ``ideal``, on :func:`ideal_denoiser`); the initial noise and every later draw come from ``seed`` (the same
    initial noise for every row)."""
    first, last = world.paths[videos, 0], world.paths[videos, -1]
    if ideal:
        model = ideal_denoiser(world, first, last)
    else:
        model = exact_branch_denoiser(
            world,
            first,
            last,
            fine_tuned=config.rotation,
            guided=config.guided,
            shared_unconditional=config.shared_unconditional,
        )
    model, tally = counted(model, config)
    sigmas, init_sigma = karras_sigmas(config.num_inference_steps)
    noise = gaussian_noise(torch.Generator().manual_seed(seed))
    x = noise(torch.empty(len(videos), world.config.num_frames, *world.atlas.shape[1:]))
    keyframes = torch.stack([world.atlas[first], world.atlas[last]], 1)  # (P, 2, 3, H, W): the "latents"

    def step_done(step: int, sigma: torch.Tensor, x: torch.Tensor) -> None:
        if on_step is not None:
            on_step()

    start = time.perf_counter()
    output = sample(config, model, x * init_sigma, sigmas, noise=noise, callback=step_done, keyframe_latents=keyframes)
    seconds = time.perf_counter() - start
    return RowRun(output.clamp(-1, 1), tally[0], tally[1], seconds)


# scoring ------------------------------------------------------------------------------------------------------


def frame_tolerance(world: ExactWorld) -> float:
    """Half the smallest RMSE (0-255 scale) between two distinct frames of the world."""
    atlas = world.atlas_uint8.reshape(len(world.atlas_uint8), -1).astype(np.float64)
    distances = np.sqrt(((atlas[:, None] - atlas[None]) ** 2).mean(-1))
    return 0.5 * float(distances[~np.eye(len(atlas), dtype=bool)].min())


def to_uint8(videos: torch.Tensor) -> np.ndarray:
    """float ``(..., 3, H, W)`` in [-1, 1] -> uint8 ``(..., H, W, 3)``."""
    return ((videos.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).numpy()


def half_transparent(frame: np.ndarray, world: ExactWorld) -> bool:
    """Whether uint8 ``(H, W, 3)`` ``frame`` holds at least half a ball's area of pixels 25-75 % of the way from
    the background to the ball's colour (a ghost)."""
    background = world.background.astype(np.float64)
    towards = np.asarray(BALL_COLOUR, dtype=np.float64) - background  # (H, W, 3)
    alpha = ((frame - background) * towards).sum(-1) / (towards**2).sum(-1)
    half_disc = math.pi * world.config.radius**2 / 2
    return int(((alpha >= 0.25) & (alpha <= 0.75)).sum()) >= half_disc


def score_outputs(world: ExactWorld, outputs: torch.Tensor, videos: torch.Tensor, tolerance: float) -> dict:
    """Per-pair scores of ``outputs`` ``(P, N, 3, H, W)`` for the keyframe pairs of ``videos``: a dict of arrays
    of length P (see the module docstring): ``consistent``, ``world_video``, ``distance``, ``found``,
    ``path_error`` (NaN where no ball is found), ``half_transparent``, and ``nearest_video``, the world video
    nearest the output (to tell whether two rows drew the same video)."""
    first, last = world.paths[videos, 0], world.paths[videos, -1]
    num_frames = world.config.num_frames
    values_per_frame = world.atlas[0].numel()
    rmse = (frame_distances(world, outputs) / values_per_frame).sqrt() * 127.5  # (N, Q, P) frame RMSE, 0-255
    frame, pair = torch.arange(num_frames), torch.arange(len(videos))

    ideal = Candidates.where(world.consistent(first, last))
    entries = world.paths[ideal.index]  # (P, M, N)
    errors = rmse[frame.expand_as(entries), entries, pair[:, None, None].expand_as(entries)]  # (P, M, N)
    worst = errors.amax(-1).masked_fill(~ideal.valid, math.inf)  # (P, M)
    whole = (errors**2).mean(-1).sqrt().masked_fill(~ideal.valid, math.inf)
    nearest_ideal = ideal.index.gather(1, whole.argmin(1, keepdim=True))[:, 0]

    every = torch.stack([rmse[t].index_select(0, world.paths[:, t]) for t in range(num_frames)])  # (N, K, P)
    frames = to_uint8(outputs)
    found, path_error, ghosts = [], [], []
    for p in range(len(videos)):
        centres = world.centres[world.paths[nearest_ideal[p]].numpy()]
        hits, ghost = [], 0
        for t in range(1, num_frames - 1):
            centre = find_ball_centre(frames[p, t], BALL_COLOUR, world.config.radius)
            if centre is None:
                ghost += half_transparent(frames[p, t], world)
            else:
                hits.append(float(np.hypot(*(np.asarray(centre) - centres[t]))))
        found.append(len(hits) / (num_frames - 2))
        path_error.append(float(np.mean(hits)) if hits else math.nan)
        ghosts.append(ghost / (num_frames - 2))
    return {
        "consistent": (worst.min(1).values < tolerance).numpy(),
        "world_video": (every.amax(0).min(0).values < tolerance).numpy(),
        "distance": whole.min(1).values.numpy(),
        "found": np.array(found),
        "path_error": np.array(path_error),
        "half_transparent": np.array(ghosts),
        "nearest_video": (every**2).mean(0).argmin(0).numpy(),
    }


# reporting ----------------------------------------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a proportion (well-behaved at 0 and 1, unlike the normal approximation)."""
    z = t_critical(10**6, confidence)  # the normal quantile (Student t with infinite degrees of freedom)
    share = successes / trials
    centre = (share + z**2 / (2 * trials)) / (1 + z**2 / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z**2 / (4 * trials**2)) / (1 + z**2 / trials)
    return centre - half, centre + half


def _share_cell(flags: np.ndarray) -> str:
    low, high = wilson_interval(int(flags.sum()), len(flags))
    return f"{flags.mean():.3f} [{low:.3f}, {high:.3f}]"


def _mean_cell(values: np.ndarray, digits: int = 2) -> str:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return "–"
    mean, half = mean_interval(list(finite))
    cell = f"{mean:.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}")
    return cell if len(finite) == len(values) else f"{cell} (n={len(finite)})"


def _paired_cell(flags: np.ndarray, reference: np.ndarray) -> str:
    return _mean_cell(flags.astype(float) - reference.astype(float), digits=3)


HEADER = (
    "| sampler | requests / video | UNet rows / video | consistent [95 % CI] | Δ consistent vs paper | a world video "
    "| distance to ideal (RMSE, 0-255) | ball found | path error (px) | half-transparent frames |"
)


def summary_table(runs: dict[str, RowRun], scores: dict[str, dict]) -> str:
    """One row per sampler: cost per video, then the per-pair scores over all pairs (see the module docstring)."""
    reference = scores[REFERENCE]["consistent"] if REFERENCE in scores else None
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for name, run in runs.items():
        score = scores[name]
        paired = "–" if reference is None or name == REFERENCE else _paired_cell(score["consistent"], reference)
        cells = [
            name,
            str(run.evaluations),
            str(run.unet_rows),
            _share_cell(score["consistent"]),
            paired,
            _share_cell(score["world_video"]),
            _mean_cell(score["distance"]),
            _mean_cell(score["found"], 3),
            _mean_cell(score["path_error"]),
            _mean_cell(score["half_transparent"], 3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def disagreeing_pairs(scores: dict[str, dict]) -> np.ndarray:
    """Bool ``(P,)``: the pairs on which the two branches, each run alone from the same noise, drew different
    videos."""
    return scores[FORWARD_ONLY]["nearest_video"] != scores[BACKWARD_ONLY]["nearest_video"]


def disagreement_table(runs: dict[str, RowRun], scores: dict[str, dict]) -> str:
    """Per two-branch row, on the pairs where the branches disagree: consistent outputs, outputs with at least one
    half-transparent frame, and the share of such frames."""
    disagree = disagreeing_pairs(scores)
    lines = [
        "| sampler | consistent [95 % CI] | outputs with a half-transparent frame [95 % CI] "
        "| half-transparent frames |",
        "|---|---|---|---|",
    ]
    for name in runs:
        if name in (FORWARD_ONLY, BACKWARD_ONLY, IDEAL):
            continue
        score = {key: value[disagree] for key, value in scores[name].items()}
        cells = [
            name,
            _share_cell(score["consistent"]),
            _share_cell(score["half_transparent"] > 0),
            _mean_cell(score["half_transparent"], 3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sheet_pairs(scores: dict[str, dict], count: int = SHEET_PAIRS) -> list[int]:
    """Pairs to show: where the branches disagree and the average fusion (:data:`AVERAGE`, else the paper's
    sampler) leaves half-transparent frames, then where it is not consistent, then any disagreement."""
    disagree = disagreeing_pairs(scores)
    average = scores.get(AVERAGE, scores[REFERENCE])
    chosen: list[int] = []
    for wanted in (disagree & (average["half_transparent"] > 0), disagree & ~average["consistent"], disagree):
        chosen += [int(p) for p in np.flatnonzero(wanted) if p not in chosen]
    return chosen[:count]


def comparison_sheet(
    world: ExactWorld, runs: dict[str, RowRun], scores: dict[str, dict], videos: torch.Tensor, pairs: list[int]
) -> Image.Image:
    """A contact sheet per chosen pair: the video the keyframes came from (one of the ideal answers), then the rows
    of SHEET_ROWS that ran; all frames, keyframes at both ends."""
    shown = [name for name in SHEET_ROWS if name in runs]
    sheets, titles = [], []
    for p in pairs:
        source = videos[p : p + 1]
        answers = int(world.consistent(world.paths[source, 0], world.paths[source, -1]).sum())
        rows = {f"source video ({answers} ideal)": to_uint8(world.videos(source)[0])}
        for name in shown:
            verdict = "ok" if scores[name]["consistent"][p] else "wrong"
            rows[f"{name} ({verdict})"] = to_uint8(runs[name].outputs[p])
        sheets.append(contact_sheet(rows, zoom=ZOOM))
        titles.append(f"pair {p} (world video {int(videos[p])}): the branches alone draw different videos")
    title_height = 18
    page = Image.new("RGB", (max(s.width for s in sheets), sum(s.height + title_height for s in sheets)), "white")
    draw, top = ImageDraw.Draw(page), 0
    for sheet, title in zip(sheets, titles, strict=True):
        draw.text((4, top + 3), title, fill="black")
        page.paste(sheet, (0, top + title_height))
        top += sheet.height + title_height
    return page


def summary_markdown(
    config: SamplerStudyConfig,
    world: ExactWorld,
    runs: dict[str, RowRun],
    scores: dict[str, dict],
    tolerance: float,
    seconds: float,
) -> str:
    disagree = disagreeing_pairs(scores)
    sizes = world.consistent(world.paths[:, 0], world.paths[:, -1]).sum(1)
    world_values = flat_values(config.world)
    return "\n".join(
        [
            "# Samplers on the exact-denoiser world",
            "",
            f"{world.num_videos} videos of one ball ({world.config.size}x{world.config.size} px, "
            f"{world.config.num_frames} frames, {len(world.atlas)} distinct frames), {config.pairs} keyframe pairs "
            f"(the first and last frames of distinct videos drawn with seed {config.seed}); every row from the same "
            f"initial noise. A first frame is shared by {int((world.paths[:, 0] == world.paths[0, 0]).sum())} "
            f"videos; a pair's ideal answers number 1 to {int(sizes.max())} (mean {sizes.float().mean():.2f} over "
            "the world's videos).",
            "",
            summary_table(runs, scores),
            "",
            f"Consistent / a world video: every frame within {tolerance:.2f} RMSE (0-255) of one ideal answer / of "
            "one world video (half the smallest RMSE between two distinct frames of the world). Shares: Wilson 95 % "
            "intervals; means: mean ± half-width of the 95 % Student-t interval over pairs (path error over pairs "
            "with a ball found, n given when fewer); Δ consistent vs paper: the paired difference per pair, mean ± "
            "Student-t 95 %. Requests: branch-denoiser calls per video (one UNet call each); UNet rows: the rows "
            "the pipeline would evaluate for them (inbetween.cost). rotation=False rows (trf, vibid) use the "
            "backward branch without fine-tuning (the forward model on the reversed video); rotated attention "
            "itself has no meaning here (no attention). The last row is no sampler of the two branches: plain Euler "
            "from the same noise on the posterior mean given both keyframes, which no model provides: the ceiling.",
            "",
            f"## When the branches disagree ({int(disagree.sum())} of {config.pairs} pairs)",
            "",
            "The pairs on which forward-only and backward-only, from the same noise, end on different videos.",
            "",
            disagreement_table(runs, scores),
            "",
            f"Pictures: `{SHEET}`. World: {world_values}. Wall time of the whole study: {seconds:.0f} s "
            f"(sampling {sum(run.seconds for run in runs.values()):.0f} s).",
            "",
        ]
    )


def run_sampler_study(
    config: SamplerStudyConfig | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    rows: dict[str, SamplingConfig] | None = None,
) -> str:
    """Run every row of ``rows`` (default: :func:`study_rows`) on ``config.pairs`` pairs of the exact world
    (default: :class:`SamplerStudyConfig`'s);
    returns the Markdown summary and, with ``out``, writes ``summary.md`` and ``samplers.png`` there."""
    started = time.perf_counter()
    config = SamplerStudyConfig() if config is None else config
    if out is not None:
        out = Path(out)
        for name in (SUMMARY, SHEET):
            if (out / name).exists() and not overwrite:
                raise FileExistsError(f"`{out / name}` already exists; pass --overwrite to replace it")
    rows = study_rows() if rows is None else rows
    missing = {FORWARD_ONLY, BACKWARD_ONLY, REFERENCE} - set(rows)
    if missing:
        raise ValueError(f"the study needs the rows {', '.join(sorted(missing))}")
    world = build_exact_world(config.world)
    videos = draw_pairs(world, config.pairs, config.seed)
    tolerance = frame_tolerance(world)
    runs, scores = {}, {}
    total = sum(c.num_inference_steps for c in rows.values()) + IDEAL_SAMPLING.num_inference_steps
    with tqdm(total=total, desc="exact world", unit="step") as bar:
        for name, sampling in [*rows.items(), (IDEAL, IDEAL_SAMPLING)]:
            bar.set_postfix_str(name)
            runs[name] = run_row(world, sampling, videos, config.seed, lambda: bar.update(), ideal=name == IDEAL)
            scores[name] = score_outputs(world, runs[name].outputs, videos, tolerance)
    text = summary_markdown(config, world, runs, scores, tolerance, time.perf_counter() - started)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_output(out / SHEET, overwrite=overwrite) as tmp:
            comparison_sheet(world, runs, scores, videos, sheet_pairs(scores)).save(tmp, format="PNG")
        with atomic_output(out / SUMMARY, overwrite=overwrite) as tmp:
            tmp.write_text(text)
    return text
