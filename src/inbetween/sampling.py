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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers.utils.torch_utils import randn_tensor

from .config import BACKWARD, FORWARD, FUSIONS, SamplingConfig

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Noise = Callable[[torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None]


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
    """One Euler step of the probability-flow ODE (Karras et al. 2022, algorithm 2 without churn)."""
    d = (x - denoised) / sigma
    return x + d * (sigma_next - sigma)


def reinject_noise(x: torch.Tensor, sigma_from: torch.Tensor, sigma_to: torch.Tensor, noise: Noise) -> torch.Tensor:
    """Add noise of std ``sqrt(sigma_to^2 - sigma_from^2)``: ``x`` goes from ``sigma_from`` back to ``sigma_to``."""
    return x + noise(x) * (sigma_to**2 - sigma_from**2).clamp(min=0) ** 0.5


def is_injection_step(step: int, num_steps: int, noise_injection_ratio: float) -> bool:
    """Noise is re-injected on the first ``int(ratio * num_steps)`` steps (paper: 25 of 50)."""
    return step < int(noise_injection_ratio * num_steps)


def sample_euler_with_reinjection(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise | None = None,
    noise_injection_steps: int = 5,
    noise_injection_ratio: float = 0.5,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Euler sampling over ``sigmas`` (last one 0) with the paper's noise re-injection.

    ``denoise(x, sigma)`` returns the (already fused) denoised video. On injection steps, after
    the update, noise from ``noise`` (default: unseeded Gaussian) takes the sample back to ``sigma`` and the step is
    redone, ``noise_injection_steps`` times. ``callback(step, sigma, x)`` runs after each step and may
    return a replacement for ``x``.
    """
    noise = noise or gaussian_noise(None)
    num_steps = len(sigmas) - 1
    for i in range(num_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_next = euler_step(x, denoise(x, sigma), sigma, sigma_next)
        if is_injection_step(i, num_steps, noise_injection_ratio):
            for _ in range(noise_injection_steps):
                x_back = reinject_noise(x_next, sigma_next, sigma, noise)
                x_next = euler_step(x_back, denoise(x_back, sigma), sigma, sigma_next)
        x = x_next
        if callback is not None:
            replaced = callback(i, sigma, x)
            x = x if replaced is None else replaced
    return x


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


def apply_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``uncond + scale * (cond - uncond)`` with ``scale`` of shape ``(N,)`` over the frame axis of ``(B, N, ...)``."""
    return uncond + scale.view(1, -1, *([1] * (cond.ndim - 2))) * (cond - uncond)


def fuse(denoised_fwd: torch.Tensor, denoised_bwd: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``w * fwd + (1 - w) * bwd`` per frame; both estimates in forward frame order (:class:`BranchEstimates`)."""
    w = weights.view(1, -1, *([1] * (denoised_fwd.ndim - 2)))
    return w * denoised_fwd + (1 - w) * denoised_bwd


def make_fused_denoiser(
    model: BranchDenoiser, config: SamplingConfig, num_frames: int, share: Callable[[torch.Tensor], torch.Tensor]
) -> Denoiser:
    """The paper's fused denoiser over ``model``: each branch guided with SVD's per-frame scale (in the branch's
    own frame order), then ``w * fwd + (1 - w) * bwd`` per frame (``fusion="forward"`` / ``"backward"``: that
    branch alone), then ``share``."""
    scale = guidance_scales(config.min_guidance_scale, config.max_guidance_scale, num_frames, config.fusion)
    branches = {"forward": (FORWARD,), "backward": (BACKWARD,)}.get(config.fusion, (FORWARD, BACKWARD))

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        estimates = model(x, sigma, branches)
        g = scale.to(x.device)
        # The backward branch's ramp runs in its own (reversed) time: in forward order it is flipped.
        guided = {
            FORWARD: lambda: estimates.guided(FORWARD, g),
            BACKWARD: lambda: estimates.guided(BACKWARD, g.flip(0)),
        }
        if len(branches) == 1:
            return share(guided[branches[0]]())
        weights = fusion_weights(config.fusion, num_frames).to(x.device)
        return share(fuse(guided[FORWARD](), guided[BACKWARD](), weights))

    return denoise


def sample(
    config: SamplingConfig,
    model: BranchDenoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise,
    share: Callable[[torch.Tensor], torch.Tensor] = _identity,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run the sampler ``config`` asks for over ``model`` from ``x`` (at ``sigmas[0]``) to ``sigmas[-1] = 0``: the
    one entry point of the pipeline and of any other denoiser (the tiny world's exact one)."""
    denoise = make_fused_denoiser(model, config, x.shape[1], share)
    return sample_euler_with_reinjection(
        denoise,
        x,
        sigmas,
        noise=noise,
        noise_injection_steps=config.noise_injection_steps,
        noise_injection_ratio=config.noise_injection_ratio,
        callback=callback,
    )
