"""The sampling options and the paper's constants: the bottom of the house (imports nothing of the package).

Defaults are those of Generative Inbetweening (Wang et al., ICLR 2025, section 4) and of Stable Video
Diffusion (Blattmann et al. 2023), whose micro-conditioning the paper keeps.
"""

from __future__ import annotations

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
# native: the model's own first-last-frame conditioning in one branch (Wan FLF2V, Wan 2.2 A14B).
SAMPLERS = ("gi", "vibid", "trf", FORWARD, "native")
# First order; DPM-Solver++(2M), second order at one evaluation per step from the previous step's estimate (gi,
# trf, forward); DPM-Solver++(2S), second order at two per step, self-contained (any sampler, vibid's only one).
SOLVERS = ("euler", "dpmpp-2m", "dpmpp-2s")
# Per-frame guidance scale of each branch (sampling.branch_guidance_scales); auto: symmetric for the average and
# product fusions, each branch's own SVD ramp otherwise.
GUIDANCE_RAMPS = ("auto", "svd", "symmetric", "weighted")
# What a sampler fixes (trf: gi's step with the backward branch's own attention; forward: the forward branch
# alone), and the defaults of those options under the other samplers.
SAMPLER_FIXES: dict[str, dict[str, object]] = {
    "trf": {"rotation": False},
    FORWARD: {"fusion": FORWARD},
    "native": {"fusion": FORWARD},
}
SAMPLER_MEANS = {
    "trf": "the backward branch unrotated",
    FORWARD: "the forward branch alone",
    "native": "one branch conditioned on both keyframes",
}
SAMPLER_DEFAULTS: dict[str, object] = {"rotation": True, "fusion": "average"}


@dataclass(frozen=True)
class SamplerOwn:
    """The default of an option a sampler may fix: the sampler's own value, which ``SamplingConfig.__post_init__``
    fills in, so no config holds it once made. Not ``None``: the app reads a ``None`` default as "unset, shown as 0",
    which an unticked box would equal. ``description``: that value in words, the CLI's help shows it."""

    description: str

    def __str__(self) -> str:
        return self.description


DTYPE_NAMES = ("float32", "float16", "bfloat16")  # the torch dtypes a user may name


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
    # fusion and rotation default to the sampler's own (SAMPLER_FIXES, else SAMPLER_DEFAULTS), filled in by
    # __post_init__, so every reader sees the annotated str and bool (from which the CLI makes `--fusion` and
    # `--rotation/--no-rotation`).
    fusion: str = _option(
        SamplerOwn("average; forward for --sampler forward"),
        "forward weight per frame: 0.5 (average), 1 -> 0 (linear), or one branch alone (forward, backward)",
        choices=FUSIONS,
    )
    rotation: bool = _option(
        SamplerOwn("on; off for --sampler trf"),
        "backward branch attends with the forward branch's rotated maps (the paper); off: time-reversal fusion",
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
        "forward: plain image-to-video from the first keyframe; native: the model's own first-last-frame conditioning "
        "(Wan FLF2V, Wan 2.2 A14B)",
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

    prompt: str = _option("", "text prompt, for models conditioned on text (Wan); SVD takes none", metavar="TEXT")
    negative_prompt: str | None = _option(
        None,
        "negative prompt of text-conditioned models (default: the model's own, Wan's standard one)",
        metavar="TEXT",
    )

    def __post_init__(self) -> None:
        self._fill_sampler_own()
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
        for name, allowed in (("solver", SOLVERS), ("guidance_ramp", GUIDANCE_RAMPS)):  # sampler: checked first
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.sampler == "vibid" and self.solver == "dpmpp-2m":
            raise ValueError(
                "`solver` dpmpp-2m extrapolates from the previous step's estimate on the sample's path, which vibid's "
                "half-steps do not have (each starts from a re-noised sample or the other branch's); use dpmpp-2s"
            )

    def _fill_sampler_own(self) -> None:
        """Fill the options left to the sampler (:class:`SamplerOwn`, or ``None``) with its own (frozen: once, here);
        refuse a given value that contradicts a sampler that fixes it, rather than silently run something else than
        what was asked."""
        if self.sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        fixed = SAMPLER_FIXES.get(self.sampler, {})
        for name, value in (SAMPLER_DEFAULTS | fixed).items():
            given = getattr(self, name)
            if given is None or isinstance(given, SamplerOwn):
                object.__setattr__(self, name, value)
            elif name in fixed and given != value:
                raise ValueError(
                    f"`{name}` {given!r} contradicts `sampler` {self.sampler!r} ({SAMPLER_MEANS[self.sampler]}); "
                    f"drop `{name}` or pick another `sampler`"
                )

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

    def with_options(self, **options: object) -> SamplingConfig:
        """This config with ``options`` (as ``dataclasses.replace``), where a new sampler's fixed options follow the
        sampler unless given: ``SamplingConfig().with_options(sampler="trf")`` runs unrotated, while
        ``dataclasses.replace(SamplingConfig(), sampler="trf")`` carries the paper's ``rotation=True`` and is
        refused."""
        if "sampler" in options:
            # what the new sampler fixes, and what the old one fixed, go back to "the sampler's own"
            fixed = {**SAMPLER_FIXES.get(self.sampler, {}), **SAMPLER_FIXES.get(str(options["sampler"]), {})}
            options = {**{f.name: f.default for f in fields(self) if f.name in fixed}, **options}
        return replace(self, **options)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def preset(cls, name: str, base: SamplingConfig | None = None, **overrides: object) -> SamplingConfig:
        """``base`` (default: the paper's config) with the options of preset ``name`` (:data:`PRESETS`), then
        ``overrides``: ``SamplingConfig.preset("fast", height=576, width=1024)``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")
        return (base or cls()).with_options(**{**PRESETS[name], **overrides})


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
    # The candidate most often consistent with both keyframes on the exact-denoiser world (`inbetween toyworld
    # samplers`), ahead of the gi average at the same cost on the tiny-world model too, at about a fifth of paper's
    # UNet rows (docs/tiny_world/samplers.md, README "Which sampler?"). Its exact ends are written after sampling:
    # holding them during sampling cost consistency on both exact worlds (docs/tiny_world/exact_ends).
    "fast": dict(FAST_STEPS, **WEIGHTED_POE, exact_ends=True),
    # The authors' ViBiDSampler (Yang et al. 2025 and their code): 25 steps, CFG++ at scale 1, DDS, base weights with
    # their own attention; `vibid-adapter` rotates attention for the backward adapter (load one).
    "vibid": dict(PAPER_SAMPLER, **VIBID_STEP, **UNIT_GUIDANCE, rotation=False),
}
PRESETS["vibid-adapter"] = dict(PRESETS["vibid"], rotation=True)
