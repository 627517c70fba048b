"""Dual-directional EDM sampling as short functions over denoisers and sigmas (k-diffusion style).

SVD is a v-prediction model with EDM preconditioning (sigma_data = 1); its scheduler gives
Karras sigmas from sigma_max = 700 down to sigma_min = 0.002 and a final 0. The paper samples
with Euler steps and, during the first ``noise_injection_ratio`` of the steps, re-injects noise
``noise_injection_steps`` times per step and repeats the step (Wang et al. 2025, section 3.3).

What a sampler is handed (the pipeline builds them once per call):

- a :data:`BranchDenoiser` ``model(x, sigma, branches) -> BranchEstimates``: the conditional (and, with guidance,
  unconditional) denoised estimates of the requested branches, all in forward frame order; a sampler asks only
  for the branches it needs at that evaluation, and each request is one UNet call;
- or a fused :data:`Denoiser` ``denoise(x, sigma) -> denoised`` (:func:`make_fused_denoiser`: guidance and the
  per-frame fusion applied);
- a :data:`Noise` source ``noise(like) -> standard normal tensor of like's shape``: every random draw of a sampler
  goes through it (it draws from the caller's generator, and :class:`Coupling` may tie draws across videos);
- a :class:`Coupling`'s ``share``, applied to every denoised estimate before an update uses it (identity for
  independent videos; keyframe sequences tie the shared boundary frames with it).

The samplers (:func:`sample` dispatches on ``SamplingConfig.sampler``): :func:`sample_gi` (the paper's; ``trf`` is the
same step with the backward branch unrotated, which the branch denoiser decides), :func:`sample_forward` (plain
image-to-video) and :func:`sample_vibid` (ViBiD's sequential bidirectional step). Each takes a first- or second-order
solver (:func:`solver_step`) and, but ``forward``, the paper's re-injection (:func:`run_steps`). UNet rows per
video of a config: :mod:`inbetween.cost`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from diffusers.utils.torch_utils import randn_tensor

from .config import BACKWARD, FORWARD, FUSIONS, SamplingConfig

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Noise = Callable[[torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None]
Share = Callable[[torch.Tensor], torch.Tensor]
# One step of a sampler from sigmas[i] to sigmas[i + 1]: ``step(x, i, restart)``; ``restart`` is True when x was just
# re-noised (a re-injection), so a multistep solver has no history on its trajectory.
Step = Callable[[torch.Tensor, int, bool], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass(frozen=True)
class BranchEstimates:
    """The denoised estimates of one evaluation, each ``(B, N, C, h, w)`` in FORWARD frame order (the backward
    branch's estimate, computed on the time-reversed video, is flipped back): ``cond[branch]`` conditioned on the
    branch's keyframe (forward: the first, backward: the last), ``uncond[branch]`` with the keyframe conditioning
    zeroed (present only when guidance is on)."""

    cond: dict[str, torch.Tensor]
    uncond: dict[str, torch.Tensor] = field(default_factory=dict)

    def guided(self, branch: str, scale: torch.Tensor) -> torch.Tensor:
        """``branch``'s classifier-free guided estimate with per-frame ``scale`` ``(N,)`` (forward frame order);
        its conditional estimate when no unconditional one was evaluated."""
        if branch not in self.uncond:
            return self.cond[branch]
        return apply_guidance(self.uncond[branch], self.cond[branch], scale)


BranchDenoiser = Callable[[torch.Tensor, torch.Tensor, tuple[str, ...]], BranchEstimates]


@dataclass(frozen=True)
class Coupling:
    """How the videos of one batch are tied to each other during sampling; independent videos by default.

    ``tie_noise`` maps every standard-normal draw ``(B, N, ...)`` (initial noise, re-injections) to the draw used,
    and ``share`` maps every denoised estimate before an update uses it. A keyframe sequence copies the noise of a
    shared boundary frame and averages its estimates, so both copies of the frame stay equal at every noise level.
    """

    tie_noise: Callable[[torch.Tensor], torch.Tensor] = _identity
    share: Callable[[torch.Tensor], torch.Tensor] = _identity


@dataclass(frozen=True)
class Hooks:
    """What every sampler is handed besides the config, the model, ``x`` and the sigmas: the :data:`Noise` source,
    the :class:`Coupling`'s ``share`` applied to every denoised estimate, and the ``callback(step, sigma, x)`` run
    after each step (:func:`run_steps`)."""

    noise: Noise
    share: Share = _identity
    callback: StepCallback | None = None


def gaussian_noise(generator: torch.Generator | None, coupling: Coupling | None = None) -> Noise:
    """The noise source of one call: float draws like ``like`` from ``generator``, tied by ``coupling``."""
    tie = coupling.tie_noise if coupling is not None else _identity

    def noise(like: torch.Tensor) -> torch.Tensor:
        return tie(randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype))

    return noise


def edm_scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``c_skip, c_out, c_in, c_noise`` of EDM v-prediction with sigma_data = 1 (Karras et al. 2022, table 1)."""
    c_skip = 1 / (sigma**2 + 1)
    c_out = -sigma / (sigma**2 + 1) ** 0.5
    c_in = 1 / (sigma**2 + 1) ** 0.5
    c_noise = 0.25 * sigma.log()
    return c_skip, c_out, c_in, c_noise


def euler_step(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One Euler step of the probability-flow ODE (Karras et al. 2022, algorithm 2 without churn),
    ``x + (x - D) / sigma * (sigma_next - sigma)``, written as ``D + sigma_next / sigma * (x - D)``: the same update,
    exact also where ``sigma`` is huge (a flow model's ``t = 1``, :mod:`inbetween.families.wan`), where the first form
    cancels ``x`` against nearly ``-x``."""
    return denoised + (x - denoised) * (sigma_next / sigma)


def reinject_noise(x: torch.Tensor, sigma_from: torch.Tensor, sigma_to: torch.Tensor, noise: Noise) -> torch.Tensor:
    """Add noise of std ``sqrt(sigma_to^2 - sigma_from^2)``: ``x`` goes from ``sigma_from`` back to ``sigma_to``."""
    return x + noise(x) * (sigma_to**2 - sigma_from**2).clamp(min=0) ** 0.5


def is_injection_step(step: int, num_steps: int, noise_injection_ratio: float) -> bool:
    """Noise is re-injected on the first ``int(ratio * num_steps)`` steps (paper: 25 of 50)."""
    return step < int(noise_injection_ratio * num_steps)


def run_steps(
    step: Step,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise,
    noise_injection_steps: int = 0,
    noise_injection_ratio: float = 0.5,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Take ``step`` over ``sigmas`` (last one 0) with the paper's noise re-injection (Wang et al. 2025, sec. 3.3).

    On the first ``int(ratio * steps)`` steps, after the update, noise from ``noise`` takes the sample back to
    ``sigmas[i]`` and the step is redone, ``noise_injection_steps`` times. ``callback(step, sigma, x)`` runs after
    each step and may return a replacement for ``x``.
    """
    num_steps = len(sigmas) - 1
    for i in range(num_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_next = step(x, i, False)
        if is_injection_step(i, num_steps, noise_injection_ratio):
            for _ in range(noise_injection_steps):
                x_next = step(reinject_noise(x_next, sigma_next, sigma, noise), i, True)
        x = x_next
        if callback is not None:
            replaced = callback(i, sigma, x)
            x = x if replaced is None else replaced
    return x


def injection_of(config: SamplingConfig) -> dict[str, object]:
    """:func:`run_steps`' re-injection options from a config."""
    return dict(noise_injection_steps=config.noise_injection_steps, noise_injection_ratio=config.noise_injection_ratio)


def dpmpp_2m_denoised(
    denoised: torch.Tensor,
    previous: torch.Tensor,
    sigma_previous: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
) -> torch.Tensor:
    """DPM-Solver++(2M)'s data estimate (Lu et al. 2022, "DPM-Solver++", algorithm 2): with lambda = -log sigma,
    ``h = lambda_next - lambda``, ``r = h_previous / h``, ``D' = D + (D - D_previous) / (2 r)``. An Euler step with
    ``D'`` is the 2M step: in EDM's parametrisation Euler, DDIM and DPM-Solver++(1) are one update,
    ``x_next = D + sigma_next / sigma * (x - D)``."""
    h = (sigma / sigma_next).log()
    r = (sigma_previous / sigma).log() / h
    return denoised + (denoised - previous) / (2 * r)


# What a step's solver evaluates at (x, sigma): the guided estimate D and the noise direction's estimate U (None:
# D itself; vibid's CFG++ passes the unconditional one).
Estimate = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def denoised_update(
    x: torch.Tensor,
    denoised: torch.Tensor,
    direction: torch.Tensor | None,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
) -> torch.Tensor:
    """``x_next = D + sigma_next / sigma * (x - U)``: with ``U = D`` (``direction=None``) Euler's step (computed as
    :func:`euler_step`), which in EDM's parametrisation is also DDIM's and DPM-Solver++(1)'s; with ``U`` the
    unconditional estimate, CFG++'s (Chung et al. 2024, eq. 9 in EDM form: the guided data estimate, the unguided
    noise)."""
    if direction is None:
        return euler_step(x, denoised, sigma, sigma_next)
    return denoised + (sigma_next / sigma) * (x - direction)


def solver_step(
    solver: str,
    estimate: Estimate,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    i: int,
    restart: bool,
    history: dict,
) -> torch.Tensor:
    """One step of ``solver`` from ``sigmas[i]`` to ``sigmas[i + 1]`` over ``estimate(x, sigma) -> (D, U)``.

    - ``euler``: :func:`denoised_update` with the estimates at ``x``: one evaluation.
    - ``dpmpp-2m`` (Lu et al. 2022, "DPM-Solver++", algorithm 2): the same update with the estimates extrapolated
      from the previous step's (``history``, the caller's dict; :func:`dpmpp_2m_denoised`): second order at ONE
      evaluation per step, which is why it is our second-order solver for gi, where the rows are the price (EDM's
      Heun, Karras et al. 2022 algorithm 1, is second order at two evaluations per step). First order where the
      previous estimate is not on the sample's path: the first step, a step redone after a re-injection
      (``restart``), and the last step to ``sigma = 0`` (``h`` is infinite there).
    - ``dpmpp-2s`` (ibid., algorithm 1 with ``r = 1/2``): an update to the log-midpoint ``sqrt(sigma sigma_next)``,
      then the full update with the estimates there: second order at two evaluations per step (one on the last
      step), needing no history, so it also serves vibid, whose half-steps never continue a path.
    """
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised, direction = estimate(x, sigma)
    if solver == "dpmpp-2s" and sigma_next > 0:
        sigma_mid = (sigma * sigma_next).sqrt()
        denoised, direction = estimate(denoised_update(x, denoised, direction, sigma, sigma_mid), sigma_mid)
    if solver == "dpmpp-2m":
        previous = history.get("previous")
        history["previous"] = (i, denoised, direction)
        if not restart and previous is not None and previous[0] == i - 1 and sigma_next > 0:
            sigma_previous = sigmas[i - 1]
            denoised = dpmpp_2m_denoised(denoised, previous[1], sigma_previous, sigma, sigma_next)
            if direction is not None:
                direction = dpmpp_2m_denoised(direction, previous[2], sigma_previous, sigma, sigma_next)
    return denoised_update(x, denoised, direction, sigma, sigma_next)


def fusion_weights(fusion: str, num_frames: int) -> torch.Tensor:
    """Per-frame weight ``w`` of the forward branch, shape ``(N,)``: 0.5 everywhere, linspace(1, 0, N), or all
    1 / all 0 for one branch alone."""
    if fusion == "average":
        return torch.full((num_frames,), 0.5)
    if fusion == "linear":
        return torch.linspace(1.0, 0.0, num_frames)
    if fusion in ("forward", "backward"):
        return torch.full((num_frames,), 1.0 if fusion == "forward" else 0.0)
    raise ValueError(f"`fusion` must be one of {', '.join(FUSIONS)}, got {fusion!r}")


def guidance_scales(min_scale: float, max_scale: float, num_frames: int, fusion: str) -> torch.Tensor:
    """Per-frame classifier-free guidance scale, shape ``(N,)``, in each branch's own frame order.

    SVD's scale grows linearly from the conditioning frame (Blattmann et al. 2023). With equal
    fusion weights the paper symmetrises it to ``(g + flip(g)) / 2`` so both branches are guided
    alike at every frame of the fused video.
    """
    g = torch.linspace(min_scale, max_scale, num_frames)
    return (g + g.flip(0)) / 2 if fusion == "average" else g


def branch_guidance_scales(config: SamplingConfig, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-frame guidance scales ``(g_fwd, g_bwd)``, each ``(N,)`` in FORWARD frame order, of ``config``'s
    ``guidance_ramp``: ``svd``, each branch's own SVD ramp from ``min`` at its keyframe to ``max`` at the far one;
    ``symmetric``, the ramp and its mirror averaged (the paper's for average fusion); ``weighted``, the symmetric scale
    times ``2 w`` for the forward branch and ``2 (1 - w)`` for the backward one, ``w = linspace(1, 0, N)``: each
    keyframe's own branch alone at its frame, both at the symmetric scale mid-video. ``auto``: symmetric for average
    and product-of-experts fusion (where the branches add up frame by frame), svd otherwise."""
    ramp = config.guidance_ramp
    if ramp == "auto":
        ramp = "symmetric" if config.fusion in ("average", "poe") and config.sampler != "vibid" else "svd"
    g = guidance_scales(config.min_guidance_scale, config.max_guidance_scale, num_frames, "linear")
    if ramp in ("symmetric", "weighted"):
        g = (g + g.flip(0)) / 2
    # The backward branch's ramp runs in its own (reversed) time: in forward order it is flipped.
    g_fwd, g_bwd = g, g.flip(0)
    if ramp == "weighted":
        w = fusion_weights("linear", num_frames)
        g_fwd, g_bwd = 2 * w * g_fwd, 2 * (1 - w) * g_bwd
    return g_fwd, g_bwd


def apply_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``uncond + scale * (cond - uncond)`` with ``scale`` of shape ``(N,)`` over the frame axis of ``(B, N, ...)``."""
    return uncond + _per_frame(scale, cond) * (cond - uncond)


def _per_frame(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(N,)`` values shaped to broadcast over the frame axis of ``like`` ``(B, N, ...)``."""
    return values.view(1, -1, *([1] * (like.ndim - 2)))


def fuse(denoised_fwd: torch.Tensor, denoised_bwd: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``w * fwd + (1 - w) * bwd`` per frame; both estimates in forward frame order (:class:`BranchEstimates`)."""
    w = weights.view(1, -1, *([1] * (denoised_fwd.ndim - 2)))
    return w * denoised_fwd + (1 - w) * denoised_bwd


def product_of_experts(estimates: BranchEstimates, g_fwd: torch.Tensor, g_bwd: torch.Tensor) -> torch.Tensor:
    """``D_u + g_f (D_f - D_u) + g_b (D_b - D_u)`` per frame, ``D_u`` the mean of both unconditional estimates.

    The keyframes are independent given the video, so ``p(x | first, last) = p(x | first) p(x | last) / p(x)`` up to
    a constant (Hinton 2002's product of experts); with Tweedie's ``D = x + sigma^2 grad log p`` its denoiser is
    ``D_f + D_b - D_u``, exact as sigma -> 0 (above it the noisy marginals do not factorise). Guidance scales each
    keyframe's likelihood, ``p(first | x)^g_f p(last | x)^g_b``: g_f = g_b = 1 is the plain product. Needs both
    unconditional estimates (``SamplingConfig.guided`` is True for this fusion)."""
    uncond = 0.5 * (estimates.uncond[FORWARD] + estimates.uncond[BACKWARD])
    fwd, bwd = estimates.cond[FORWARD] - uncond, estimates.cond[BACKWARD] - uncond
    return uncond + _per_frame(g_fwd, fwd) * fwd + _per_frame(g_bwd, bwd) * bwd


def make_fused_denoiser(model: BranchDenoiser, config: SamplingConfig, num_frames: int, share: Share) -> Denoiser:
    """The paper's fused denoiser over ``model``: each branch guided with its per-frame scale
    (:func:`branch_guidance_scales`), then ``w * fwd + (1 - w) * bwd`` per frame (``fusion="forward"`` /
    ``"backward"``: that branch alone; ``"poe"``: :func:`product_of_experts`), then ``share``."""
    g_fwd, g_bwd = branch_guidance_scales(config, num_frames)
    branches = config.branches

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        estimates = model(x, sigma, branches)
        scale = {FORWARD: g_fwd.to(x.device), BACKWARD: g_bwd.to(x.device)}
        if config.fusion == "poe":
            return share(product_of_experts(estimates, scale[FORWARD], scale[BACKWARD]))
        if len(branches) == 1:
            return share(estimates.guided(branches[0], scale[branches[0]]))
        weights = fusion_weights(config.fusion, num_frames).to(x.device)
        return share(
            fuse(estimates.guided(FORWARD, scale[FORWARD]), estimates.guided(BACKWARD, scale[BACKWARD]), weights)
        )

    return denoise


def sample_gi(
    config: SamplingConfig, model: BranchDenoiser, x: torch.Tensor, sigmas: torch.Tensor, hooks: Hooks
) -> torch.Tensor:
    """Generative Inbetweening's sampler (Wang et al. 2025, sec. 3.3): per step one evaluation of both branches,
    fused (:func:`make_fused_denoiser`), an Euler (or second-order, :func:`solver_step`) step, and on the first
    ``noise_injection_ratio`` of the steps ``noise_injection_steps`` re-noise-and-redo rounds. ``trf`` (Feng et al.
    2024) is this sampler with ``rotation=False``, which only the branch denoiser sees."""
    denoise = make_fused_denoiser(model, config, x.shape[1], hooks.share)
    history: dict = {}

    def estimate(x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, None]:
        return denoise(x, sigma), None

    def step(x: torch.Tensor, i: int, restart: bool) -> torch.Tensor:
        return solver_step(config.solver, estimate, x, sigmas, i, restart, history)

    return run_steps(step, x, sigmas, noise=hooks.noise, callback=hooks.callback, **injection_of(config))


def sample_forward(
    config: SamplingConfig, model: BranchDenoiser, x: torch.Tensor, sigmas: torch.Tensor, hooks: Hooks
) -> torch.Tensor:
    """Plain SVD image-to-video (Blattmann et al. 2023): the forward branch alone with SVD's guidance ramp, its
    solver, never a re-injection (``noise_injection_*`` are ignored)."""
    plain = replace(config, fusion=FORWARD, noise_injection_steps=0)
    return sample_gi(plain, model, x, sigmas, hooks)


def keep_keyframe(denoised: torch.Tensor, keyframe: torch.Tensor, frame: int) -> torch.Tensor:
    """ViBiD's keyframe-consistency (DDS) step: the estimate ``(B, N, C, h, w)`` with frame ``frame`` set to the
    keyframe's latent ``(B, C, h, w)``.

    DDS (Chung, Lee, Ye 2024) moves the denoised estimate towards ``A x = y`` with conjugate-gradient steps on
    ``||y - A x||^2`` started at the estimate; for ``A`` = "take frame ``frame``" the normal operator ``A^T A`` is a
    projection, and CG from the estimate converges in one iteration to this replacement (what the authors' 5
    iterations compute)."""
    out = denoised.clone()
    out[:, frame] = keyframe.to(denoised.dtype)
    return out


def hold_ends(keyframe_latents: torch.Tensor, share: Share = _identity) -> Share:
    """Keyframe-exact ends: ``share`` followed by the DDS replacement (:func:`keep_keyframe`) at BOTH ends, frame 0
    taking ``keyframe_latents[:, 0]`` and frame N-1 ``keyframe_latents[:, 1]`` (``(B, 2, C, h, w)``).

    Applied to every denoised estimate (each sampler hands its estimates to ``share`` before an update), it is
    ViBiD's DDS step for any sampler and both ends at once: an end frame's update then moves exactly towards the
    keyframe's latent, and the last step (to sigma = 0, where every solver returns its estimate) lands on it.
    In a keyframe sequence the two copies of a boundary frame hold the same keyframe's latent, so they stay equal.
    ``exact_ends`` no longer runs it (:func:`land_ends`): on the exact-denoiser worlds it costs the weighted product
    of experts keyframe consistency and helps the average fusion (docs/tiny_world/exact_ends).
    """

    def held(denoised: torch.Tensor) -> torch.Tensor:
        first = keep_keyframe(share(denoised), keyframe_latents[:, 0], 0)
        return keep_keyframe(first, keyframe_latents[:, 1], -1)

    return held


def land_ends(x: torch.Tensor, keyframe_latents: torch.Tensor) -> torch.Tensor:
    """Keyframe-exact ends: the finished sample ``x`` ``(B, N, C, h, w)`` with frame 0 set to
    ``keyframe_latents[:, 0]`` and frame N-1 to ``keyframe_latents[:, 1]`` (``(B, 2, C, h, w)``): where the last step
    (to sigma = 0, where every solver returns its estimate) lands with :func:`keep_keyframe` on its estimate alone.

    Nothing is held during sampling: holding every estimate's ends at the keyframes (as ViBiD's DDS does at one end)
    cost ``fast`` keyframe consistency on both exact-denoiser worlds (docs/tiny_world/exact_ends): its guided estimate
    overshoots each keyframe at its end frame (scale 3 there), and the branch conditioned on the other keyframe reads
    that overshoot in the sample as amplified evidence of this one; a held end gives it less.
    In a keyframe sequence the two copies of a boundary frame take the same keyframe's latent, so they stay equal.
    """
    out = keep_keyframe(x, keyframe_latents[:, 0], 0)
    return keep_keyframe(out, keyframe_latents[:, 1], -1)


def sample_vibid(
    config: SamplingConfig,
    model: BranchDenoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    hooks: Hooks,
    keyframe_latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """ViBiDSampler (Yang, Kwon, Ye, ICLR 2025, sec. 3): per step from sigma to sigma_next, a half-step on the
    forward branch (conditioned on the first keyframe), noise back to sigma once, ``sqrt(sigma^2 - sigma_next^2)``,
    then a half-step on the backward branch (the time-reversed video conditioned on the last keyframe; the branch
    denoiser flips the video and its estimate back, and the update is frame-wise, so "flip, step, flip back" is this).
    A half-step asks only for its own branch (``rotation=True``: the backward request also evaluates the forward rows
    its attention reads). Options: ``cfg_pp``, CFG++ (Chung et al. 2024): ``x_next = D_g + sigma_next / sigma *
    (x - D_u)``, the guided estimate with the UNguided noise direction (off: Euler's ``x - D_g``);
    ``keyframe_consistency``: :func:`keep_keyframe` on each half's estimate, at the far end (forward half: the last
    frame takes ``keyframe_latents[:, 1]``; backward half: the first takes ``keyframe_latents[:, 0]``); ``solver``
    ``dpmpp-2s`` makes each half-step second order (:func:`solver_step`; ``dpmpp-2m`` is refused: no half-step
    continues a path, and on a Gaussian, whose answer is closed form, it inflates the samples' spread); re-injection
    rounds redo the whole bidirectional step, as in :func:`sample_gi` (ViBiD has none: its presets set 0).

    Where ours differs from the authors' code (github.com/vibidsampler/vibid, ``vibidsampler.py``): the guidance
    scale is our per-frame ramp in each branch's own time (theirs: one constant per branch, ``cfg_scale`` /
    ``cfg_scale_flip``, both 1 by default, which the ``vibid`` preset's ``min = max = 1`` reproduces); CFG++ and DDS
    are options (always on there); the DDS target is the VAE mode of the clean keyframe times the scaling factor
    (theirs: a posterior sample, and their DDS runs CG to the same replacement); every draw comes from ``noise``
    (theirs: the global RNG); the backward branch may rotate attention with the backward adapter (``vibid-adapter``;
    theirs: base SVD with its own attention, our ``rotation=False``); batches of pairs, any size, optional 2S
    solver and re-injection; no stochastic churn (their ``s_churn`` is 0 by default, so the same update).
    """
    g_fwd, g_bwd = branch_guidance_scales(config, x.shape[1])
    scale = {FORWARD: g_fwd.to(x.device), BACKWARD: g_bwd.to(x.device)}
    share = hooks.share
    far_end = {FORWARD: (-1, 1), BACKWARD: (0, 0)}  # (frame of the estimate, keyframe index) the DDS step sets
    if config.keyframe_consistency and keyframe_latents is None:
        raise ValueError("`keyframe_consistency` needs the keyframes' latents (`keyframe_latents`)")

    def estimate(branch: str) -> Estimate:
        def branch_estimate(x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            estimates = model(x, sigma, (branch,))
            denoised = estimates.guided(branch, scale[branch])
            if config.keyframe_consistency:
                frame, keyframe = far_end[branch]
                denoised = keep_keyframe(denoised, keyframe_latents[:, keyframe], frame)
            # share last, after DDS: the shared frames of tied videos (Coupling) must see one estimate
            return share(denoised), share(estimates.uncond[branch]) if config.cfg_pp else None

        return branch_estimate

    halves = {branch: estimate(branch) for branch in (FORWARD, BACKWARD)}

    def step(x: torch.Tensor, i: int, restart: bool) -> torch.Tensor:
        x_half = solver_step(config.solver, halves[FORWARD], x, sigmas, i, True, {})
        x_back = reinject_noise(x_half, sigmas[i + 1], sigmas[i], hooks.noise)
        return solver_step(config.solver, halves[BACKWARD], x_back, sigmas, i, True, {})

    return run_steps(step, x, sigmas, noise=hooks.noise, callback=hooks.callback, **injection_of(config))


def sample(
    config: SamplingConfig,
    model: BranchDenoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise,
    share: Share = _identity,
    callback: StepCallback | None = None,
    keyframe_latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the sampler ``config.sampler`` asks for over ``model`` from ``x`` ``(B, N, C, h, w)`` at ``sigmas[0]`` to
    ``sigmas[-1] = 0``: the one entry point of the pipeline and of any other denoiser (the tiny world's exact one).

    ``keyframe_latents`` ``(B, 2, C, h, w)``: the first and last keyframe in ``x``'s space, needed by vibid's
    ``keyframe_consistency`` and by ``exact_ends`` (:func:`land_ends` on the result, any sampler). With
    ``fusion="forward"`` / ``"backward"`` there is one branch and nothing to fuse or alternate: every sampler but
    ``forward`` runs :func:`sample_gi` on it (re-injection included).
    """
    if config.exact_ends and keyframe_latents is None:
        raise ValueError("`exact_ends` needs the keyframes' latents (`keyframe_latents`)")
    hooks = Hooks(noise, share, callback)
    if config.sampler in (FORWARD, "native"):  # native: the forward branch sees both keyframes (the family's)
        x = sample_forward(config, model, x, sigmas, hooks)
    elif config.sampler == "vibid" and config.fusion not in (FORWARD, BACKWARD):
        x = sample_vibid(config, model, x, sigmas, hooks, keyframe_latents)
    else:
        x = sample_gi(config, model, x, sigmas, hooks)
    return land_ends(x, keyframe_latents) if config.exact_ends else x
