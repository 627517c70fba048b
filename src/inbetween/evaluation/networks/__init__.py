"""Feature networks of the evaluation harness (FID Inception, FVD I3D, VideoMAE, LPIPS) and their weights.

Every network is an `nn.Module` built by ``load_<name>(weights=None, device="cpu", pretrained=True)``, in eval mode
with gradients off, that does its own resizing and normalisation:

* `FIDInceptionV3.features(images) -> (B, 2048)`, images (B, 3, H, W) in [-1, 1];
* `I3D.features(videos) -> (B, 400)`, videos (B, 3, T >= 9, H, W) in [-1, 1];
* `VideoMAEFeatures.features(videos) -> (B, 768)`, videos (B, 3, 16, H, W) in [-1, 1];
* `LPIPS(x, y) -> (B,)`, images (B, 3, H, W) in [-1, 1].

Feed the features to `inbetween.evaluation.metrics.FrechetDistance` for FID/FVD. See docs/metrics.md for every detail.
"""

from .i3d import I3D, load_i3d
from .inception import FIDInceptionV3, load_inception
from .lpips import LPIPS, load_lpips
from .videomae import VideoMAEFeatures, load_videomae
from .weights import MissingWeightsError, WeightSource, cache_dir, load_weights

__all__ = [
    "FIDInceptionV3",
    "I3D",
    "LPIPS",
    "MissingWeightsError",
    "VideoMAEFeatures",
    "WeightSource",
    "cache_dir",
    "load_i3d",
    "load_inception",
    "load_lpips",
    "load_videomae",
    "load_weights",
]
