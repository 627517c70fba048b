"""The sampling options and the paper's constants: the bottom of the house (imports nothing of the package).

Defaults are those of Generative Inbetweening (Wang et al., ICLR 2025, section 4) and of Stable Video
Diffusion (Blattmann et al. 2023), whose micro-conditioning the paper keeps.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field, fields, replace

# SVD's micro-conditioning and training noise (sgm's SVD configs; the paper keeps them).
FPS = 7  # SVD was trained on fps - 1 as its conditioning id
MOTION_BUCKET_ID = 127
NOISE_AUG_STRENGTH = 0.02
P_MEAN, P_STD = 0.7, 1.6  # log-normal training sigmas of SVD's EDM loss

FORWARD, BACKWARD = "forward", "backward"  # the branches: conditioned on the first keyframe / on the last, in reverse
# How the branches' estimates combine (sampling.make_fused_denoiser): per-frame weights (0.5 each, or linspace(1, 0, N)
# for the forward branch), one branch alone (baselines), or their product of experts.
FUSIONS = ("average", "linear", FORWARD, BACKWARD, "poe")
# The update rule (sampling.sample dispatches on it): Generative Inbetweening's fused step with re-injection, ViBiD's
# sequential bidirectional step, time-reversal fusion (gi's step, backward branch unrotated), plain image-to-video.
SAMPLERS = ("gi", "vibid", "trf", FORWARD)
# First order; DPM-Solver++(2M), second order at one evaluation per step from the previous step's estimate (gi,
# trf, forward); DPM-Solver++(2S), second order at two per step, self-contained (any sampler, vibid's only one).
SOLVERS = ("euler", "dpmpp-2m", "dpmpp-2s")
# Per-frame guidance scale of each branch (sampling.branch_guidance_scales); auto: symmetric for the average and
# product fusions, each branch's own SVD ramp otherwise.
GUIDANCE_RAMPS = ("auto", "svd", "symmetric", "weighted")
DTYPE_NAMES = ("float32", "float16", "bfloat16")  # the torch dtypes a user may name

# The tiny world (inbetween.toyworld): seed ranges of its videos, far apart so training, adapter and evaluation
# never share a video, and the sampling its science check and demo use.
FORWARD_SEEDS = 0
ADAPTER_SEEDS = 50_000_000
HELDOUT_SEEDS = 90_000_000


def _option(default, help: str, flag: str | None = None, metavar: str | None = None, choices=None):
    """A field with its command-line flag and help next to it: the CLI is generated from these."""
    metadata = {"help": help, "flag": flag, "metavar": metavar, "choices": choices}
    return field(default=default, metadata={key: value for key, value in metadata.items() if value is not None})


@dataclass(frozen=True)
class SamplingConfig:
    """How one video is sampled: the single definition of the sampling options, with the paper's defaults.

    Shapes that follow from it: latents ``(B, num_frames, 4, height / 8, width / 8)`` for SVD; the UNet batch of
    one step is ``4B`` rows ``[fwd-uncond, fwd-cond, bwd-uncond, bwd-cond]`` with guidance (``2B`` without, two
    calls of ``2B`` with ``split_guidance_batch``). ``None`` sizes and frame counts are filled from the keyframes
    and the model when the pipeline runs.
    """

    num_frames: int | None = _option(
        None, "frames incl. both keyframes (default: the model's, 14 for SVD, 25 for SVD-XT)", metavar="N"
    )
    height: int | None = _option(
        None,
        "a multiple of the model's size multiple, 64 for SVD (default: FIRST's aspect, long side 1024)",
        metavar="PX",
    )
    width: int | None = _option(None, "as --height (default: FIRST's aspect, long side 1024)", metavar="PX")
    num_inference_steps: int = _option(50, "denoising steps", flag="--steps", metavar="N")
    min_guidance_scale: float = _option(
        1.0, "guidance scale at the conditioning frame, ramping to --max-guidance", flag="--min-guidance", metavar="X"
    )
    max_guidance_scale: float = _option(
        3.0, "guidance scale at the far frame; <= 1 turns guidance off", flag="--max-guidance", metavar="X"
    )
    fps: int = _option(FPS, "SVD's fps conditioning, also the playback fps unless --output-fps", metavar="N")
    motion_bucket_id: int = _option(MOTION_BUCKET_ID, "SVD's amount of motion, higher moves more", metavar="N")
    noise_aug_strength: float = _option(
        NOISE_AUG_STRENGTH, "noise added to the keyframes before encoding", metavar="X"
    )
    fusion: str = _option(
        "average",
        "forward weight per frame: 0.5 (average), 1 -> 0 (linear), or one branch alone (forward, backward)",
        choices=FUSIONS,
    )
    rotation: bool = _option(
        True, "backward branch attends with the forward branch's rotated maps (the paper); off: time-reversal fusion"
    )
    noise_injection_steps: int = _option(5, "noise re-injections per step, 0 turns them off", metavar="N")
    noise_injection_ratio: float = _option(0.5, "fraction of the steps with re-injection, in [0, 1]", metavar="X")
    decode_chunk_size: int | None = _option(None, "frames decoded at a time (default: all)", metavar="N")
    split_guidance_batch: bool = _option(
        False, "two UNet calls per step instead of one: lower peak memory, same video"
    )
    shared_unconditional: bool = _option(
        False,
        "one unconditional row for both branches (3 UNet rows per evaluation instead of 4): assumes the backward "
        "model's unconditional estimate equals the forward one's, as for an adapter that learned the same videos "
        "reversed",
    )
    sampler: str = _option(
        "gi",
        "gi: the paper's fused step; vibid: ViBiD's forward then backward half-steps; trf: gi without rotation; "
        "forward: plain SVD image-to-video",
        choices=SAMPLERS,
    )
    solver: str = _option(
        "euler",
        "euler; dpmpp-2m: second order, same evaluations (not with vibid); dpmpp-2s: second order, two per step",
        choices=SOLVERS,
    )
    guidance_ramp: str = _option(
        "auto",
        "per-frame guidance of each branch: svd (its own ramp), symmetric (ramp and its mirror averaged), weighted "
        "(symmetric times 2w, w the linear fusion weight); auto: symmetric for average and poe fusion, else svd",
        choices=GUIDANCE_RAMPS,
    )
    cfg_pp: bool = _option(
        False, "vibid: CFG++, the update's noise direction from the unconditional estimate (evaluates its rows)"
    )
    keyframe_consistency: bool = _option(
        False, "vibid: ViBiD's DDS step, each half-step's estimate takes the far keyframe's latent at its end"
    )
    exact_ends: bool = _option(
        False,
        "keyframe-exact ends (any sampler): the finished latents take the keyframes' latents at the first and last "
        "frames and the keyframes' own pixels are written there; nothing is held during sampling",
    )

    def __post_init__(self) -> None:
        # height and width are checked by the pipeline, which knows the model's size multiple.
        if self.num_frames is not None and self.num_frames < 3:
            raise ValueError(
                f"`num_frames` must be at least 3 (two keyframes and one in between), got {self.num_frames}"
            )
        if self.num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be at least 1, got {self.num_inference_steps}")
        if self.fps < 1:
            raise ValueError(f"`fps` must be at least 1, got {self.fps}")
        if self.noise_aug_strength < 0:
            raise ValueError(f"`noise_aug_strength` must be 0 or more, got {self.noise_aug_strength}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"`fusion` must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.noise_injection_steps < 0:
            raise ValueError(f"`noise_injection_steps` must be 0 or more, got {self.noise_injection_steps}")
        if not 0.0 <= self.noise_injection_ratio <= 1.0:
            raise ValueError(f"`noise_injection_ratio` must be in [0, 1], got {self.noise_injection_ratio}")
        if self.decode_chunk_size is not None and self.decode_chunk_size < 1:
            raise ValueError(f"`decode_chunk_size` must be at least 1, got {self.decode_chunk_size}")
        for name, allowed in (("sampler", SAMPLERS), ("solver", SOLVERS), ("guidance_ramp", GUIDANCE_RAMPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.sampler == "vibid" and self.solver == "dpmpp-2m":
            raise ValueError(
                "`solver` dpmpp-2m extrapolates from the previous step's estimate on the sample's path, which vibid's "
                "half-steps do not have (each starts from a re-noised sample or the other branch's); use dpmpp-2s"
            )
        # A sampler name that fixes another option sets it (frozen: once, here): trf is gi's step with the backward
        # branch's own attention, forward is the forward branch alone.
        if self.sampler == "trf":
            object.__setattr__(self, "rotation", False)
        if self.sampler == FORWARD:
            object.__setattr__(self, "fusion", FORWARD)

    @property
    def guided(self) -> bool:
        """Whether the unconditional rows are needed at all: any frame's guidance scale above 1 (SVD's rule), a
        product-of-experts fusion (it divides by the unconditional model), or vibid's CFG++ (its noise direction;
        vibid fuses nothing, so it ignores ``fusion`` but for one branch alone)."""
        if self.sampler == "vibid":
            return self.cfg_pp or max(self.min_guidance_scale, self.max_guidance_scale) > 1.0
        if self.fusion == "poe":
            return True
        return max(self.min_guidance_scale, self.max_guidance_scale) > 1.0

    @property
    def uses_backward(self) -> bool:
        return self.fusion != FORWARD

    @property
    def branches(self) -> tuple[str, ...]:
        """The branches whose estimates the fusion uses, forward first."""
        return (self.fusion,) if self.fusion in (FORWARD, BACKWARD) else (FORWARD, BACKWARD)

    def with_defaults(self, num_frames: int, height: int, width: int) -> SamplingConfig:
        """This config with its model- and keyframe-dependent ``None`` fields filled in."""
        return replace(
            self,
            num_frames=self.num_frames or num_frames,
            height=self.height or height,
            width=self.width or width,
            decode_chunk_size=self.decode_chunk_size or self.num_frames or num_frames,
        )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def preset(cls, name: str, base: SamplingConfig | None = None, **overrides: object) -> SamplingConfig:
        """``base`` (default: the paper's config) with the options of preset ``name`` (:data:`PRESETS`), then
        ``overrides``: ``SamplingConfig.preset("fast", height=576, width=1024)``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")
        return replace(base or cls(), **{**PRESETS[name], **overrides})


def flag_of(field: dataclasses.Field) -> str:
    """The command-line flag of a config field: its ``flag`` metadata, else ``--field-name``."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def with_flag_names(message: str, config_class: type) -> str:
    """Rename backticked config fields (`num_inference_steps`) to the flags that set them (`--steps`)."""
    flags = {field.name: flag_of(field) for field in dataclasses.fields(config_class)}
    return re.sub(r"`([a-z_]+)`", lambda m: f"`{flags.get(m[1], '--' + m[1].replace('_', '-'))}`", message)


def nested_config_fields(config_class: type) -> dict[str, type]:
    """The fields of ``config_class`` that are themselves config dataclasses (their options are flattened into
    the parent's command-line flags)."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in fields(config_class) if dataclasses.is_dataclass(hints[f.name])}


def flat_option_names(config_class: type) -> list[str]:
    """The option names of ``config_class`` with nested configs flattened, as the command-line flags are."""
    nested = nested_config_fields(config_class)
    names = []
    for f in fields(config_class):
        names.extend(flat_option_names(nested[f.name]) if f.name in nested else [f.name])
    return names


def flat_values(config: object) -> dict[str, object]:
    """A config instance's option values, nested configs flattened (the inverse of :func:`config_from_flat`)."""
    values = {}
    for f in fields(config):
        value = getattr(config, f.name)
        values.update(flat_values(value) if dataclasses.is_dataclass(value) else {f.name: value})
    return values


def config_from_flat(config_class: type, values: dict):
    """``config_class`` from one flat dict of option values, nested configs included (the form the CLI and
    settings files have): ``EvalConfig`` from ``{"data": ..., "num_inference_steps": 25}``. Missing nested
    options keep the nested default's values."""
    nested = nested_config_fields(config_class)
    own = {f.name for f in fields(config_class)} - set(nested)
    unknown = set(values) - set(flat_option_names(config_class))
    if unknown:
        raise ValueError(
            f"unknown option {', '.join(f'`{name}`' for name in sorted(unknown))} for {config_class.__name__}"
        )
    kwargs = {name: values[name] for name in own if name in values}
    for name, kind in nested.items():
        declared = next(f for f in fields(config_class) if f.name == name)
        if declared.default_factory is not dataclasses.MISSING:
            base = declared.default_factory()
        else:
            base = kind() if declared.default is dataclasses.MISSING else declared.default
        options = {f.name: values[f.name] for f in fields(kind) if f.name in values}
        kwargs[name] = replace(base, **options)
    return config_class(**kwargs)


# Named sampler settings (SamplingConfig.preset, --preset): the options each sets; every other option keeps its value.
# UNet rows per video at SVD's guidance (inbetween.cost.unet_rows_per_video): paper 700, fast 148, vibid 100,
# vibid-adapter 150. `fast` was picked from the exact-denoiser world's table (`inbetween toyworld
# samplers`) and confirmed on the tiny-world model (see its entry); no cheaper candidate beat it
# on the tiny world (docs/tiny_world/cheaper/README.md).
PAPER_SAMPLER = dict(
    sampler="gi",
    solver="euler",
    num_inference_steps=50,
    noise_injection_steps=5,
    noise_injection_ratio=0.5,
    cfg_pp=False,
    keyframe_consistency=False,
    exact_ends=False,
)
# DPM-Solver++(2M), 25 steps, one re-injection on each of the first 12: 37 evaluations instead of paper's 175.
FAST_STEPS = dict(PAPER_SAMPLER, solver="dpmpp-2m", num_inference_steps=25, noise_injection_steps=1)
# The guided product of experts D_u + g_f (D_f - D_u) + g_b (D_b - D_u) at g = 1.5, each branch weighted towards its
# own keyframe (guidance_ramp "weighted").
WEIGHTED_POE = dict(fusion="poe", min_guidance_scale=1.5, max_guidance_scale=1.5, guidance_ramp="weighted")
# Scale 1 at every frame: each branch's conditional estimate (CFG++ still evaluates the unconditional rows).
UNIT_GUIDANCE = dict(min_guidance_scale=1.0, max_guidance_scale=1.0)
# ViBiD's step as the authors run it: 25 steps, no re-injection, CFG++ and the DDS step.
VIBID_STEP = dict(
    sampler="vibid", num_inference_steps=25, noise_injection_steps=0, cfg_pp=True, keyframe_consistency=True
)
PRESETS: dict[str, dict[str, object]] = {
    "paper": PAPER_SAMPLER,  # Wang et al. 2025, section 4: 50 Euler steps, 5 re-injections on the first 25
    # Chosen from the exact-denoiser world (`inbetween toyworld samplers`: 0.935 [0.892, 0.962] of 200 pairs
    # consistent with both keyframes vs paper's 0.440 [0.373, 0.509]) and confirmed on the tiny-world model (hit rate
    # 0.483 +- 0.070 vs 0.200 +- 0.061 for the gi average at the same cost): 148 UNet rows, 21 % of paper's 700.
    # With keyframe-exact ends: the ends are the keyframes themselves (27.5 dB copies without), written after sampling;
    # holding them during sampling cost consistency on both exact worlds (-0.115 +- 0.047 and -0.145, paired over
    # 200 pairs; docs/tiny_world/exact_ends), so nothing is held and the frames between are those without.
    "fast": dict(FAST_STEPS, **WEIGHTED_POE, exact_ends=True),
    # The authors' ViBiDSampler (Yang et al. 2025 and their code): 25 steps, CFG++ at scale 1, DDS, base weights with
    # their own attention; `vibid-adapter` rotates attention for the backward adapter (load one).
    "vibid": dict(PAPER_SAMPLER, **VIBID_STEP, **UNIT_GUIDANCE, rotation=False),
}
PRESETS["vibid-adapter"] = dict(PRESETS["vibid"], rotation=True)


def sampler_candidates(base: SamplingConfig | None = None) -> dict[str, SamplingConfig]:
    """Every sampler, preset and fusion candidate to judge side by side (the exact-denoiser world's table), by name,
    over ``base`` (default: the paper's config): the presets; the paper's sampler without re-injection; the per-frame
    linear fusion; the product of experts, plain (g = 1) and guided over a few scales and ramps, with and without
    re-injection; the solver alone (Euler at fast's steps); ViBiD without its options; plain image-to-video."""
    base = base or SamplingConfig()
    paper = SamplingConfig.preset("paper", base)
    candidates = {name: SamplingConfig.preset(name, base) for name in PRESETS}
    variants = {
        "paper, no re-injection": dict(noise_injection_steps=0),
        "gi linear": dict(fusion="linear"),
        "gi linear, no re-injection": dict(fusion="linear", noise_injection_steps=0),
        "poe g=1": dict(fusion="poe", min_guidance_scale=1.0, max_guidance_scale=1.0),
        "poe g=1, no re-injection": dict(
            fusion="poe", min_guidance_scale=1.0, max_guidance_scale=1.0, noise_injection_steps=0
        ),
        "poe g=1.5": dict(fusion="poe", min_guidance_scale=1.5, max_guidance_scale=1.5),
        "poe g=1->2 svd ramp": dict(fusion="poe", min_guidance_scale=1.0, max_guidance_scale=2.0, guidance_ramp="svd"),
        "poe g=1 weighted": dict(
            fusion="poe", min_guidance_scale=1.0, max_guidance_scale=1.0, guidance_ramp="weighted"
        ),
        "poe g=1.5 weighted": dict(
            fusion="poe", min_guidance_scale=1.5, max_guidance_scale=1.5, guidance_ramp="weighted"
        ),
        "gi at fast's steps": FAST_STEPS,
        "gi at fast's steps, euler": dict(FAST_STEPS, solver="euler"),
        "gi at fast's steps, no re-injection": dict(FAST_STEPS, noise_injection_steps=0),
        "poe g=1 at fast's steps": dict(FAST_STEPS, fusion="poe", min_guidance_scale=1.0, max_guidance_scale=1.0),
        "fast, no re-injection": dict(PRESETS["fast"], noise_injection_steps=0),
        # Cheaper than fast: one unconditional row for both branches (exact here, where the fine-tuned backward
        # model's unconditional videos are the forward model's), fewer re-injected steps, fewer steps.
        "fast, shared uncond": dict(PRESETS["fast"], shared_unconditional=True),
        "fast, shared uncond, no re-injection": dict(
            PRESETS["fast"], shared_unconditional=True, noise_injection_steps=0
        ),
        "fast, shared uncond, re-injection on the first 8": dict(
            PRESETS["fast"], shared_unconditional=True, noise_injection_ratio=0.32
        ),
        "fast, 20 steps, shared uncond": dict(PRESETS["fast"], shared_unconditional=True, num_inference_steps=20),
        "fast, 15 steps, shared uncond": dict(PRESETS["fast"], shared_unconditional=True, num_inference_steps=15),
        "fast, 20 steps, no re-injection": dict(PRESETS["fast"], num_inference_steps=20, noise_injection_steps=0),
        # the best of them, 88 rows: better on the exact world, but below fast on the tiny world (150 pairs)
        "fast, 15 steps": dict(PRESETS["fast"], num_inference_steps=15),
        "fast, 12 steps": dict(PRESETS["fast"], num_inference_steps=12),
        "trf": dict(sampler="trf"),
    }
    candidates |= {name: replace(paper, **options) for name, options in variants.items()}
    vibid = candidates["vibid"]
    candidates["vibid, plain (no CFG++, no DDS)"] = replace(vibid, cfg_pp=False, keyframe_consistency=False)
    # DPM-Solver++(2S) at about the rows of its first-order counterpart: 13 steps make 2 x 12 + 1 evaluations.
    candidates["vibid, dpmpp-2s, 13 steps"] = replace(vibid, solver="dpmpp-2s", num_inference_steps=13)
    candidates["gi at fast's steps, dpmpp-2s, 13 steps"] = replace(
        candidates["gi at fast's steps"], solver="dpmpp-2s", num_inference_steps=13
    )
    candidates["forward"] = replace(paper, sampler=FORWARD)
    return candidates


# The tiny world's sampling (inbetween.toyworld): few steps, no guidance, the paper's re-injection.
TINY_WORLD_SAMPLING = SamplingConfig(num_inference_steps=10, **UNIT_GUIDANCE)
