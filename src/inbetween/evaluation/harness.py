"""The evaluation harness: keyframe pairs from real videos, any set of methods, standard metrics, a report.

    inbetween evaluate --data videos/ --methods blend,flow,forward,gi --adapter adapter.safetensors --out results/
    accelerate launch --num_processes 4 -m inbetween evaluate --data videos/ ... --out results/

Steps: (1) draw keyframe pairs inside shots (`pairs`, `shots`) or reuse the manifest; (2) every
process takes its share of the pairs and, per (pair, method) without a result yet, generates the in-between video,
saves its frames and a JSON of per-frame PSNR / SSIM / LPIPS of the scored frames (those with ground truth,
`pairs.scored_frames`), each written atomically, so a killed run loses nothing and a re-run recomputes nothing
already complete; (3) rank 0 merges, computes FID (the scored in-between frames) and FVD (I3D, VideoMAE; whole
clips from first to last keyframe: the N generated frames against the gap + 1 source frames, each resampled to 16)
and writes the report (`report`). Metrics whose network weights are unavailable are reported as skipped
with the reason, never estimated.

Out folder layout: manifest.json, settings.json, frames/<method>/<pair>.npz ((N, H, W, 3) uint8),
results/<method>/<pair>.json, and the report files (summary.md, per_pair.csv, per_frame.png, contact_sheets/).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..adapter import BackwardAdapter
from ..config import SamplingConfig
from ..errors import one_line
from ..files import atomic_output, write_json
from ..hub import TINY_WORLD, TINY_WORLD_FOLDER
from ..loading import job_accelerator, load_pipeline, model_device
from ..model_config import ModelConfig
from ..pipeline import ADAPTER_FILE, InbetweenPipeline
from ..seeds import derive_seed
from .flow import interpolate_flow
from .metrics import frechet_distance_of_features, psnr, ssim
from .networks import MissingWeightsError, load_i3d, load_inception, load_lpips, load_videomae
from .pairs import KeyframePair, PairSpec, VideoShots, blend, draw_pairs, load_pair, read_manifest, save_manifest
from .report import EvalSummary, write_contact_sheet, write_report

FVD_CLIP_FRAMES = 16  # FVD's convention (Unterthiner et al. 2018); VideoMAE's position table is fixed to it
SET_METRICS = ("fid", "fvd_i3d", "fvd_videomae")
# Settings that change the generated frames: a re-run into the same out folder must keep them.
GENERATION_SETTINGS = ("model", "variant", "adapter", "dtype")
# ... and every sampling option but these, which only trade memory for calls (or are the methods' own choice).
NOT_GENERATION_SETTINGS = ("rotation", "split_guidance_batch", "height", "width", "num_frames")
EVAL_SAMPLING = SamplingConfig(num_frames=25, height=576, width=1024)  # the paper's protocol: 25 frames 1024x576
MANIFEST_NAME, SETTINGS_NAME = "manifest.json", "settings.json"


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run. Defaults are the paper's protocol: SVD-XT, 25 frames 1024x576, pairs 24 frames apart,
    50 steps, 5 noise re-injections in the first half of the steps."""

    data: str  # folder of videos and/or frame folders (DAVIS: .../JPEGImages/480p)
    out: str  # results folder; a re-run into it resumes
    methods: str | tuple[str, ...] = "blend,flow,forward,gi"  # comma-separated names of `METHODS`; stored as a tuple
    # Loaded only when a method needs it; `model.adapter` is the backward adapter of `gi` (default: the model
    # folder's own, if any); `model.device` "auto" is each launched process's own GPU.
    model: ModelConfig = field(default_factory=ModelConfig)
    manifest: str | None = None  # pairs manifest to reuse (written here if missing); default <out>/manifest.json
    gap: int | None = None  # source frames between the keyframes; None: num_frames - 1
    pairs_per_video: int = 1
    seed: int = 0  # draws the pairs and, with each pair's name, the noise of every pipeline method
    allow_cuts: bool = False  # draw pairs across shot cuts too (no cut detection); default: inside one shot
    # The paper's sampling at SVD-XT's size; `fusion` is how gi, gi-no-ft and trf fuse (average or linear), the
    # methods choose the branches and rotation themselves.
    sampling: SamplingConfig = field(default_factory=lambda: EVAL_SAMPLING)
    inception_weights: str | None = None  # FID InceptionV3 file; None: cache or download (docs/metrics.md)
    i3d_weights: str | None = None  # FVD I3D file; None: cache or download
    videomae_weights: str | None = None  # VideoMAE folder, file or Hub id; None: MCG-NJU/videomae-base
    lpips_backbone_weights: str | None = None  # torchvision AlexNet file; None: cache or download
    lpips_linear_weights: str | None = None  # lpips v0.1 alex.pth; None: cache or download
    allow_oversize: bool = False  # run calls whose estimated peak memory exceeds what is available
    contact_sheets: bool = True  # one PNG per pair: ground truth and every method, all frames

    def __post_init__(self) -> None:
        names = self.methods.split(",") if isinstance(self.methods, str) else list(self.methods)
        names = [name.strip() for name in names if name.strip()]
        object.__setattr__(self, "methods", tuple(names))  # frozen: normalise once, here
        if not names:
            raise ValueError(f"`methods` must name at least one of {', '.join(METHODS)}")
        unknown = [name for name in names if name not in METHODS]
        if unknown:
            raise ValueError(
                f"unknown method {', '.join(map(repr, unknown))} in `methods`; known: {', '.join(METHODS)}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"`methods` lists a method twice: {','.join(names)}")
        needs_adapter = [name for name in names if METHODS[name].needs_adapter]
        if needs_adapter and self.adapter_file is None:
            raise ValueError(
                f"method {needs_adapter[0]!r} needs a backward adapter: pass `adapter` (--adapter file.safetensors), "
                "or use `gi-no-ft` for the base weights"
            )
        sampling = self.sampling
        if sampling.num_frames is None or sampling.height is None or sampling.width is None:
            raise ValueError("`num_frames`, `height` and `width` must be given for an evaluation")
        if not sampling.rotation:
            raise ValueError(
                "`rotation` is each method's own choice (gi and gi-no-ft rotate, trf does not); "
                "leave `rotation` at its default"
            )
        if sampling.fusion not in ("average", "linear", "poe"):
            raise ValueError(
                f"`fusion` must be average, linear or poe (the methods choose the branches), got {sampling.fusion!r}"
            )
        self.pair_spec  # noqa: B018 - PairSpec validates gap (with num_frames), pairs_per_video, height, width, seed

    @property
    def pair_spec(self) -> PairSpec:
        sampling = self.sampling
        return PairSpec(
            sampling.num_frames,
            self.gap,
            self.pairs_per_video,
            sampling.height,
            sampling.width,
            self.seed,
            self.allow_cuts,
        )

    @property
    def adapter_file(self) -> str | None:
        """`adapter`, else the model folder's own adapter file (loaded by `from_pretrained`), else None."""
        if self.model.adapter is not None:
            return self.model.adapter
        model = self.model.model
        folder = TINY_WORLD_FOLDER if model == TINY_WORLD else Path(model).expanduser()
        return str(folder / ADAPTER_FILE) if (folder / ADAPTER_FILE).is_file() else None


# methods ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keyframes:
    """What a method sees of a pair: the two keyframes, never the ground truth between them."""

    first: torch.Tensor  # (3, H, W) float32 in [0, 1]
    last: torch.Tensor  # (3, H, W) float32 in [0, 1]
    num_frames: int  # frames to return, keyframes included
    seed: int  # derived from (EvalConfig.seed, pair name): the same noise for every method and process count


class Runtime:
    """What methods share in one process: the settings, the device, and the video model, loaded on first use."""

    def __init__(self, config: EvalConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self._pipe: InbetweenPipeline | None = None
        self._adapter: BackwardAdapter | None = None

    def pipeline(self, adapter: bool) -> InbetweenPipeline:
        """The pipeline with the backward adapter loaded (`adapter`) or the base weights in the backward branch."""
        if self._pipe is None:
            # The progress bar is the harness's own, over pairs; the adapter is each method's choice, so the base
            # weights come first (a folder's own adapter is loaded again by the methods that use it).
            self._pipe = load_pipeline(replace(self.config.model, adapter=None), self.device, progress=False)
            self._pipe.unload_backward_adapter()
        if adapter:
            if self._adapter is None:
                self._adapter = BackwardAdapter.load(self.config.adapter_file)
            self._pipe.load_backward_adapter(self._adapter)
        else:
            self._pipe.unload_backward_adapter()
        return self._pipe

    def sample(
        self,
        keyframes: Keyframes,
        adapter: bool,
        rotation: bool = True,
        fusion: str | None = None,
        noise_injection: bool = True,
        preset: str | None = None,
    ) -> np.ndarray:
        """Run the pipeline on one pair; returns (N, H, W, 3) uint8. `fusion` None: the config's; `preset`: that
        preset's sampler options over the config's (`SamplingConfig.preset`)."""
        config = self.config
        pipe = self.pipeline(adapter)
        # CPU generator: the same numbers on every device, so results do not depend on where a pair ran.
        generator = torch.Generator("cpu").manual_seed(keyframes.seed)
        base = config.sampling if preset is None else SamplingConfig.preset(preset, config.sampling)
        sampling = replace(
            base,
            num_frames=keyframes.num_frames,
            fusion=fusion or base.fusion,
            rotation=rotation,
            noise_injection_steps=base.noise_injection_steps if noise_injection else 0,
        )
        frames = pipe(
            keyframes.first[None],
            keyframes.last[None],
            sampling,
            generator=generator,
            output_type="np",
            allow_oversize=config.allow_oversize,
        )
        frames = frames.frames[0]  # (N, H, W, 3) float in [0, 1]
        return to_uint8(frames)


def gi(keyframes: Keyframes, runtime: Runtime) -> np.ndarray:
    """The full method: rotated temporal attention + the fine-tuned backward adapter (Wang et al. 2025)."""
    return runtime.sample(keyframes, adapter=True)


def gi_no_ft(keyframes: Keyframes, runtime: Runtime) -> np.ndarray:
    """Ablation: rotated attention, base weights in the backward branch (no backward fine-tuning)."""
    return runtime.sample(keyframes, adapter=False)


def trf(keyframes: Keyframes, runtime: Runtime) -> np.ndarray:
    """Time-reversal fusion (Feng et al. 2024): the backward branch is the base model with its own attention."""
    return runtime.sample(keyframes, adapter=False, rotation=False)


def forward(keyframes: Keyframes, runtime: Runtime) -> np.ndarray:
    """Plain SVD image-to-video from the first keyframe (the last keyframe is ignored; no re-injection)."""
    return runtime.sample(keyframes, adapter=False, fusion="forward", noise_injection=False)


def gi_fast(keyframes: Keyframes, runtime: Runtime) -> np.ndarray:
    """The full method (rotated attention + adapter) with the `fast` preset: at most a quarter of the UNet rows."""
    return runtime.sample(keyframes, adapter=True, preset="fast")


def gi_poe(keyframes: Keyframes, runtime: Runtime) -> np.ndarray:
    """The full method with product-of-experts fusion, `D_u + g_f (D_f - D_u) + g_b (D_b - D_u)` (`sampling`)."""
    return runtime.sample(keyframes, adapter=True, fusion="poe")


def vibid(keyframes: Keyframes, runtime: Runtime) -> np.ndarray:
    """ViBiDSampler (Yang, Kwon, Ye 2025) as its authors run it: base weights, the backward branch's own attention,
    25 steps, CFG++ and the DDS keyframe step (the `vibid` preset)."""
    return runtime.sample(keyframes, adapter=False, rotation=False, preset="vibid")


def vibid_adapter(keyframes: Keyframes, runtime: Runtime) -> np.ndarray:
    """ViBiD's sampler with the paper's backward branch: rotated attention + the backward adapter (new combination)."""
    return runtime.sample(keyframes, adapter=True, preset="vibid-adapter")


def blend_frames(keyframes: Keyframes, runtime: Runtime) -> np.ndarray:
    """Linear cross-fade of the keyframes (`pairs.blend`)."""
    frames = blend(keyframes.first, keyframes.last, keyframes.num_frames)  # (N, 3, H, W) in [0, 1]
    return to_uint8(frames.permute(0, 2, 3, 1).numpy())


def flow_frames(keyframes: Keyframes, runtime: Runtime) -> np.ndarray:
    """Optical-flow interpolation (OpenCV DIS, `flow.interpolate_flow`)."""
    first, last = (frame.permute(1, 2, 0).numpy() for frame in (keyframes.first, keyframes.last))
    return interpolate_flow(first, last, keyframes.num_frames)


@dataclass(frozen=True)
class Method:
    """A named way to fill in a pair: `run(keyframes, runtime) -> (N, H, W, 3) uint8`, keyframes included."""

    name: str
    run: Callable[[Keyframes, Runtime], np.ndarray]
    needs_adapter: bool = False  # needs EvalConfig.adapter
    needs_module: str | None = None  # an optional package it imports


# Adding a method: one function above and one entry here.
METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("gi", gi, needs_adapter=True),
        Method("gi-no-ft", gi_no_ft),
        Method("trf", trf),
        Method("forward", forward),
        Method("gi-fast", gi_fast, needs_adapter=True),
        Method("gi-poe", gi_poe, needs_adapter=True),
        Method("vibid", vibid),
        Method("vibid-adapter", vibid_adapter, needs_adapter=True),
        Method("blend", blend_frames),
        Method("flow", flow_frames, needs_module="cv2"),
    )
}


# helpers ------------------------------------------------------------------------------------------


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] -> uint8, rounded to nearest."""
    return np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def pair_seed(seed: int, name: str) -> int:
    """The seed of a pair's noise: the same in every method, run and process count."""
    return derive_seed(seed, name)


def frames_path(out: Path, method: str, pair: str) -> Path:
    return out / "frames" / method / f"{pair}.npz"


def result_path(out: Path, method: str, pair: str) -> Path:
    return out / "results" / method / f"{pair}.json"


def save_frames(path: Path, frames: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, frames=frames)


def load_frames(path: Path) -> np.ndarray:
    """(N, H, W, 3) uint8 frames saved by `save_frames`."""
    with np.load(path) as data:
        return data["frames"]


def as_tensor(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


def clip_indices(num_frames: int, length: int = FVD_CLIP_FRAMES) -> list[int]:
    """`length` evenly spaced frame indices (nearest) over a clip of `num_frames`, repeating frames if shorter.

    FVD's real clip is `clip_indices(gap + 1)` of the source frames, its generated clip `clip_indices(N)` of the
    output frames: the same 16 times from first to last keyframe, each rounded to its own clip's nearest frame."""
    return np.rint(np.linspace(0, num_frames - 1, length)).astype(int).tolist()


# metrics --------------------------------------------------------------------------------------------


def load_lpips_or_reason(config: EvalConfig, device: torch.device) -> tuple[torch.nn.Module | None, str | None]:
    try:
        return load_lpips(config.lpips_backbone_weights, config.lpips_linear_weights, device=device), None
    except MissingWeightsError as exc:
        return None, one_line(exc) + " (inbetween evaluate: --lpips-backbone-weights / --lpips-linear-weights)"


def score_frames(
    frames: np.ndarray, truth: torch.Tensor, scored: list[int], lpips: torch.nn.Module | None
) -> dict[str, list | None]:
    """Per-frame PSNR (dB), SSIM and LPIPS of the scored in-between frames (`load_pair`'s "scored").

    `frames`: (N, H, W, 3) uint8 generated; `truth`: (len(scored), 3, H, W) float32 in [0, 1], the ground truth of
    output frames `scored`. Returns lists of len(scored) floats (LPIPS None without its network).
    """
    fake, real = as_tensor(frames)[scored], truth
    scores = {"psnr": psnr(fake, real).tolist(), "ssim": ssim(fake, real).tolist(), "lpips": None}
    if lpips is not None:
        device = next(lpips.parameters()).device
        with torch.no_grad():
            scores["lpips"] = lpips(fake.to(device) * 2 - 1, real.to(device) * 2 - 1).float().cpu().tolist()
    return scores


@dataclass
class SetMetric:
    """A set-level metric of one method: its value over `samples` samples, or why it was skipped."""

    value: float | None
    samples: int
    skipped: str | None = None


def load_feature_networks(config: EvalConfig, device: torch.device) -> tuple[dict, dict[str, str]]:
    """{metric: network} for the set-level metrics whose weights are available, and {metric: reason} for the rest."""
    loaders = {
        "fid": (partial(load_inception, config.inception_weights, device=device), "--inception-weights"),
        "fvd_i3d": (partial(load_i3d, config.i3d_weights, device=device), "--i3d-weights"),
        "fvd_videomae": (partial(load_videomae, config.videomae_weights, device=device), "--videomae-weights"),
    }
    networks, skipped = {}, {}
    for metric, (load, flag) in loaders.items():
        try:
            networks[metric] = load()
        except MissingWeightsError as exc:
            skipped[metric] = f"{one_line(exc)} (inbetween evaluate: {flag})"
    return networks, skipped


@torch.no_grad()
def set_features(networks: dict, frames: torch.Tensor, clip: torch.Tensor | None) -> dict[str, np.ndarray]:
    """Features of one video: Inception of each of `frames` (M, 3, H, W), the scored in-between frames; I3D /
    VideoMAE of `clip` (16, 3, H, W), the whole video from first to last keyframe resampled to 16 frames. In [0, 1]."""
    features = {}
    for metric, net in networks.items():
        device = next(net.parameters()).device
        if metric == "fid":
            x = frames.to(device) * 2 - 1  # (M, 3, H, W)
        else:
            x = clip.permute(1, 0, 2, 3)[None].to(device) * 2 - 1  # (1, 3, 16, H, W)
        features[metric] = net.features(x).cpu().double().numpy()  # on the CPU first: MPS has no float64
    return features


def frechet(real: list[np.ndarray], fake: list[np.ndarray], reason: str | None) -> SetMetric:
    if reason is not None:
        return SetMetric(None, 0, reason)
    real_features, fake_features = np.concatenate(real), np.concatenate(fake)
    samples = len(fake_features)
    if samples < 2 or len(real_features) < 2:
        return SetMetric(None, samples, f"needs at least 2 samples, got {samples}")
    return SetMetric(frechet_distance_of_features(real_features, fake_features), samples)


# run ------------------------------------------------------------------------------------------------


def check_environment(config: EvalConfig) -> None:
    """Fail before any work when the device, an optional package, the adapter or an explicit weight file is
    missing."""
    model_device(config.model)  # the model options first, as in every command
    for name in config.methods:
        module = METHODS[name].needs_module
        if module and importlib.util.find_spec(module) is None:
            raise ValueError(f'method `{name}` needs the `{module}` package: pip install "inbetween[eval]"')
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError('the report plot needs matplotlib: pip install "inbetween[eval]"')
    adapter = config.model.adapter
    if adapter is not None and not Path(adapter).is_file():
        raise FileNotFoundError(f"adapter `{adapter}` not found; pass a .safetensors backward adapter")
    for name in ("inception_weights", "i3d_weights", "lpips_backbone_weights", "lpips_linear_weights"):
        path = getattr(config, name)
        if path is not None and not Path(path).expanduser().is_file():
            raise FileNotFoundError(f"`{name}` file `{path}` not found; pass an existing file or leave it unset")
    if not Path(config.data).exists():
        raise FileNotFoundError(f"data folder `{config.data}` not found; pass a folder of videos or frame folders")
    manifests = [Path(config.out) / MANIFEST_NAME, *([Path(config.manifest)] if config.manifest else [])]
    drawing = not any(path.is_file() for path in manifests)
    if drawing and not config.allow_cuts and importlib.util.find_spec("scenedetect") is None:
        raise ValueError(
            'drawing pairs inside shots needs PySceneDetect: pip install "inbetween[eval]" '
            "(or --allow-cuts to draw across shot cuts)"
        )


def generation_settings(config: EvalConfig) -> dict:
    settings = {name: getattr(config.model, name) for name in GENERATION_SETTINGS}
    settings.update(
        (name, value) for name, value in asdict(config.sampling).items() if name not in NOT_GENERATION_SETTINGS
    )
    if config.adapter_file is not None:
        settings["adapter"] = os.path.abspath(config.adapter_file)
    return settings


def resolve_pairs(config: EvalConfig) -> tuple[list[KeyframePair], list[VideoShots]]:
    """The run's pairs and the shots of their videos: from `config.manifest` or `<out>/manifest.json` if present,
    else drawn from `config.data`.

    Raises ValueError when a manifest or the out folder's settings disagree with `config` (nothing is written).
    """
    out, spec = Path(config.out), config.pair_spec
    given = Path(config.manifest) if config.manifest else None
    if given is not None and given.is_file():
        pairs, found, videos = read_manifest(given)
        _check_spec(found, spec, f"manifest `{given}`")
    elif (out / MANIFEST_NAME).is_file():
        pairs, found, videos = read_manifest(out / MANIFEST_NAME)
        _check_spec(found, spec, f"out folder `{out}`")
        data = os.path.realpath(config.data)
        elsewhere = [p.source for p in pairs if os.path.commonpath([data, os.path.realpath(p.source)]) != data]
        if elsewhere:
            raise ValueError(
                f"out folder `{out}` holds a manifest for other data (`{elsewhere[0]}` is not in `{config.data}`); "
                "use a new --out"
            )
    else:
        pairs, videos = draw_pairs(Path(config.data).absolute(), spec)
    if (out / MANIFEST_NAME).is_file():
        existing, _, _ = read_manifest(out / MANIFEST_NAME)
        if _identities(existing) != _identities(pairs):
            raise ValueError(f"out folder `{out}` holds a different manifest ({len(existing)} pairs); use a new --out")
    if (out / SETTINGS_NAME).is_file():
        # A sampling option added after the folder was made was at its default then.
        stored = asdict(SamplingConfig()) | json.loads((out / SETTINGS_NAME).read_text())
        changed = {k: (stored.get(k), v) for k, v in generation_settings(config).items() if stored.get(k) != v}
        if changed:
            listed = ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in changed.items())
            raise ValueError(f"out folder `{out}` was run with {listed}; use a new --out or the same settings")
    return pairs, videos


def _identities(pairs: list[KeyframePair]) -> list[tuple]:
    return [(os.path.realpath(p.source), p.start, p.gap, p.name) for p in pairs]


def _check_spec(found: PairSpec, wanted: PairSpec, where: str) -> None:
    names = [f.name for f in dataclasses.fields(PairSpec) if getattr(found, f.name) != getattr(wanted, f.name)]
    if names:
        drawn = ", ".join(f"{name}={getattr(found, name)!r}" for name in names)
        asked = ", ".join(f"{name}={getattr(wanted, name)!r}" for name in names)
        raise ValueError(
            f"{where} has pairs drawn with {drawn} but the settings ask for {asked}; "
            "pass matching options or a new manifest / --out"
        )


def prepare_out(config: EvalConfig, pairs: list[KeyframePair], videos: list[VideoShots]) -> None:
    """Create the out folder with its manifest (and `config.manifest` if it was asked for) and settings."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.manifest and not Path(config.manifest).is_file():
        Path(config.manifest).parent.mkdir(parents=True, exist_ok=True)
        save_manifest(pairs, config.pair_spec, config.manifest, videos=videos)
    if not (out / MANIFEST_NAME).is_file():
        save_manifest(pairs, config.pair_spec, out / MANIFEST_NAME, videos=videos)
    write_json(out / SETTINGS_NAME, generation_settings(config))


def run_pair(
    pair: KeyframePair,
    config: EvalConfig,
    runtime: Runtime,
    lpips: torch.nn.Module | None,
    lpips_skipped: str | None,
    process: int = 0,
) -> int:
    """Generate and score every method without a result for `pair`; returns how many it generated."""
    out = Path(config.out)
    todo = [name for name in config.methods if not result_path(out, name, pair.name).is_file()]
    if not todo:
        return 0
    data = load_pair(pair, config.pair_spec)
    keyframes = Keyframes(data["first"], data["last"], config.sampling.num_frames, pair_seed(config.seed, pair.name))
    for name in todo:
        start = time.perf_counter()
        frames = METHODS[name].run(keyframes, runtime)
        expected = (config.sampling.num_frames, config.sampling.height, config.sampling.width, 3)
        if frames.shape != expected or frames.dtype != np.uint8:
            raise ValueError(f"method `{name}` returned {frames.dtype} {frames.shape}; expected uint8 {expected}")
        seconds = time.perf_counter() - start
        save_frames(frames_path(out, name, pair.name), frames)
        scores = score_frames(frames, data["ground_truth"][1:-1], data["scored"], lpips)
        document = {
            "method": name,
            "pair": pair.name,
            "seed": keyframes.seed,
            "frames": data["scored"],  # output indices with ground truth, in the order of the scores
            **scores,
            "lpips_skipped": lpips_skipped if scores["lpips"] is None else None,
            "seconds": seconds,
            "process": process,
        }
        write_json(result_path(out, name, pair.name), document)  # last: its presence marks the result complete
    return len(todo)


def evaluate(config: EvalConfig) -> Path | None:
    """Run the evaluation of `config`; returns the summary.md path on rank 0, None on the other processes."""
    check_environment(config)
    # Every rank: the same pairs, and the same user errors before anything is written.
    pairs, videos = resolve_pairs(config)
    accelerator = job_accelerator(config.model)
    device = torch.device(model_device(config.model, accelerator))
    if accelerator.is_main_process:
        prepare_out(config, pairs, videos)
    accelerator.wait_for_everyone()
    runtime = Runtime(config, device)
    lpips, lpips_skipped = load_lpips_or_reason(config, device)

    mine = pairs[accelerator.process_index :: accelerator.num_processes]
    bar = tqdm(mine, desc="pairs", unit="pair", disable=not accelerator.is_main_process)
    for pair in bar:
        run_pair(pair, config, runtime, lpips, lpips_skipped, accelerator.process_index)
    del runtime, lpips  # the video model leaves the device before rank 0 loads the feature networks
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None

    summary = merge(config, pairs, device, accelerator.num_processes)
    return write_report(Path(config.out), summary)


def merge(config: EvalConfig, pairs: list[KeyframePair], device: torch.device, num_processes: int) -> EvalSummary:
    """Read every per-pair result, compute the set-level metrics and contact sheets (rank 0 only)."""
    out = Path(config.out)
    missing = [
        str(result_path(out, m, p.name))
        for m in config.methods
        for p in pairs
        if not result_path(out, m, p.name).is_file()
    ]
    if missing:
        raise RuntimeError(f"{len(missing)} results missing after all processes finished, e.g. `{missing[0]}`")
    rows = [json.loads(result_path(out, m, p.name).read_text()) for m in config.methods for p in pairs]
    networks, skipped = load_feature_networks(config, device)
    real: dict[str, list] = {metric: [] for metric in networks}
    fake: dict[str, dict[str, list]] = {name: {metric: [] for metric in networks} for name in config.methods}
    for pair in tqdm(pairs, desc="set metrics", unit="pair"):
        # Real: the scored in-between frames, and the gap + 1 source frames from first to last keyframe as the clip.
        fvd = any(metric != "fid" for metric in networks)
        data = load_pair(pair, config.pair_spec, clip_offsets=clip_indices(pair.gap + 1) if fvd else None)
        truth, scored = data["ground_truth"], data["scored"]
        for metric, value in set_features(networks, truth[1:-1], data.get("clip")).items():
            real[metric].append(value)
        videos = {name: load_frames(frames_path(out, name, pair.name)) for name in config.methods}
        for name, frames in videos.items():  # fake: the same output frames; the clip from all N frames
            video = as_tensor(frames)
            for metric, value in set_features(networks, video[scored], video[clip_indices(len(video))]).items():
                fake[name][metric].append(value)
        if config.contact_sheets:  # ground truth in its output columns, blank where no source frame lies
            ground_truth = np.full(
                (config.sampling.num_frames, config.sampling.height, config.sampling.width, 3), 255, np.uint8
            )
            ground_truth[data["indices"]] = to_uint8(truth.permute(0, 2, 3, 1).numpy())
            write_contact_sheet(out / "contact_sheets" / f"{pair.name}.png", {"ground truth": ground_truth, **videos})
    set_metrics = {
        name: {
            metric: frechet(real.get(metric, []), fake[name].get(metric, []), skipped.get(metric))
            for metric in SET_METRICS
        }
        for name in config.methods
    }
    return EvalSummary(config=config, pairs=pairs, rows=rows, set_metrics=set_metrics, num_processes=num_processes)
