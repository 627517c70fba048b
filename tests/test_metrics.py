import numpy as np
import pytest
import torch
from scipy import linalg, ndimage

from inbetween.evaluation import metrics
from inbetween.evaluation.metrics import FrechetDistance, frechet_distance, gaussian_stats, psnr, ssim


def _frames(seed: int, n: int = 2, size: int = 24) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _noisy(x: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    return (x + std * noise).clamp(0, 1)


def _ssim_skimage_style(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """skimage's algorithm for one (C, H, W) frame: reflect-padded Gaussian filter, crop 5 px, average channels."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    per_channel = []
    for a, b in zip(x, y, strict=True):

        def blur(img):
            return ndimage.gaussian_filter(img, sigma=1.5, truncate=3.5, mode="reflect")

        ux, uy = blur(a), blur(b)
        vx, vy, vxy = blur(a * a) - ux * ux, blur(b * b) - uy * uy, blur(a * b) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        per_channel.append(s[5:-5, 5:-5].mean())
    return float(np.mean(per_channel))


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _fd_direct(mu1, s1, mu2, s2) -> float:
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_psnr_identical_is_inf():
    x = _frames(0)
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()


def test_psnr_known_mse_per_frame():
    target = torch.full((2, 3, 8, 8), 0.5)
    pred = target.clone()
    pred[0] += 0.1  # MSE 0.01 -> 20 dB
    pred[1] += 0.01  # MSE 1e-4 -> 40 dB
    out = psnr(pred, target)
    assert out.shape == (2,)
    torch.testing.assert_close(out, torch.tensor([20.0, 40.0]), atol=1e-4, rtol=0)
    # data_range scales the peak: 255-scaled frames give the same dB.
    torch.testing.assert_close(psnr(pred * 255, target * 255, data_range=255.0), out, atol=1e-4, rtol=0)


def test_ssim_identical_is_one():
    x = _frames(1)
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64), atol=1e-10, rtol=0)


def test_ssim_decreases_with_noise():
    x = _frames(2, n=1, size=32)
    values = [ssim(_noisy(x, std), x).item() for std in (0.0, 0.05, 0.1, 0.2, 0.4)]
    assert all(a > b for a, b in zip(values[:-1], values[1:], strict=True)), values


def test_ssim_matches_skimage_algorithm_with_scipy():
    x, y = _frames(3, size=30), _noisy(_frames(3, size=30), 0.1)
    y[1] = _frames(4, n=1, size=30)[0]  # one unrelated frame: per-frame values must differ
    out = ssim(x, y)
    expected = [_ssim_skimage_style(x[i].numpy(), y[i].numpy()) for i in range(2)]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


def test_ssim_matches_skimage():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    x, y = _frames(5, n=1, size=40), _noisy(_frames(5, n=1, size=40), 0.1)
    expected = skimage_metrics.structural_similarity(
        x[0].numpy(), y[0].numpy(), data_range=1.0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, channel_axis=0,
    )  # fmt: skip
    assert abs(ssim(x.float(), y.float()).item() - expected) < 1e-3


def test_frame_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="`pred` and `target`"):
        psnr(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 8))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


@pytest.fixture(params=["scipy", "eigh"])
def sqrt_backend(request, monkeypatch):
    if request.param == "eigh":
        monkeypatch.setattr(metrics, "_scipy_linalg", None)
    return request.param


def test_frechet_distance_diagonal_closed_form(sqrt_backend):
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    s1, s2 = rng.uniform(0.1, 2.0, 6), rng.uniform(0.1, 2.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_full_covariance_matches_scipy(sqrt_backend):
    rng = np.random.default_rng(1)
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_fd_direct(mu1, s1, mu2, s2), rel=1e-6)


def test_frechet_distance_rank_deficient_is_finite(sqrt_backend):
    rng = np.random.default_rng(2)
    mu, sigma = gaussian_stats(rng.standard_normal((4, 10)))  # 4 samples in 10 dims: rank 3
    mu2, sigma2 = gaussian_stats(rng.standard_normal((4, 10)))
    value = frechet_distance(mu, sigma, mu2, sigma2)
    assert np.isfinite(value) and value > 0


def test_frechet_distance_self_zero_and_grows_with_noise(sqrt_backend):
    rng = np.random.default_rng(3)
    real = rng.standard_normal((500, 16)) @ rng.standard_normal((16, 16))
    stats = gaussian_stats(real)
    assert abs(frechet_distance(*stats, *stats)) < 1e-6
    values = [
        frechet_distance(*stats, *gaussian_stats(real + std * rng.standard_normal(real.shape)))
        for std in (0.1, 0.5, 1.0)
    ]
    assert values[0] > 1e-6 and values[0] < values[1] < values[2], values


def test_gaussian_stats_float64_rowvar_false():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(4))
    mu, sigma = gaussian_stats(x)
    x64 = x.double().numpy()
    centered = x64 - x64.mean(axis=0)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64 and sigma.shape == (4, 4)
    np.testing.assert_allclose(mu, x64.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, centered.T @ centered / 49, rtol=1e-12)


def test_frechet_distance_accumulator_chunks_equal_all_at_once():
    rng = np.random.default_rng(5)
    real = rng.standard_normal((103, 8)) * 3.0 + 10.0  # large mean: catches naive E[xx^T] - mu mu^T cancellation
    fake = rng.standard_normal((77, 8)) @ rng.standard_normal((8, 8)) + 9.0
    fd = FrechetDistance()
    for chunk in np.array_split(real, [1, 30, 31, 90]):
        fd.update_real(torch.from_numpy(chunk))
    for chunk in np.array_split(fake, [40]):
        fd.update_fake(chunk)
    expected = frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))
    assert fd.compute() == pytest.approx(expected, rel=1e-9)
    fd.reset()
    with pytest.raises(ValueError, match="update_real"):
        fd.compute()
