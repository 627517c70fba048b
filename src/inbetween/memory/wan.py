"""Peak GPU memory of a Wan call, from its configs, before anything is allocated (the Wan family's memory walk).

Where the bytes go (inference; diffusers' Wan blocks, ``transformer_wan.py``):

- **weights** on the device: all components without offload (both experts of Wan 2.2 A14B); with model CPU offload
  the largest component while it runs; with group offload two transformer blocks (a margin for the block being
  brought in) and the transformer's non-block layers;
- **transformer activations** of one call of ``R`` rows over ``L = T' x H/16 x W/16`` tokens (for patch (1, 2, 2)):
  the residual stream, its norm, Q, K, V, the rotated Q and K and the attention output in the model's dtype, and the
  block's float32 norm and residual temporaries; or, in the feed-forward, its two ``ffn_dim``-wide tensors. Fused
  attention (CUDA) keeps no ``L x L`` map; the math kernel (MPS, CPU) does, one per head;
- **VAE decode** one latent frame at a time (four pixel frames, a causal cache of two) at the widest full-resolution
  stage, and the decoded video in float32.

The weights are counted as loaded (a pipeline's call), or from the configs on the meta device (bench/wan_memory.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from .check import MARGIN
from .estimate import format_bytes

OFFLOADS = ("none", "model", "group")
MODEL_COPIES = 9  # residual, norm, q, k, v, rotated q and k, attention output, projected output (model dtype)
FLOAT32_COPIES = 2  # the block's float32 norm input and residual update
DECODE_COPIES = 8  # a resblock's input, output, two cached frames and the upsampler's, at full resolution


@dataclass(frozen=True)
class WanShape:
    """What the estimate needs of a Wan call: the transformer's widths, the weights by component (bytes), the call's
    rows and tokens."""

    dim: int  # heads x head width
    ffn_dim: int
    heads: int
    weights: dict[str, int]  # component -> bytes in its dtype ("transformer", "transformer_2", "text_encoder", ...)
    block_bytes: int  # one transformer block's weights
    non_block_bytes: int  # the transformer's layers outside its blocks (embeddings, the output head)
    rows: int  # transformer rows in one call (the sampler's largest request, per call)
    frames: int  # pixel frames
    height: int
    width: int
    dtype_bytes: int = 2
    vae_channels: int = 96  # the VAE decoder's widest full-resolution stage
    temporal: int = 4
    spatial: int = 8
    patch: tuple[int, int, int] = (1, 2, 2)
    offload: str = "none"
    attention_maps: bool = False  # the math SDPA kernel keeps L x L maps (MPS, CPU)

    @property
    def tokens(self) -> int:
        latent_frames = (self.frames - 1) // self.temporal + 1
        t, h, w = self.patch
        return (latent_frames // t) * (self.height // self.spatial // h) * (self.width // self.spatial // w)

    def estimate(self) -> WanEstimate:
        per_token = (
            max(
                MODEL_COPIES * self.dim * self.dtype_bytes,
                (2 * self.ffn_dim + 3 * self.dim) * self.dtype_bytes,
            )
            + FLOAT32_COPIES * self.dim * 4
        )
        transformer = self.rows * self.tokens * per_token
        if self.attention_maps:
            transformer += self.rows * self.heads * self.tokens**2 * self.dtype_bytes
        pixels = self.height * self.width
        decode = DECODE_COPIES * self.vae_channels * self.temporal * pixels * self.dtype_bytes
        decode += 3 * self.frames * pixels * 4  # the decoded video, float32
        weights = self.resident_weights()
        return WanEstimate(
            peak_bytes=weights + max(transformer, decode),
            weight_bytes=weights,
            transformer_bytes=transformer,
            decode_bytes=decode,
            rows=self.rows,
            tokens=self.tokens,
            shape=self,
        )

    def resident_weights(self) -> int:
        if self.offload == "none":
            return sum(self.weights.values())
        if self.offload == "model":
            return max(self.weights.values())
        return 2 * self.block_bytes + self.non_block_bytes


@dataclass(frozen=True)
class WanEstimate:
    peak_bytes: int
    weight_bytes: int
    transformer_bytes: int
    decode_bytes: int
    rows: int
    tokens: int
    shape: WanShape

    def describe(self) -> str:
        return (
            f"about {format_bytes(self.peak_bytes)} (weights {format_bytes(self.weight_bytes)} with offload "
            f"{self.shape.offload}; transformer activations {format_bytes(self.transformer_bytes)} for {self.rows} "
            f"rows x {self.tokens} tokens; VAE decode {format_bytes(self.decode_bytes)})"
        )


def module_bytes(module) -> int:
    """Bytes of a module's weights as they are loaded."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def check_wan_call(shape: WanShape, device, allow_oversize: bool) -> WanEstimate:
    """Refuse a call whose estimate is above the free memory of ``device`` with one line naming the estimate and
    what lowers it; return the estimate otherwise."""
    from .available import available_memory

    estimate = shape.estimate()
    available = None if allow_oversize else available_memory(device)
    if available is None or estimate.peak_bytes <= MARGIN * available:
        return estimate
    remedies = []
    if shape.rows > 2:
        remedies.append("`split_guidance_batch` (half the rows per call)")
    if shape.offload != "group":
        remedies.append("`group_offload`" if shape.offload == "model" else "`cpu_offload` or `group_offload`")
    remedies.append("fewer `num_frames` or a smaller size")
    raise ValueError(
        f"this call needs {estimate.describe()}, but {format_bytes(available)} are free on {device}; try "
        + ", ".join(remedies)
        + " (or `allow_oversize` to run anyway)"
    )
