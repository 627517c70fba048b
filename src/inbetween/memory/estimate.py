"""A pipeline call's shape (:class:`CallShape`: everything its peak memory depends on) and its peak estimated stage
by stage (:func:`estimate_call_memory`, :class:`MemoryEstimate`), allocating nothing."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .walks import FIXED_BYTES, _decoder_walk, _encoder_walk, _Memory, _unet_walk

# Latent-sized tensors of the denoise stage, in units of the latents (B, N, C, h, w) in float32: the sampler's
# x / x_next / noise / d (6), the time-reversed copy (1), the guided and fused outputs (9), each group's denoised
# prediction (rows_per_pair), and per UNet row of a call its stacked input, scaled input, 2C-channel model input,
# output and its float32 copy (6).
LATENT_FIXED, LATENT_PER_ROW, LATENT_PER_CALL_ROW = 16, 1, 6
PIXEL_COPIES = 6  # keyframe pixels (2B, 3, H, W) float32: first, last, their concatenation, noise, scaled, sum
OUTPUT_COPIES = 3  # decoded frames (B, N, 3, H, W) float32: the chunks, their concatenation / stack, postprocessing


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one pipeline call, by stage, and the shapes behind them (for the message).

    ``peak_bytes`` is the call's peak above what was resident before it: the largest stage, the heap's fragments
    where counted, a first call's fixed overhead and ``weight_bytes``.
    """

    peak_bytes: int
    unet_bytes: int  # UNet activations of one call (the largest of the layout's calls)
    decode_bytes: int  # VAE decoder activations on one chunk plus the decoded frames (0 for latent output)
    latent_bytes: int  # latents, conditioning and the denoiser's latent-sized temporaries
    encode_bytes: int = 0  # keyframe pixels and the VAE encoder's activations
    heap_bytes: int = 0  # glibc heap fragments on top of the live tensors (cpu_heap)
    weight_bytes: int = 0  # model weights, only where the caller counts them
    rows: int = 0  # UNet rows of one call (batch size times rows per pair, over the calls)
    num_frames: int = 0
    latent_height: int = 0
    latent_width: int = 0
    height: int = 0
    width: int = 0
    decode_chunk_size: int = 0
    calls: int = 1
    guided: bool = True  # whether split_guidance_batch would split the UNet call

    def describe(self) -> str:
        """``about 812.4 GB (UNet activations 790.1 GB for 4 rows x 25 frames at 12500x12500 latents, ...)``."""
        calls = f" in each of {self.calls} calls" if self.calls > 1 else ""
        parts = [
            f"UNet activations {format_bytes(self.unet_bytes)} for {self.rows} rows x {self.num_frames} frames at "
            f"{self.latent_width}x{self.latent_height} latents{calls}",
            f"latents {format_bytes(self.latent_bytes)}",
        ]
        if self.decode_bytes:
            parts.append(
                f"decode {format_bytes(self.decode_bytes)} for {self.decode_chunk_size} frames at a time at "
                f"{self.width}x{self.height}"
            )
        if self.encode_bytes:
            parts.append(f"keyframe encode {format_bytes(self.encode_bytes)}")
        if self.heap_bytes > 0.05 * self.peak_bytes:
            parts.append(f"heap fragments {format_bytes(self.heap_bytes)}")
        if self.weight_bytes:
            parts.append(f"weights {format_bytes(self.weight_bytes)}")
        return f"about {format_bytes(self.peak_bytes)} ({', '.join(parts)})"


@dataclass(frozen=True)
class CallShape:
    """The arguments of :func:`estimate_call_memory` for one call, as one value (the size bisection varies its
    ``height`` and ``width`` through :func:`dataclasses.replace`)."""

    unet_config: Mapping[str, Any]
    vae_config: Mapping[str, Any]
    batch_size: int
    num_frames: int
    height: int
    width: int
    rows_per_pair: int
    calls: int
    decode_chunk_size: int | None
    dtype_bytes: int
    vae_dtype_bytes: int | None = None
    decode: bool = True
    encode: bool = True
    weight_bytes: int = 0
    attention_matrices: bool = False
    cpu_heap: bool = False
    guided: bool = True

    def estimate(self) -> MemoryEstimate:
        """:func:`estimate_call_memory` of this shape."""
        return estimate_call_memory(**{field.name: getattr(self, field.name) for field in dataclasses.fields(self)})


def estimate_call_memory(
    unet_config: Mapping[str, Any],
    vae_config: Mapping[str, Any],
    batch_size: int,
    num_frames: int,
    height: int,
    width: int,
    rows_per_pair: int,
    calls: int,
    decode_chunk_size: int | None,
    dtype_bytes: int,
    *,
    vae_dtype_bytes: int | None = None,
    decode: bool = True,
    encode: bool = True,
    weight_bytes: int = 0,
    attention_matrices: bool = False,
    cpu_heap: bool = False,
    guided: bool = True,
) -> MemoryEstimate:
    """Estimate the peak memory of one pipeline call from its shapes, allocating nothing.

    Args:
        unet_config, vae_config: the configs of the UNet (``UNetSpatioTemporalConditionModel``) and of the VAE
            (``AutoencoderKLTemporalDecoder``), e.g. ``pipe.unet.config`` and ``pipe.vae.config``.
        batch_size: keyframe pairs B; num_frames: N; height, width: the output size in pixels.
        rows_per_pair, calls: ``layout.rows_per_pair`` and ``len(layout.calls)`` of the call's
            :class:`~inbetween.layout.BatchLayout` (4 and 1 with guidance, 4 and 2 with ``split_guidance_batch``).
        decode_chunk_size: frames decoded at a time (``None``: all).
        dtype_bytes: bytes per element of the UNet (2 for float16, 4 for float32); ``vae_dtype_bytes`` that of the
            VAE (default: the same; its encoder runs in float32 when a float16 VAE asks for ``force_upcast``).
        decode: False for ``output_type="latent"``; encode: False to leave the keyframe encoding out.
        weight_bytes: weights to count on top (default none: they are resident before the call).
        attention_matrices: count ``softmax(QK^T)`` of every attention layer, for backends that materialise it.
        cpu_heap: count glibc's heap fragments (Linux CPUs), see :mod:`inbetween.memory`.
        guided: whether the call uses guidance (only then can ``split_guidance_batch`` split it; for the message).
    """
    for name, value in (("batch_size", batch_size), ("num_frames", num_frames), ("height", height), ("width", width)):
        if value < 1:
            raise ValueError(f"`{name}` must be at least 1, got {value}")
    if rows_per_pair < 1 or calls < 1:
        raise ValueError(f"`rows_per_pair` and `calls` must be at least 1, got {rows_per_pair} and {calls}")
    vae_dtype_bytes = vae_dtype_bytes or dtype_bytes
    scale = 2 ** (len(vae_config["block_out_channels"]) - 1)
    latent_channels = int(vae_config.get("latent_channels", 4))
    h, w = math.ceil(height / scale), math.ceil(width / scale)
    rows_per_call = math.ceil(rows_per_pair / calls)
    rows = rows_per_call * batch_size
    latents = batch_size * num_frames * latent_channels * h * w * 4  # float32, as the pipeline keeps them
    latent_bytes = latents * (LATENT_FIXED + LATENT_PER_ROW * rows_per_pair + LATENT_PER_CALL_ROW * rows_per_call)
    chunk = min(decode_chunk_size or num_frames, num_frames)
    memory = _Memory(cpu_heap)

    encode_bytes = 0
    if encode:
        pixels = 2 * batch_size * 3 * height * width * 4
        encoder_dtype = 4 if vae_config.get("force_upcast", False) else vae_dtype_bytes
        inputs = memory.new(pixels * PIXEL_COPIES, unit=pixels)
        _encoder_walk(memory, vae_config, 2 * batch_size, height, width, encoder_dtype, attention_matrices)
        memory.free(inputs)
        encode_bytes = memory.end_stage()

    held = memory.new(latent_bytes, unit=latents)
    _unet_walk(memory, unet_config, rows, num_frames, h, w, dtype_bytes, attention_matrices)
    unet_bytes = memory.end_stage() - latent_bytes
    memory.free(held)

    decode_bytes = 0
    if decode:
        x = memory.new(latents, unit=latents)
        video = batch_size * num_frames * 3 * height * width * 4
        frames = memory.new(video * OUTPUT_COPIES, unit=video // batch_size)
        memory.block(0, 0)
        _decoder_walk(memory, vae_config, chunk, latent_channels, h, w, vae_dtype_bytes, attention_matrices)
        memory.free(x, frames)
        decode_bytes = memory.end_stage() - latents

    live_peak = max(encode_bytes, latent_bytes + unet_bytes, latents + decode_bytes if decode else 0)
    return MemoryEstimate(
        peak_bytes=round(memory.resident_peak + FIXED_BYTES + weight_bytes),
        unet_bytes=round(unet_bytes),
        decode_bytes=round(decode_bytes),
        latent_bytes=round(latent_bytes),
        encode_bytes=round(encode_bytes),
        heap_bytes=round(memory.resident_peak - live_peak),
        weight_bytes=int(weight_bytes),
        rows=rows,
        num_frames=num_frames,
        latent_height=h,
        latent_width=w,
        height=height,
        width=width,
        decode_chunk_size=chunk,
        calls=calls,
        guided=guided,
    )


def format_bytes(count: float) -> str:
    """``812.4 GB``, ``3.2 MB`` (decimal units)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"
