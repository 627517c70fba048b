"""Dual-directional EDM sampling as short functions over sigmas (k-diffusion style).

SVD is a v-prediction model with EDM preconditioning (sigma_data = 1); its scheduler gives
Karras sigmas from sigma_max = 700 down to sigma_min = 0.002 and a final 0. The paper samples
with Euler steps and, during the first ``noise_injection_ratio`` of the steps, re-injects noise
``noise_injection_steps`` times per step and repeats the step (Wang et al. 2025, section 3.3).
Every random draw takes the caller's generator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.utils.torch_utils import randn_tensor

from .config import FUSIONS

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None]


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


def reinject_noise(
    x: torch.Tensor, sigma_from: torch.Tensor, sigma_to: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Add noise of std ``sqrt(sigma_to^2 - sigma_from^2)``: ``x`` goes from ``sigma_from`` back to ``sigma_to``."""
    noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + noise * (sigma_to**2 - sigma_from**2).clamp(min=0) ** 0.5


def is_injection_step(step: int, num_steps: int, noise_injection_ratio: float) -> bool:
    """Noise is re-injected on the first ``int(ratio * num_steps)`` steps (paper: 25 of 50)."""
    return step < int(noise_injection_ratio * num_steps)


def sample_euler_with_reinjection(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    noise_injection_steps: int = 5,
    noise_injection_ratio: float = 0.5,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Euler sampling over ``sigmas`` (last one 0) with the paper's noise re-injection.

    ``denoise(x, sigma)`` returns the (already fused) denoised video. On injection steps, after
    the update, noise takes the sample back to ``sigma`` and the step is redone,
    ``noise_injection_steps`` times. ``callback(step, sigma, x)`` runs after each step and may
    return a replacement for ``x``.
    """
    num_steps = len(sigmas) - 1
    for i in range(num_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_next = euler_step(x, denoise(x, sigma), sigma, sigma_next)
        if is_injection_step(i, num_steps, noise_injection_ratio):
            for _ in range(noise_injection_steps):
                x_back = reinject_noise(x_next, sigma_next, sigma, generator)
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
    """``w * fwd + (1 - w) * flip_time(bwd)``; ``denoised_bwd`` is in the backward branch's (reversed) frame order."""
    w = weights.view(1, -1, *([1] * (denoised_fwd.ndim - 2)))
    return w * denoised_fwd + (1 - w) * denoised_bwd.flip(1)
