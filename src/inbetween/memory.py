"""The peak memory of one :class:`~inbetween.InbetweenPipeline` call, estimated from its shapes before anything is
allocated, and the check that refuses a call that cannot fit (instead of the kernel's OOM killer ending it without a
word).

The estimate is analytic: a walk over the UNet's and the VAE's blocks as their configs describe them, which keeps
track of the tensors alive at each block (the UNet's skip connections, the tensors a calling block still holds) and
adds each block's own transient tensors, a constant number of channels per position, measured on these models
(``bench/memory_estimate.py`` prints the estimate next to the measured peak). A call's peak is the largest of its
three stages, one after the other:

* encode: the keyframe pixels and the VAE encoder on the ``2B`` keyframes at full resolution;
* denoise: the latents, the conditioning and the denoiser's latent-sized temporaries, plus the UNet's activations
  on one call of ``rows_per_pair * B / calls`` rows of ``N`` frames at ``H/f x W/f`` latents;
* decode: the VAE decoder on ``decode_chunk_size`` frames at full resolution, plus the decoded frames.

Weights are resident before the call, so they are left out unless the caller passes ``weight_bytes`` (e.g. the
UNet's bytes when model CPU offload brings it onto the GPU only for the call).

Attention maps are not counted by default: torch's ``scaled_dot_product_attention`` runs a flash kernel on CPU
(measured here: 4x the tokens gives 4.0x the transformer's memory, not 16x; the rotated temporal attention's wider
values likewise) and flash / memory-efficient kernels on CUDA, none of which materialises ``softmax(QK^T)``. Pass
``attention_matrices=True`` where a math fallback does (MPS): the spatial maps are quadratic in the tokens of a level,
``(H/f/2^k * W/f/2^k)^2`` per head and frame, the temporal ones ``N^2`` per head and position.

On Linux CPUs (``cpu_heap=True``) glibc's malloc serves blocks under 32 MiB from a heap that it does not give back
within a call, and that fragments: a first call's resident peak was measured up to 1.8x its live tensors when they
are small. The estimate then counts the heap at twice the largest total of such blocks seen so far, which brings it
from below the measured peak to 1.1-1.8x of it; larger tensors are their own mappings, returned when freed.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Transient tensors of one block, in channels per position of its level, measured (bench/memory_estimate.py) on
# diffusers 0.42 with torch 2.13 on CPU in float32 and rounded up; the tensors the caller holds are counted apart.
RESNET_IN, RESNET_OUT = 1.1, 4.6  # SpatioTemporalResBlock: ~1 c_in + 4.0-4.8 c_out (spatial, temporal, mixer)
RESNET_2D_IN, RESNET_2D_OUT = 3.6, 4.1  # ResnetBlock2D (VAE encoder): max(3.0 c_in, 4.0 c_out)
TRANSFORMER = 23.0  # TransformerSpatioTemporalModel: 22.0-22.3 c (GEGLU feed-forwards: 8c + 4c + 4c at once)
VAE_ATTENTION = 7.5  # the VAE mid-block's single-head self-attention: ~7 c
UPSAMPLE = 3.2  # Upsample2D, per position of its OUTPUT: nearest-neighbour copy, conv, output (~3 c_out)
DOWNSAMPLE = 3.0  # Downsample2D, per position of its input: padded copy, conv output (1.3-2.9 c)
ATTENTION_MAPS = 2.0  # with attention_matrices: scores and softmax alive together
# Latent-sized tensors of the denoise stage, in units of the latents (B, N, C, h, w) in float32: the sampler's
# x / x_next / noise / d (6), the time-reversed copy (1), the guided and fused outputs (9), each group's denoised
# prediction (rows_per_pair), and per UNet row of a call its stacked input, scaled input, 2C-channel model input,
# output and its float32 copy (6).
LATENT_FIXED, LATENT_PER_ROW, LATENT_PER_CALL_ROW = 16, 1, 6
PIXEL_COPIES = 6  # keyframe pixels (2B, 3, H, W) float32: first, last, their concatenation, noise, scaled, sum
OUTPUT_COPIES = 3  # decoded frames (B, N, 3, H, W) float32: the chunks, their concatenation / stack, postprocessing
CONV_WEIGHT_COPY = 1.0  # oneDNN reorders a 3x3 conv's weights into a temporary on every call (CPU): 1 copy alive
FIXED_BYTES = 48_000_000  # a first call's kernels and caches (oneDNN): measured 22 MB (tiny UNet), 47 MB (SVD's)
HEAP_LIMIT = 32 * 2**20  # glibc's largest dynamic mmap threshold: smaller blocks may come from the heap
HEAP_FRAGMENTATION = 2.0  # heap grown / its live blocks at their peak (measured up to 1.8)
MARGIN = 0.9  # refuse a call whose estimate is above this fraction of the available memory


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
        cpu_heap: count glibc's heap fragments (Linux CPUs), see the module's docstring.
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


def unet_forward_bytes(
    config: Mapping[str, Any], rows: int, frames: int, h: int, w: int, dtype_bytes: int = 4, **options: bool
) -> int:
    """Peak bytes of one UNet forward alone (``rows`` x ``frames`` latents of ``h x w``), its first-call overhead
    included: what ``bench/memory_estimate.py`` and the tests measure. ``options``: ``attention_matrices``,
    ``cpu_heap``."""
    return _walk_peak(_unet_walk, (config, rows, frames, h, w, dtype_bytes), options)


def decode_forward_bytes(
    vae_config: Mapping[str, Any], frames: int, h: int, w: int, dtype_bytes: int = 4, **options: bool
) -> int:
    """Peak bytes of one VAE decode alone of ``frames`` latents of ``h x w``, as :func:`unet_forward_bytes`."""
    channels = int(vae_config.get("latent_channels", 4))
    return _walk_peak(_decoder_walk, (vae_config, frames, channels, h, w, dtype_bytes), options)


def encode_forward_bytes(
    vae_config: Mapping[str, Any], images: int, height: int, width: int, dtype_bytes: int = 4, **options: bool
) -> int:
    """Peak bytes of one VAE encode alone of ``images`` of ``height x width``, as :func:`unet_forward_bytes`."""
    return _walk_peak(_encoder_walk, (vae_config, images, height, width, dtype_bytes), options)


def _walk_peak(walk, arguments: tuple, options: dict[str, bool]) -> int:
    """Peak bytes of one stage's walk alone, its first-call overhead included."""
    memory = _Memory(options.get("cpu_heap", False))
    walk(memory, *arguments, options.get("attention_matrices", False))
    return round(memory.resident_peak + FIXED_BYTES)


# the walks ------------------------------------------------------------------------------------------------------


class _Memory:
    """The tensors alive during a call, by identity, and the peaks they reach with each block's transients: of the
    live bytes (per stage), and of the resident bytes, where heap blocks count at their fragmented extent."""

    def __init__(self, heap: bool) -> None:
        self.heap = heap
        self.tensors: dict[int, tuple[float, bool]] = {}  # id -> (bytes, from the heap)
        self.stage_peak = 0.0
        self.heap_peak = 0.0
        self.resident_peak = 0.0
        self._ids = 0

    def new(self, nbytes: float, unit: float | None = None) -> int:
        """A tensor (or a group of tensors of about ``unit`` bytes each) of ``nbytes``; returns its id."""
        self._ids += 1
        self.tensors[self._ids] = (nbytes, self._on_heap(nbytes if unit is None else unit))
        return self._ids

    def free(self, *tensors: int) -> None:
        for tensor in tensors:
            self.tensors.pop(tensor, None)

    def replace(self, old: int, nbytes: float, keep: list[int]) -> int:
        """A block's output of ``nbytes``; its input ``old`` is freed unless someone in ``keep`` still holds it."""
        new = self.new(nbytes)
        if old not in keep:
            self.free(old)
        return new

    def block(self, transient: float, unit: float, extra: float = 0.0) -> None:
        """A block runs: the live tensors plus ``transient`` bytes of its own, in tensors of about ``unit`` bytes,
        and one more tensor of ``extra`` bytes (a weight copy)."""
        mapped = sum(size for size, heap in self.tensors.values() if not heap)
        heaped = sum(size for size, heap in self.tensors.values() if heap)
        for nbytes, size in ((transient, unit), (extra, extra)):
            if self._on_heap(size):
                heaped += nbytes
            else:
                mapped += nbytes
        self.stage_peak = max(self.stage_peak, mapped + heaped)
        self.heap_peak = max(self.heap_peak, heaped)
        self.resident_peak = max(self.resident_peak, mapped + heaped, mapped + HEAP_FRAGMENTATION * self.heap_peak)

    def end_stage(self) -> float:
        """The live peak of the stage that ends, and a fresh one."""
        peak, self.stage_peak = self.stage_peak, 0.0
        return peak

    def _on_heap(self, unit: float) -> bool:
        return self.heap and unit < HEAP_LIMIT


def _unet_walk(
    memory: _Memory,
    config: Mapping[str, Any],
    rows: int,
    frames: int,
    h: int,
    w: int,
    dtype_bytes: int,
    maps: bool,
) -> None:
    """One UNet forward over ``rows`` x ``frames`` latents of ``h x w``, diffusers' order of allocations and frees.

    Down blocks push their outputs as skip connections; an up block pops one per resnet (concatenated to its input),
    and the UNet holds the block's input and all of its skips until the block returns. Its input and output are
    latent-sized, counted with the latents.
    """
    channels = [int(c) for c in config["block_out_channels"]]
    levels = len(channels)
    layers = _per_level(config.get("layers_per_block", 2), levels)
    heads = _per_level(config.get("num_attention_heads", (5, 10, 20, 20)), levels)
    default_down = ["CrossAttnDownBlockSpatioTemporal"] * (levels - 1) + ["DownBlockSpatioTemporal"]
    down_attention = ["CrossAttn" in kind for kind in config.get("down_block_types", default_down)]
    up_kinds = config.get("up_block_types", [kind.replace("Down", "Up") for kind in default_down[::-1]])
    up_attention = ["CrossAttn" in kind for kind in up_kinds]
    images = rows * frames

    def area(level: int) -> int:
        return math.ceil(h / 2**level) * math.ceil(w / 2**level)

    def size(c: int, level: int) -> float:
        return float(images) * c * area(level) * dtype_bytes

    def resnet(c_in: int, c_out: int, level: int) -> None:
        transient = RESNET_IN * size(c_in, level) + RESNET_OUT * size(c_out, level)
        memory.block(transient, size(c_out, level), CONV_WEIGHT_COPY * 9 * c_in * c_out * dtype_bytes)

    def transformer(c: int, level: int) -> None:
        attention = 0.0
        if maps:
            tokens = area(level)
            spatial = images * heads[level] * tokens**2
            temporal = rows * tokens * heads[level] * frames**2
            attention = ATTENTION_MAPS * (spatial + temporal) * dtype_bytes
        memory.block(TRANSFORMER * size(c, level) + attention, size(c, level))

    hidden = memory.new(size(channels[0], 0))  # conv_in
    memory.block(0, 0)
    skips: list[tuple[int, int]] = [(hidden, channels[0])]  # (tensor, channels)
    c_hidden = channels[0]
    for level, c in enumerate(channels):
        block_input = hidden
        for _ in range(layers[level]):
            held = [s for s, _ in skips] + [block_input]
            resnet(c_hidden, c, level)
            hidden, c_hidden = memory.replace(hidden, size(c, level), held), c
            if down_attention[level]:
                transformer(c, level)
                hidden = memory.replace(hidden, size(c, level), held)
            skips.append((hidden, c))
        if level < levels - 1:
            memory.block(DOWNSAMPLE * size(c, level), size(c, level + 1))
            hidden = memory.new(size(c, level + 1))
            skips.append((hidden, c))

    last, c = levels - 1, channels[-1]  # mid block: resnet, transformer, resnet
    held = [s for s, _ in skips]
    resnet(c, c, last)
    hidden = memory.replace(hidden, size(c, last), held)
    transformer(c, last)
    hidden = memory.replace(hidden, size(c, last), held)
    resnet(c, c, last)
    hidden = memory.replace(hidden, size(c, last), held)

    for index, level in enumerate(reversed(range(levels))):
        c = channels[level]
        count = layers[level] + 1
        popped, skips = skips[-count:], skips[:-count]
        block_input = hidden
        for _, c_skip in reversed(popped):
            concat = memory.new(size(c_hidden + c_skip, level))
            if hidden != block_input:
                memory.free(hidden)
            resnet(c_hidden + c_skip, c, level)
            hidden, c_hidden = memory.new(size(c, level)), c
            memory.free(concat)
            if up_attention[index]:
                transformer(c, level)
                hidden = memory.replace(hidden, size(c, level), [block_input])
        if level > 0:
            memory.block(UPSAMPLE * size(c, level - 1), size(c, level - 1))
            hidden = memory.replace(hidden, size(c, level - 1), [block_input])
        memory.free(block_input, *(s for s, _ in popped))
    memory.block(2 * size(channels[0], 0), size(channels[0], 0))  # norm and activation before conv_out
    memory.free(hidden)


def _decoder_walk(
    memory: _Memory,
    config: Mapping[str, Any],
    frames: int,
    latent_channels: int,
    h: int,
    w: int,
    dtype_bytes: int,
    maps: bool,
) -> None:
    """The temporal decoder on ``frames`` latents of ``h x w``: no skip connections; the decoder holds each up
    block's input until the block returns."""
    channels = [int(c) for c in config["block_out_channels"]][::-1]
    layers = int(config.get("layers_per_block", 2))

    def size(c: int, level: int) -> float:  # level 0: the latents' resolution, doubling per up block
        return float(frames) * c * (h * 2**level) * (w * 2**level) * dtype_bytes

    def resnet(c_in: int, c_out: int, level: int) -> None:
        transient = RESNET_IN * size(c_in, level) + RESNET_OUT * size(c_out, level)
        memory.block(transient, size(c_out, level), CONV_WEIGHT_COPY * 9 * c_in * c_out * dtype_bytes)

    z = memory.new(size(latent_channels, 0))
    hidden = memory.new(size(channels[0], 0))  # conv_in
    memory.block(0, 0)
    memory.free(z)
    c = c_hidden = channels[0]
    resnet(c, c, 0)  # mid block: resnet, then (attention, resnet) from two layers on
    hidden = memory.replace(hidden, size(c, 0), [])
    if layers >= 2:
        attention = ATTENTION_MAPS * frames * (h * w) ** 2 * dtype_bytes if maps else 0.0
        memory.block(VAE_ATTENTION * size(c, 0) + attention, size(c, 0))
        hidden = memory.replace(hidden, size(c, 0), [])
        for _ in range(layers - 1):
            resnet(c, c, 0)
            hidden = memory.replace(hidden, size(c, 0), [])
    for level, c in enumerate(channels):
        block_input = hidden
        for _ in range(layers + 1):
            resnet(c_hidden, c, level)
            hidden, c_hidden = memory.replace(hidden, size(c, level), [block_input]), c
        if level < len(channels) - 1:
            memory.block(UPSAMPLE * size(c, level + 1), size(c, level + 1))
            hidden = memory.replace(hidden, size(c, level + 1), [block_input])
        memory.free(block_input)
    memory.block(2 * size(c_hidden, len(channels) - 1), size(c_hidden, len(channels) - 1))  # norm, activation
    memory.free(hidden)


def _encoder_walk(
    memory: _Memory, config: Mapping[str, Any], images: int, height: int, width: int, dtype_bytes: int, maps: bool
) -> None:
    """The VAE's 2D encoder on ``images`` of ``height x width`` (the pixels themselves are counted by the caller)."""
    channels = [int(c) for c in config["block_out_channels"]]
    layers = int(config.get("layers_per_block", 2))

    def size(c: int, level: int) -> float:
        return float(images) * c * math.ceil(height / 2**level) * math.ceil(width / 2**level) * dtype_bytes

    def resnet(c_in: int, c_out: int, level: int) -> None:
        transient = max(RESNET_2D_IN * size(c_in, level), RESNET_2D_OUT * size(c_out, level))
        memory.block(transient, size(c_out, level), CONV_WEIGHT_COPY * 9 * c_in * c_out * dtype_bytes)

    hidden = memory.new(size(channels[0], 0))  # conv_in
    memory.block(0, 0)
    c_hidden = channels[0]
    for level, c in enumerate(channels):
        block_input = hidden
        for _ in range(layers):
            resnet(c_hidden, c, level)
            hidden, c_hidden = memory.replace(hidden, size(c, level), [block_input]), c
        if level < len(channels) - 1:
            memory.block(DOWNSAMPLE * size(c, level), size(c, level + 1))
            hidden = memory.replace(hidden, size(c, level + 1), [block_input])
        memory.free(block_input)
    last = len(channels) - 1  # mid block: resnet, attention, resnet
    tokens = math.ceil(height / 2**last) * math.ceil(width / 2**last)
    resnet(c_hidden, c_hidden, last)
    hidden = memory.replace(hidden, size(c_hidden, last), [])
    attention = ATTENTION_MAPS * images * tokens**2 * dtype_bytes if maps else 0.0
    memory.block(VAE_ATTENTION * size(c_hidden, last) + attention, size(c_hidden, last))
    hidden = memory.replace(hidden, size(c_hidden, last), [])
    resnet(c_hidden, c_hidden, last)
    memory.free(hidden)


def _per_level(value, levels: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * levels


# a pipeline's call ----------------------------------------------------------------------------------------------


def estimate_pipeline_call(
    pipe, config, batch_size: int = 1, output_type: str = "pil", *, include_weights: bool | None = None
) -> MemoryEstimate:
    """:func:`estimate_call_memory` of ``pipe(first, last, config, output_type=...)`` on ``batch_size`` pairs.

    ``config`` is the call's :class:`~inbetween.config.SamplingConfig` with its sizes filled in (what
    ``pipe.sampling_config`` returns). ``include_weights`` (default: when model CPU offload keeps the weights off the
    execution device) counts the largest component's weights, which offload brings onto the device for its stage.
    Attention maps are counted on MPS, glibc's heap on Linux CPUs.
    """
    return estimate_call_memory(**_pipeline_shape(pipe, config, batch_size, output_type, include_weights))


def check_pipeline_call(
    pipe, config, batch_size: int = 1, output_type: str = "pil", allow_oversize: bool = False
) -> MemoryEstimate:
    """Refuse ``pipe``'s call on ``config`` with a one-line ``ValueError`` when its estimate does not fit the memory
    available on the pipeline's execution device (the message names the largest size that would fit); returns the
    estimate otherwise. Allocates nothing: call it before the keyframes are even preprocessed."""
    shape = _pipeline_shape(pipe, config, batch_size, output_type, None)
    return _check(shape, pipe._execution_device, allow_oversize)


def check_model_call(
    unet_config: Mapping[str, Any],
    vae_config: Mapping[str, Any],
    config,
    device,
    dtype_bytes: int,
    *,
    batch_size: int = 1,
    output_type: str = "pil",
    weight_bytes: int = 0,
    allow_oversize: bool = False,
) -> MemoryEstimate:
    """:func:`check_pipeline_call` before the model is loaded, from its configs (``hub.local_model_configs``):
    ``config`` is a :class:`~inbetween.config.SamplingConfig` with its height and width set (a missing frame count
    or chunk size is the model's default). The weights are not resident yet: a call refused without them
    (``weight_bytes=0``) would be refused once they are loaded, so the CLI can refuse it before loading."""
    import torch

    from .cost import largest_request

    device = torch.device(device)
    num_frames = config.num_frames or int(unet_config.get("num_frames", 25))
    layout = largest_request(config)  # the sampler's request with the most rows sets the peak
    shape = dict(
        unet_config=dict(unet_config),
        vae_config=dict(vae_config),
        batch_size=batch_size,
        num_frames=num_frames,
        height=config.height,
        width=config.width,
        rows_per_pair=layout.rows_per_pair,
        calls=len(layout.calls),
        decode_chunk_size=config.decode_chunk_size or num_frames,
        dtype_bytes=dtype_bytes,
        decode=output_type != "latent",
        weight_bytes=weight_bytes,
        **_device_options(device),
        guided=config.guided,
    )
    return _check(shape, device, allow_oversize)


def _check(shape: dict[str, Any], device, allow_oversize: bool) -> MemoryEstimate:
    estimate = estimate_call_memory(**shape)
    available = None if allow_oversize else available_memory(device)
    if available is None or estimate.peak_bytes <= MARGIN * available:
        return estimate
    multiple = 2 ** (len(shape["vae_config"]["block_out_channels"]) - 1)
    multiple *= 2 ** (len(shape["unet_config"]["block_out_channels"]) - 1)
    size = largest_fitting_size(
        lambda height, width: estimate_call_memory(**{**shape, "height": height, "width": width}).peak_bytes,
        shape["height"],
        shape["width"],
        multiple,
        MARGIN * available,
    )
    if size is None:
        hint = "not even the smallest size fits these settings"
    else:
        hint = f"about {size[1]}x{size[0]} fits at this aspect and these settings"
    check_call_fits(estimate, available, hint=hint)
    raise AssertionError("check_call_fits accepted an estimate above the margin")  # pragma: no cover


def _pipeline_shape(pipe, config, batch_size: int, output_type: str, include_weights: bool | None) -> dict[str, Any]:
    """The arguments of :func:`estimate_call_memory` for a pipeline's call."""
    from .cost import largest_request

    layout = largest_request(config)  # the sampler's request with the most rows sets the peak
    device = pipe._execution_device
    components = [pipe.unet, pipe.vae, pipe.image_encoder]
    if include_weights is None:  # model CPU offload: the weights come onto the device for their stage
        include_weights = any(_device_type(module) not in (None, device.type) for module in components)
    return dict(
        unet_config=dict(pipe.unet.config),
        vae_config=dict(pipe.vae.config),
        batch_size=batch_size,
        num_frames=config.num_frames,
        height=config.height,
        width=config.width,
        rows_per_pair=layout.rows_per_pair,
        calls=len(layout.calls),
        decode_chunk_size=config.decode_chunk_size,
        dtype_bytes=pipe.unet.dtype.itemsize,
        vae_dtype_bytes=pipe.vae.dtype.itemsize,
        decode=output_type != "latent",
        weight_bytes=max(_weight_bytes(module) for module in components) if include_weights else 0,
        **_device_options(device),
        guided=config.guided,
    )


def _device_options(device) -> dict[str, bool]:
    """Attention maps where SDPA falls back to the math kernel (MPS); glibc's heap on Linux CPUs."""
    return {
        "attention_matrices": device.type == "mps",
        "cpu_heap": device.type == "cpu" and sys.platform.startswith("linux"),
    }


def _device_type(module) -> str | None:
    parameter = next(iter(module.parameters()), None)
    return None if parameter is None else parameter.device.type


def _weight_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


# available memory and the check ---------------------------------------------------------------------------------


def available_memory(device=None) -> int | None:
    """Bytes a call on ``device`` (a ``torch.device`` or its name; default CPU) can still allocate: for CUDA the
    free device memory plus what torch's caching allocator holds unused; for CPU (and MPS, which shares it) the
    system's available memory, or what is left under this process's cgroup limit if less; ``None`` for other
    devices."""
    import torch

    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(cached, 0))
    if device.type == "mps":
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return _system_available()
    if device.type == "cpu":
        return _system_available()
    return None


def _system_available() -> int:
    try:
        import psutil
    except ImportError:
        available = _meminfo_available()
    else:
        available = int(psutil.virtual_memory().available)
    headroom = _cgroup_headroom()
    return min(available, headroom) if headroom is not None else available


def _meminfo_available() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


CGROUP_FILES = (  # (limit, usage, stat, reclaimable page cache key): cgroup v2, then v1
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file"),
    (
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        "/sys/fs/cgroup/memory/memory.stat",
        "total_inactive_file",
    ),
)


def _cgroup_headroom() -> int | None:
    """Bytes left under this process's cgroup memory limit (where a container's OOM killer strikes), or None."""
    for limit_file, usage_file, stat_file, reclaimable_key in CGROUP_FILES:
        try:
            with open(limit_file) as file:
                limit = file.read().strip()
            with open(usage_file) as file:
                usage = int(file.read().strip())
        except (OSError, ValueError):
            continue
        if not limit.isdigit() or int(limit) >= 1 << 60:  # "max", or v1's "no limit"
            return None
        reclaimable = 0
        try:
            with open(stat_file) as file:
                for line in file:
                    key, _, value = line.partition(" ")
                    if key == reclaimable_key:
                        reclaimable = int(value)
        except (OSError, ValueError):
            pass
        return max(int(limit) - usage + reclaimable, 0)
    return None


def check_call_fits(
    estimate: MemoryEstimate,
    available: int | None,
    allow_oversize: bool = False,
    *,
    margin: float = MARGIN,
    hint: str = "",
) -> None:
    """Raise ``ValueError`` (one line: the estimate, the available memory and the knobs that lower it) when
    ``estimate`` is above ``margin`` of ``available``; nothing with ``allow_oversize`` or an unknown ``available``.

    The knobs are named as the sampling options, in backticks (the CLI renames them to its flags); ``hint`` goes
    before them, e.g. the largest size that fits.
    """
    if allow_oversize or available is None or estimate.peak_bytes <= margin * available:
        return
    knobs = []  # the one that lowers the larger stage first
    if estimate.guided and estimate.calls == 1:
        knobs.append((estimate.unet_bytes, "turn on `split_guidance_batch`"))
    if estimate.decode_bytes and estimate.decode_chunk_size > 1:
        knobs.append((estimate.decode_bytes, "use a smaller `decode_chunk_size`"))
    knobs = ["lower `height`/`width` or `num_frames`"] + [knob for _, knob in sorted(knobs, reverse=True)]
    hint = f" ({hint})" if hint else ""
    raise ValueError(
        f"this call needs {estimate.describe()} but {format_bytes(available)} is available{hint}; "
        + ", ".join(knobs)
        + ", or pass `allow_oversize` to try anyway"
    )


def largest_fitting_size(peak_of, height: int, width: int, multiple: int, budget: float) -> tuple[int, int] | None:
    """The largest ``(height, width)`` at the aspect of ``height x width``, in multiples of ``multiple``, whose
    ``peak_of(height, width)`` is within ``budget`` bytes; ``None`` when not even the smallest size is."""

    def size_at(scale: float) -> tuple[int, int]:
        return (
            max(multiple, int(height * scale / multiple) * multiple),
            max(multiple, int(width * scale / multiple) * multiple),
        )

    low = multiple / min(height, width)
    if peak_of(*size_at(low)) > budget:
        return None
    high = max(1.0, low)
    for _ in range(30):  # the estimate grows with the size: bisect the scale
        middle = (low + high) / 2
        if peak_of(*size_at(middle)) <= budget:
            low = middle
        else:
            high = middle
    return size_at(low)


def format_bytes(count: float) -> str:
    """``812.4 GB``, ``3.2 MB`` (decimal units)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"
