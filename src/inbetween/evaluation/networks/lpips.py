"""LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features").

d(x, y) = sum_l mean_{h,w} w_l . (n_l(x) - n_l(y))^2, where n_l is the channel-unit-normalised output of AlexNet's
l-th ReLU (l = 1..5) and w_l >= 0 are the learned 1x1 "linear" weights of the lpips package's v0.1 release.

Weights come from two files, mapped to this module's names by `convert_torchvision_alexnet` and
`convert_lpips_linear`: the backbone is torchvision's AlexNet (`features.{0,3,6,8,10}.{weight,bias}`, plus
`classifier.*` which LPIPS does not use) and the linear layers are lpips' `weights/v0.1/alex.pth`
(`lin{0..4}.model.1.weight`, a Dropout at index 0 and the bias-free 1x1 conv at index 1).
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from .preprocess import check_images
from .weights import WeightSource, frozen, load_weights

ALEXNET = WeightSource(
    network="LPIPS AlexNet backbone (torchvision)",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    hash_prefix="7be5be79",  # torchvision names its files by the SHA-256 prefix and checks it on download
    argument="backbone_weights",
)
LPIPS_ALEX_LINEAR = WeightSource(
    network="LPIPS v0.1 linear layers (alex)",
    url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
    argument="linear_weights",
)
CHANNELS = (64, 192, 384, 256, 256)  # outputs of AlexNet's relu1..relu5
# Indices in torchvision's AlexNet `features` after which relu1..relu5 are tapped.
_TAPS = (1, 4, 7, 9, 11)
# lpips' ScalingLayer: maps [-1, 1] inputs to the statistics of torchvision's ImageNet normalisation.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10  # lpips' normalize_tensor epsilon


def _alexnet_features() -> nn.Sequential:
    """AlexNet's convolutional part with torchvision's layer indices (0, 3, 6, 8, 10 are the convolutions)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
    )  # torchvision's final MaxPool (index 12) is never reached by LPIPS and has no weights


def _unit_normalise(x: torch.Tensor) -> torch.Tensor:
    """Divide each spatial position's channel vector by its L2 norm: (B, C, H, W) -> (B, C, H, W)."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS)


class LPIPS(nn.Module):
    """LPIPS distance; call as ``lpips(x, y)``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS)
        # Random lins start non-negative like trained v0.1 weights, so even a random LPIPS is a (pseudo-)distance.
        for lin in self.lins:
            nn.init.uniform_(lin.weight, 0.0, 1.0 / lin.in_channels)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised relu1..relu5 activations of prepared input: (B, 3, H, W) -> 5 x (B, C_l, H_l, W_l)."""
        x = (x - self.shift) / self.scale
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _TAPS:
                taps.append(_unit_normalise(x))
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image pair.

        Args:
            x, y: (B, 3, H, W) float RGB images in [-1, 1], H, W >= 32 (no resizing: LPIPS compares at the
                input resolution).

        Returns:
            (B,) distances, >= 0 and 0 for identical images.
        """
        check_images(x, "x")
        check_images(y, "y")
        if x.shape != y.shape:
            raise ValueError(f"`x` and `y` must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}.")
        dtype = self.lins[0].weight.dtype
        # One pass over the stacked pair halves the Python overhead and keeps x and y on identical kernels.
        taps = self.activations(torch.cat([x, y]).to(dtype))
        total = 0.0
        for lin, tap in zip(self.lins, taps, strict=True):
            fx, fy = tap.chunk(2)
            total = total + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))  # spatial average of the weighted map
        return total


def convert_torchvision_alexnet(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision AlexNet keys -> `LPIPS` keys: keep ``features.*``, drop the unused ``classifier.*``."""
    return {k: v for k, v in state_dict.items() if k.startswith("features.")}


def convert_lpips_linear(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lpips ``alex.pth`` keys (``lin{i}.model.1.weight``, also ``lins.{i}.model.1.weight``) -> ``lins.{i}.weight``."""
    converted = {}
    for key, value in state_dict.items():
        match = re.fullmatch(r"lins?\.?(\d)\.model\.1\.weight", key)
        if match is None:
            raise ValueError(f"unexpected key `{key}` in the LPIPS linear weights; expected `lin<i>.model.1.weight`.")
        converted[f"lins.{match.group(1)}.weight"] = value
    return converted


def load_lpips(
    backbone_weights: str | os.PathLike | None = None,
    linear_weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    pretrained: bool = True,
) -> LPIPS:
    """LPIPS v0.1 (alex) in eval mode without gradients.

    Args:
        backbone_weights: local torchvision AlexNet file; None resolves `ALEXNET` (cache or download).
        linear_weights: local lpips v0.1 ``alex.pth``; None resolves `LPIPS_ALEX_LINEAR`.
        device: where to put the network.
        pretrained: False gives random weights (tests) and ignores the weight arguments.

    Raises:
        MissingWeightsError: offline and a weight file is not cached.
    """
    state = None
    if pretrained:
        state = convert_torchvision_alexnet(load_weights(ALEXNET, backbone_weights))
        state.update(convert_lpips_linear(load_weights(LPIPS_ALEX_LINEAR, linear_weights)))
    return frozen(LPIPS(), state, device)
