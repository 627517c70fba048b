"""Frame metrics (PSNR, SSIM) and the Frechet distance behind FID/FVD, with torch and numpy only.

Feature extractors (Inception for FID, I3D for FVD) are not here: `FrechetDistance` takes their (B, D) features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

try:  # scipy is optional: without it the trace of the matrix square root comes from an eigen-decomposition.
    from scipy import linalg as _scipy_linalg
except ImportError:  # pragma: no cover - exercised by monkeypatching `_scipy_linalg` in the tests
    _scipy_linalg = None

# Wang et al. 2004, "Image quality assessment: from error visibility to structural similarity", §III-C.
_SSIM_SIGMA = 1.5
_SSIM_WIN = 11  # skimage: 2 * int(truncate * sigma + 0.5) + 1 with truncate=3.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def _check_frames(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(
            f"`pred` and `target` must both be (N, C, H, W) with equal shapes, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}; stack frames along dim 0."
        )


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, one value per frame.

    Args:
        pred, target: (N, C, H, W) float frames in [0, data_range].
        data_range: peak value (1.0 for [0, 1] frames, 255 for uint8-scaled ones).

    Returns:
        (N,) float tensor, 10 * log10(data_range**2 / MSE). Identical frames give `inf` (no cap), so average
        finite values or report the count of exact matches separately.
    """
    _check_frames(pred, target)
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(dim=1)  # (N,)
    return (10.0 * torch.log10(data_range**2 / mse)).to(torch.promote_types(pred.dtype, torch.float32))


def _gaussian_window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(_SSIM_WIN, device=device, dtype=dtype) - (_SSIM_WIN - 1) / 2
    g = torch.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
    return g / g.sum()  # (11,)


def _blur_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur without padding: (N, C, H, W) -> (N, C, H - 10, W - 10)."""
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004), one value per frame, averaged over channels.

    Matches skimage's `structural_similarity(pred, target, data_range=data_range, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=...)`: an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
    population (not sample) covariances, and the SSIM map averaged over the *valid* region only. skimage filters
    with reflect padding and then crops (11 - 1) // 2 = 5 pixels per border, which is exactly the unpadded result.

    Args:
        pred, target: (N, C, H, W) float frames in [0, data_range], with H, W >= 11.
        data_range: peak value of the frames.

    Returns:
        (N,) float tensor in [-1, 1]; 1 for identical frames.
    """
    _check_frames(pred, target)
    if min(pred.shape[-2:]) < _SSIM_WIN:
        raise ValueError(f"`ssim` needs frames of at least {_SSIM_WIN}x{_SSIM_WIN}, got {tuple(pred.shape[-2:])}.")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    x, y = pred.to(dtype), target.to(dtype)
    g = _gaussian_window(x.device, dtype)
    mu_x, mu_y = _blur_valid(x, g), _blur_valid(y, g)  # (N, C, H', W')
    var_x = _blur_valid(x * x, g) - mu_x**2
    var_y = _blur_valid(y * y, g) - mu_y**2
    cov_xy = _blur_valid(x * y, g) - mu_x * mu_y
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    # Every channel has the same valid area, so the mean over (C, H', W') is the mean of the per-channel means.
    return ssim_map.flatten(1).mean(dim=1)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """tr(sqrtm(sigma1 @ sigma2)) for symmetric PSD (D, D) float64 matrices."""
    if _scipy_linalg is not None:
        covmean = _scipy_linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            # A singular product (e.g. fewer samples than dimensions) can break the Schur-based sqrtm; nudging both
            # covariances by eps * I keeps the result finite at an O(eps) bias, as the reference FID code does.
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = _scipy_linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if np.iscomplexobj(covmean):
            # Rounding makes tiny imaginary parts; large ones mean the covariances were not PSD.
            max_imag = np.max(np.abs(np.diagonal(covmean).imag))
            if max_imag > 1e-3:
                raise ValueError(
                    f"sqrtm(sigma1 @ sigma2) has imaginary part {max_imag:.3g}; are both covariances PSD?"
                )
            covmean = covmean.real
        return float(np.trace(covmean))
    # sigma1 @ sigma2 is similar to the symmetric PSD matrix sqrt(s1) @ s2 @ sqrt(s1), so the eigenvalues of its
    # square root are the square roots of that matrix's (clipped at 0 against rounding) eigenvalues.
    w, v = np.linalg.eigh(sigma1)
    sqrt_s1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    eig = np.linalg.eigvalsh(sqrt_s1 @ sigma2 @ sqrt_s1)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982; FID, Heusel et al. 2017).

    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 @ sigma2)).

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) symmetric PSD covariances.
        eps: diagonal offset used only if the matrix square root fails.

    Returns:
        The squared distance as a Python float (>= 0 up to rounding).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"expected `mu1`, `mu2` of shape (D,) and `sigma1`, `sigma2` of shape (D, D), got {mu1.shape}, "
            f"{mu2.shape}, {sigma1.shape}, {sigma2.shape}."
        )
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sigma1, sigma2, eps))


def _as_features(features: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"`features` must be (B, D), got shape {features.shape}; flatten per-sample features first.")
    return features


def gaussian_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (B, D) features, B >= 2, as float64 (rows are samples, unbiased)."""
    features = _as_features(features)
    if features.shape[0] < 2:
        raise ValueError(f"`features` needs at least 2 rows for a covariance, got {features.shape[0]}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


class _RunningGaussian:
    """Mean and scatter matrix merged chunk by chunk (Chan et al. 1979), so memory stays O(D^2) and no raw
    (E[xx^T] - mu mu^T) cancellation occurs."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.scatter: np.ndarray | None = None

    def update(self, features: np.ndarray | torch.Tensor) -> None:
        x = _as_features(features)  # (B, D)
        if self.mean is not None and x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"`features` must have D={self.mean.shape[0]} columns like earlier updates, got {x.shape[1]}."
            )
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(axis=0)
        centered = x - mean_b
        scatter_b = centered.T @ centered
        if self.mean is None:
            self.n, self.mean, self.scatter = n_b, mean_b, scatter_b
            return
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.scatter = self.scatter + scatter_b + np.outer(delta, delta) * (self.n * n_b / n)
        self.n = n

    def stats(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"`{name}` needs at least 2 samples before `compute()`, got {self.n}.")
        return self.mean, self.scatter / (self.n - 1)


class FrechetDistance:
    """Frechet distance between two feature sets fed in chunks (FID on Inception features, FVD on I3D features).

    Example:
        >>> fd = FrechetDistance()
        >>> fd.update_real(torch.randn(64, 8)); fd.update_fake(torch.randn(64, 8) + 1.0)
        >>> fd.compute() > 0
        True
    """

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = eps
        self.reset()

    def reset(self) -> None:
        """Forget all features seen so far."""
        self._real, self._fake = _RunningGaussian(), _RunningGaussian()

    def update_real(self, features: np.ndarray | torch.Tensor) -> None:
        """Add (B, D) features of reference samples."""
        self._real.update(features)

    def update_fake(self, features: np.ndarray | torch.Tensor) -> None:
        """Add (B, D) features of generated samples."""
        self._fake.update(features)

    def compute(self) -> float:
        """Frechet distance between the Gaussians fitted to all real and all fake features so far."""
        mu1, sigma1 = self._real.stats("update_real")
        mu2, sigma2 = self._fake.stats("update_fake")
        return frechet_distance(mu1, sigma1, mu2, sigma2, eps=self.eps)


def frechet_distance_of_features(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to (N1, D) `real` and (N2, D) `fake` features, N1, N2 >= 2.

    Equals `frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))`. With few samples (N1 + N2 <= D,
    e.g. FID over a few hundred frames) both covariances have rank < D, and the (D, D) matrix square root is slow
    (O(D^3): a minute for D = 2048 on one core) and ill-conditioned. Then the trace term is computed exactly from
    the small cross product instead: with S1 = A^T A and S2 = B^T B (A, B the centred features over sqrt(N - 1)),
    the non-zero eigenvalues of S1 S2 are those of (A B^T)(A B^T)^T, so tr(sqrtm(S1 S2)) = sum of the singular
    values of the (N1, N2) matrix A B^T.
    """
    x, y = _as_features(real), _as_features(fake)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"`real` and `fake` must have the same feature size, got {x.shape[1]} and {y.shape[1]}.")
    if min(len(x), len(y)) < 2:
        raise ValueError(f"`real` and `fake` need at least 2 rows each, got {len(x)} and {len(y)}.")
    if len(x) + len(y) > x.shape[1]:
        return frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
    a = (x - x.mean(axis=0)) / np.sqrt(len(x) - 1)  # (N1, D)
    b = (y - y.mean(axis=0)) / np.sqrt(len(y) - 1)  # (N2, D)
    diff = x.mean(axis=0) - y.mean(axis=0)
    trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * trace_sqrt)
