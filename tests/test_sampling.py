import pytest
import torch
from diffusers import EulerDiscreteScheduler
from reference import sample_euler_with_reinjection
from tiny import SVD_SCHEDULER_CONFIG

from inbetween.sampling import (
    apply_guidance,
    edm_scalings,
    euler_step,
    fuse,
    fusion_weights,
    gaussian_noise,
    guidance_scales,
    is_injection_step,
    reinject_noise,
)


def fake_v_model(x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
    """A smooth stand-in for the UNet's v-prediction."""
    return torch.sin(x) * 0.3 + c_noise.cos()


def test_euler_edm_matches_diffusers_scheduler():
    scheduler = EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(12)
    x0 = torch.randn(1, 3, 4, 5, 5, generator=torch.Generator().manual_seed(0))

    x_ref = x0 * scheduler.sigmas[0]
    for t in scheduler.timesteps:
        v = fake_v_model(scheduler.scale_model_input(x_ref, t), t)
        x_ref = scheduler.step(v, t, x_ref).prev_sample

    def denoise(x, sigma):
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma)
        return c_skip * x + c_out * fake_v_model(x * c_in, c_noise)

    ours = sample_euler_with_reinjection(
        denoise, x0 * scheduler.sigmas[0], scheduler.sigmas.float(), noise_injection_steps=0
    )
    torch.testing.assert_close(ours, x_ref, rtol=1e-4, atol=1e-4)


def test_euler_step_closed_form():
    # A denoiser that always returns 0: x shrinks by sigma_next / sigma exactly.
    x = torch.randn(10)
    out = euler_step(x, torch.zeros_like(x), torch.tensor(4.0), torch.tensor(1.0))
    torch.testing.assert_close(out, x / 4)


def test_reinject_noise_has_the_right_std_and_is_seeded():
    x = torch.zeros(200_000)
    sigma_from, sigma_to = torch.tensor(3.0), torch.tensor(5.0)
    out = reinject_noise(x, sigma_from, sigma_to, gaussian_noise(torch.Generator().manual_seed(0)))
    assert abs(out.std().item() - 4.0) < 0.04  # sqrt(25 - 9)
    again = reinject_noise(x, sigma_from, sigma_to, gaussian_noise(torch.Generator().manual_seed(0)))
    other = reinject_noise(x, sigma_from, sigma_to, gaussian_noise(torch.Generator().manual_seed(1)))
    assert torch.equal(out, again)
    assert not torch.equal(out, other)


def test_injection_happens_on_the_first_ratio_of_steps():
    assert sum(is_injection_step(i, 50, 0.5) for i in range(50)) == 25
    assert not any(is_injection_step(i, 50, 0.0) for i in range(50))
    assert all(is_injection_step(i, 50, 1.0) for i in range(50))


def test_sampler_redoes_each_injection_step():
    calls = []

    def denoise(x, sigma):
        calls.append(sigma.item())
        return torch.zeros_like(x)

    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0])
    sample_euler_with_reinjection(
        denoise,
        torch.ones(3),
        sigmas,
        noise=gaussian_noise(torch.Generator().manual_seed(0)),
        noise_injection_steps=3,
        noise_injection_ratio=0.5,
    )
    # Steps 0 and 1 are injection steps: 1 + 3 evaluations each at their sigma; then 1 each.
    assert calls == [8.0] * 4 + [4.0] * 4 + [2.0, 1.0]


def test_sampler_callback_can_replace_the_sample():
    sigmas = torch.tensor([2.0, 1.0, 0.0])
    seen = []

    def callback(step, sigma, x):
        seen.append(step)
        return torch.full_like(x, 7.0)

    out = sample_euler_with_reinjection(
        lambda x, s: x, torch.ones(2), sigmas, noise_injection_steps=0, callback=callback
    )
    assert seen == [0, 1]
    assert torch.equal(out, torch.full((2,), 7.0))


def test_guidance_scales_are_symmetrised_for_average_fusion():
    g = guidance_scales(1.0, 3.0, 5, "average")
    torch.testing.assert_close(g, torch.full((5,), 2.0))
    torch.testing.assert_close(guidance_scales(1.0, 3.0, 5, "linear"), torch.linspace(1, 3, 5))


def test_apply_guidance_per_frame():
    uncond, cond = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
    out = apply_guidance(uncond, cond, torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(out[0, :, 0], torch.tensor([1.0, 2.0, 3.0]))


def test_fusion_weights_and_fuse():
    assert torch.equal(fusion_weights("average", 4), torch.full((4,), 0.5))
    torch.testing.assert_close(fusion_weights("linear", 3), torch.tensor([1.0, 0.5, 0.0]))
    with pytest.raises(ValueError, match="fusion"):
        fusion_weights("max", 3)
    fwd = torch.arange(3.0).view(1, 3, 1)
    bwd = torch.tensor([30.0, 20.0, 10.0]).view(1, 3, 1)  # mapped back to forward time
    out = fuse(fwd, bwd, torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 0.5 * 1 + 0.5 * 20, 10.0]))
