"""VideoMAE features for the content-debiased FVD (Ge et al., CVPR 2024, "On the Content Bias in FVD").

Ge et al. replace I3D's supervised Kinetics logits with features of a self-supervised video transformer,
VideoMAE-v2 ViT-g/14 (cd-fvd's released code loads `vit_g_hybrid_pt_1200e_ssv2_ft.pth`: masked-autoencoder
pre-training on UnlabeledHybrid, then fine-tuned on Something-Something-v2; the feature is the 1408-d LayerNorm'd mean
of the encoder tokens). That model has no `transformers` port, so this module uses `transformers.VideoMAEModel`
with the self-supervised VideoMAE ViT-B/16 checkpoint `MCG-NJU/videomae-base` (Tong et al. 2022: masked-autoencoder
pre-training on Kinetics-400 for 1600 epochs, no labels, no fine-tuning). The feature is the mean over all
8 x 14 x 14 tokens of the last hidden state (768-d, after the encoder's final LayerNorm when the config has one).
Numbers are therefore *not* comparable with the paper's or cd-fvd's; see docs/metrics.md.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn
from transformers import VideoMAEConfig, VideoMAEModel

from .preprocess import check_videos, resize_videos
from .weights import MissingWeightsError, frozen, hub_file, load_weight_file

VIDEOMAE_MODEL = "MCG-NJU/videomae-base"
_NETWORK = "VideoMAE (content-debiased FVD)"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# ImageNet statistics, as in VideoMAEImageProcessor's defaults (the model was pre-trained on inputs normalised so).
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class VideoMAEFeatures(nn.Module):
    """Mean-pooled VideoMAE encoder features; `features` takes (B, 3, T, H, W) videos in [-1, 1]."""

    def __init__(self, model: VideoMAEModel) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 1, 3, 1, 1), persistent=False)

    @property
    def num_frames(self) -> int:
        return self.model.config.num_frames

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Content-debiased FVD features of videos.

        Args:
            x: (B, 3, T, H, W) float RGB videos in [-1, 1] with T == config.num_frames (16 for the default
                checkpoint; its position embeddings are fixed to that length). Each frame is resized bilinearly
                to config.image_size (224).

        Returns:
            (B, hidden_size) features (768 for the default checkpoint).
        """
        check_videos(x)
        if x.shape[2] != self.num_frames:
            raise ValueError(
                f"`x` must have exactly {self.num_frames} frames (dim 2), got {x.shape[2]}; sample clips that long."
            )
        x = resize_videos(x.to(self.mean.dtype), self.model.config.image_size)
        x = x.permute(0, 2, 1, 3, 4)  # (B, T, 3, H, W), the layout VideoMAEModel expects
        x = ((x + 1) / 2 - self.mean) / self.std
        hidden = self.model(pixel_values=x.to(self.model.dtype)).last_hidden_state  # (B, tokens, hidden)
        return hidden.mean(dim=1)


# The Hub checkpoints (and transformers 4.x) store the query/value biases as `q_bias`/`v_bias`; transformers 5
# renames them on load to `query.bias`/`value.bias`. Either spelling is mapped to the one the model has.
_BIAS_SPELLINGS = ((".attention.attention.q_bias", ".attention.attention.query.bias"),
                   (".attention.attention.v_bias", ".attention.attention.value.bias"))  # fmt: skip


def _respell(key: str, target_keys: Collection[str]) -> str:
    for legacy, current in _BIAS_SPELLINGS:
        for src, dst in ((legacy, current), (current, legacy)):
            if key.endswith(src) and key.removesuffix(src) + dst in target_keys:
                return key.removesuffix(src) + dst
    return key


def convert_videomae_state_dict(
    state_dict: dict[str, torch.Tensor], target_keys: Collection[str]
) -> dict[str, torch.Tensor]:
    """Encoder weights of a VideoMAE checkpoint under the key names of a `VideoMAEModel` with ``target_keys``.

    Checkpoints of ``VideoMAEForPreTraining`` / ``VideoMAEForVideoClassification`` prefix the encoder with
    ``videomae.`` and add a decoder or classifier, which are dropped; a bare ``VideoMAEModel`` keeps all keys.
    """
    if any(k.startswith("videomae.") for k in state_dict):
        state_dict = {k.removeprefix("videomae."): v for k, v in state_dict.items() if k.startswith("videomae.")}
    return {_respell(k, target_keys): v for k, v in state_dict.items()}


def _weight_file_in(folder: Path) -> Path:
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise MissingWeightsError(
        f"{_NETWORK} weights not found: `{folder}` has none of {', '.join(_WEIGHT_FILES)}; "
        f"fill it with `hf download {VIDEOMAE_MODEL} --include config.json '*.safetensors' '*.bin' "
        f"--local-dir {folder}`."
    )


def _resolve(weights: str | os.PathLike, config: VideoMAEConfig | None) -> tuple[VideoMAEConfig, Path]:
    """(config, weight file) for a local folder, a local file (config given or default) or a Hub id."""
    path = Path(weights).expanduser()
    if path.is_dir():
        return config or VideoMAEConfig.from_pretrained(path), _weight_file_in(path)
    if path.suffix in (".safetensors", ".bin", ".pth", ".pt"):
        return config or VideoMAEConfig(), path
    # A Hub id is exactly "owner/name"; anything else was meant as a local path.
    if path.is_absolute() or str(weights).startswith((".", "~")) or str(weights).count("/") != 1:
        raise MissingWeightsError(
            f"{_NETWORK} weights `{weights}` not found; pass a folder, a weight file or a Hub id."
        )
    if config is None:
        config = VideoMAEConfig.from_json_file(hub_file(_NETWORK, str(weights), ("config.json",)))
    return config, hub_file(_NETWORK, str(weights), _WEIGHT_FILES)


def load_videomae(
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    pretrained: bool = True,
    config: VideoMAEConfig | None = None,
) -> VideoMAEFeatures:
    """VideoMAE feature network in eval mode without gradients.

    Args:
        weights: a Hub id (default `VIDEOMAE_MODEL`), a local folder with ``config.json`` and ``model.safetensors``
            or ``pytorch_model.bin``, or a single weight file (then ``config`` or the default ViT-B config applies).
            Pickles are converted once to safetensors in the inbetween cache.
        device: where to put the network.
        pretrained: False gives random weights from ``config`` (default `VideoMAEConfig()`); tests use tiny configs.
        config: architecture override; required for a bare weight file of a non-default architecture.

    Raises:
        MissingWeightsError: offline and the checkpoint is neither local nor in the Hugging Face cache.
    """
    if not pretrained:
        return frozen(VideoMAEFeatures(VideoMAEModel(config or VideoMAEConfig())), None, device)
    config, weight_file = _resolve(weights or VIDEOMAE_MODEL, config)
    model = VideoMAEModel(config)
    state = convert_videomae_state_dict(load_weight_file(weight_file, _NETWORK), model.state_dict().keys())
    model.load_state_dict(state, strict=True)
    return frozen(VideoMAEFeatures(model), None, device)
