"""The peak memory of one :class:`~inbetween.InbetweenPipeline` call, estimated from its shapes before anything is
allocated, and the check that refuses a call that cannot fit (instead of the kernel's OOM killer ending it without a
word).

The estimate is analytic: a walk over the UNet's and the VAE's blocks, as their configs describe them, that keeps
track of the tensors alive at each block (the UNet's skip connections, the tensors the calling block still holds)
and adds the block's own transient tensors, a constant number of channels per position measured on this package's
models (``bench/memory_estimate.py`` prints the estimate against the measured peak). The call's peak is the largest
of its three stages:

* encode: the keyframe pixels and the VAE encoder on the ``2B`` keyframes at full resolution;
* denoise: the latents, the conditioning and the denoiser's latent-sized temporaries, plus the UNet's activations
  on one call of ``rows_per_pair * B / calls`` rows of ``N`` frames at ``H/f x W/f`` latents;
* decode: the VAE decoder on ``decode_chunk_size`` frames at full resolution, plus the decoded frames.

Weights are resident before the call, so they are left out unless the caller passes ``weight_bytes`` (e.g. the
UNet's bytes when model CPU offload brings it onto the GPU only during the call).

Attention maps are not counted by default: torch's ``scaled_dot_product_attention`` runs a flash kernel on CPU
(measured here: 4x the tokens gives 4.0x the transformer's memory, not 16x) and flash / memory-efficient kernels on
CUDA, none of which materialises ``softmax(QK^T)``. Pass ``attention_matrices=True`` where a math fallback does
(MPS): the spatial maps are quadratic in the tokens of a level, ``(H/f/2^k * W/f/2^k)^2`` per head and frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

# Transient tensors of one block, in channels per position of its level, measured (bench/memory_estimate.py) on
# diffusers 0.42 with torch 2.13 on CPU in float32 and rounded up; the tensors the caller holds are counted apart.
RESNET_IN, RESNET_OUT = 1.1, 4.6  # SpatioTemporalResBlock: ~1 c_in + 4.4-4.8 c_out (spatial, temporal, mixer)
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
MARGIN = 0.9  # refuse a call whose estimate is above this fraction of the available memory


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one pipeline call by stage, and the shapes behind them (for the message)."""

    unet_bytes: int  # UNet activations of one call (the largest of the layout's calls)
    decode_bytes: int  # VAE decoder activations on one chunk, plus the decoded frames (0 for latent output)
    latent_bytes: int  # latents, conditioning and the denoiser's latent-sized temporaries
    encode_bytes: int = 0  # keyframe pixels and the VAE encoder's activations
    weight_bytes: int = 0  # model weights, only where the caller counts them
    rows: int = 0  # UNet rows of one call (batch size times rows per pair, over the calls)
    num_frames: int = 0
    latent_height: int = 0
    latent_width: int = 0
    height: int = 0
    width: int = 0
    decode_chunk_size: int = 0
    calls: int = 1

    @property
    def peak_bytes(self) -> int:
        """The largest stage (encode, denoise, decode) plus the counted weights."""
        denoise = self.latent_bytes + self.unet_bytes
        decode = self.latent_bytes + self.decode_bytes if self.decode_bytes else 0
        return self.weight_bytes + max(self.encode_bytes, denoise, decode)

    def describe(self) -> str:
        """``about 812.4 GB (UNet activations 790.1 GB for 4 rows x 25 frames at 12500x12500 latents, ...)``."""
        calls = f" per call, {self.calls} calls" if self.calls > 1 else ""
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
) -> MemoryEstimate:
    """Estimate the peak memory of one pipeline call from its shapes, allocating nothing.

    Args:
        unet_config, vae_config: the configs of the UNet (``UNetSpatioTemporalConditionModel``) and the VAE
            (``AutoencoderKLTemporalDecoder``), e.g. ``pipe.unet.config``, ``pipe.vae.config``.
        batch_size: keyframe pairs B; num_frames: N; height, width: output size in pixels.
        rows_per_pair, calls: ``layout.rows_per_pair`` and ``len(layout.calls)`` of the call's
            :class:`~inbetween.layout.BatchLayout` (4 and 1 with guidance, 4 and 2 with ``split_guidance_batch``).
        decode_chunk_size: frames decoded at a time (``None``: all).
        dtype_bytes: bytes per element of the UNet (2 for float16, 4 for float32); ``vae_dtype_bytes`` that of the
            VAE (default: the same; its encoder runs in float32 when a float16 VAE asks for ``force_upcast``).
        decode: False for ``output_type="latent"``; encode: False when the keyframes are not encoded.
        weight_bytes: weights to count on top (default none: they are resident before the call).
        attention_matrices: count ``softmax(QK^T)`` of every attention layer, for backends that materialise it.
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
    rows = math.ceil(rows_per_pair / calls) * batch_size
    latents = batch_size * num_frames * latent_channels * h * w * 4  # float32, as the pipeline keeps them
    latent_bytes = latents * (LATENT_FIXED + LATENT_PER_ROW * rows_per_pair) + round(
        latents * LATENT_PER_CALL_ROW * math.ceil(rows_per_pair / calls) * max(dtype_bytes, 4) / 4
    )
    unet = _unet_peak(unet_config, rows * num_frames, latent_channels, h, w, num_frames, attention_matrices)
    chunk = min(decode_chunk_size or num_frames, num_frames)
    decode_bytes = 0
    if decode:
        frames = batch_size * num_frames * 3 * height * width * 4
        decoder = _decoder_peak(vae_config, chunk, latent_channels, h, w, attention_matrices)
        decode_bytes = decoder * vae_dtype_bytes + frames * OUTPUT_COPIES
    encode_bytes = 0
    if encode:
        encoder_dtype = 4 if vae_config.get("force_upcast", False) else vae_dtype_bytes
        pixels = 2 * batch_size * 3 * height * width * 4
        encoder = _encoder_peak(vae_config, 2 * batch_size, height, width, attention_matrices)
        encode_bytes = encoder * encoder_dtype + pixels * PIXEL_COPIES
    return MemoryEstimate(
        unet_bytes=round(unet * dtype_bytes),
        decode_bytes=round(decode_bytes),
        latent_bytes=round(latent_bytes),
        encode_bytes=round(encode_bytes),
        weight_bytes=int(weight_bytes),
        rows=rows,
        num_frames=num_frames,
        latent_height=h,
        latent_width=w,
        height=height,
        width=width,
        decode_chunk_size=chunk,
        calls=calls,
    )


# the walks: elements alive at each block, the largest of them ----------------------------------------------------


class _Live:
    """The tensors alive during a forward pass, by identity, and the largest total seen with a block's transients."""

    def __init__(self) -> None:
        self.tensors: dict[int, float] = {}
        self.peak = 0.0
        self._next = 0

    def new(self, elements: float) -> int:
        self._next += 1
        self.tensors[self._next] = elements
        return self._next

    def free(self, *tensors: int) -> None:
        for tensor in tensors:
            self.tensors.pop(tensor, None)

    def block(self, transient: float) -> None:
        self.peak = max(self.peak, sum(self.tensors.values()) + transient)


def _unet_peak(
    config: Mapping[str, Any], images: int, latent_channels: int, h: int, w: int, num_frames: int, maps: bool
) -> float:
    """Peak elements of one UNet forward over ``images`` = rows x frames latents of ``h x w``."""
    channels = list(config["block_out_channels"])
    levels = len(channels)
    layers = _per_level(config.get("layers_per_block", 2), levels)
    heads = _per_level(config.get("num_attention_heads", (5, 10, 20, 20)), levels)
    down_attention = ["CrossAttn" in kind for kind in config.get("down_block_types", ["CrossAttn"] * (levels - 1))]
    down_attention += [False] * (levels - len(down_attention))
    up_attention = ["CrossAttn" in kind for kind in config.get("up_block_types", [])] or down_attention[::-1]

    def area(level: int) -> int:
        return math.ceil(h / 2**level) * math.ceil(w / 2**level)

    def size(c: int, level: int) -> float:
        return float(images) * c * area(level)

    def attention_maps(level: int) -> float:
        if not maps:
            return 0.0
        tokens = area(level)
        spatial = images * heads[level] * tokens**2
        temporal = images // num_frames * tokens * heads[level] * num_frames**2
        return ATTENTION_MAPS * max(spatial, temporal)

    live = _Live()
    sample = live.new(size(int(config.get("in_channels", 2 * latent_channels)), 0))
    hidden = live.new(size(channels[0], 0))
    live.block(0)
    live.free(sample)
    skips = [hidden]
    c_hidden = channels[0]
    for level, c in enumerate(channels):
        block_input = hidden
        for _ in range(layers[level]):
            live.block(size(c_hidden, level) * 0 + RESNET_IN * size(c_hidden, level) + RESNET_OUT * size(c, level))
            out = live.new(size(c, level))
            if hidden != block_input and hidden not in skips:
                live.free(hidden)
            hidden, c_hidden = out, c
            if down_attention[level]:
                live.block(TRANSFORMER * size(c, level) + attention_maps(level))
                out = live.new(size(c, level))
                live.free(hidden)
                hidden = out
            skips.append(hidden)
        if level < levels - 1:
            live.block(DOWNSAMPLE * size(c, level))
            hidden = live.new(size(c, level + 1))
            skips.append(hidden)
    # mid block: resnet, transformer, resnet at the coarsest level
    last, c = levels - 1, channels[-1]
    for transient in (RESNET_IN * size(c, last) + RESNET_OUT * size(c, last), TRANSFORMER * size(c, last)):
        live.block(transient + (attention_maps(last) if transient == TRANSFORMER * size(c, last) else 0.0))
        out = live.new(size(c, last))
        if hidden not in skips:
            live.free(hidden)
        hidden = out
    live.block(RESNET_IN * size(c, last) + RESNET_OUT * size(c, last))
    out = live.new(size(c, last))
    live.free(hidden)
    hidden = out
    # up blocks, coarsest first; the caller holds the block's input and all of its skips until the block returns
    for index, level in enumerate(reversed(range(levels))):
        c = channels[level]
        count = layers[level] + 1
        popped, skips = skips[-count:], skips[:-count]
        block_input = hidden
        for skip in reversed(popped):
            concat_channels = c_hidden + _channels_of(live, skip, level, images, area)
            concat = live.new(size(concat_channels, level))
            if hidden != block_input:
                live.free(hidden)
            live.block(RESNET_IN * size(concat_channels, level) + RESNET_OUT * size(c, level))
            out = live.new(size(c, level))
            live.free(concat)
            hidden, c_hidden = out, c
            if up_attention[index]:
                live.block(TRANSFORMER * size(c, level) + attention_maps(level))
                out = live.new(size(c, level))
                live.free(hidden)
                hidden = out
        if level > 0:
            live.block(UPSAMPLE * size(c, level - 1))
            out = live.new(size(c, level - 1))
            live.free(hidden)
            hidden = out
        live.free(block_input, *popped)
    live.block(2 * size(channels[0], 0))  # norm and activation before conv_out
    return live.peak


def _channels_of(live: _Live, tensor: int, level: int, images: int, area) -> int:
    return round(live.tensors[tensor] / (images * area(level)))


def _decoder_peak(config: Mapping[str, Any], frames: int, latent_channels: int, h: int, w: int, maps: bool) -> float:
    """Peak elements of the temporal decoder on ``frames`` latents of ``h x w`` (no skip connections)."""
    channels = list(config["block_out_channels"])[::-1]
    layers = int(config.get("layers_per_block", 2))

    def size(c: int, level: int) -> float:  # level 0: latent resolution, doubling per up block
        return float(frames) * c * (h * 2**level) * (w * 2**level)

    live = _Live()
    z = live.new(size(latent_channels, 0))
    hidden = live.new(size(channels[0], 0))
    live.block(0)
    live.free(z)
    c_hidden = channels[0]

    def resnet(c_in: int, c_out: int, level: int, holder: int | None) -> None:
        nonlocal hidden
        live.block(RESNET_IN * size(c_in, level) + RESNET_OUT * size(c_out, level))
        out = live.new(size(c_out, level))
        if hidden != holder:
            live.free(hidden)
        hidden = out

    resnet(c_hidden, c_hidden, 0, None)  # mid block: resnet, then (attention, resnet) for layers >= 2
    if layers >= 2:
        maps_bytes = ATTENTION_MAPS * frames * (h * w) ** 2 if maps else 0.0
        live.block(VAE_ATTENTION * size(c_hidden, 0) + maps_bytes)
        out = live.new(size(c_hidden, 0))
        live.free(hidden)
        hidden = out
        for _ in range(layers - 1):
            resnet(c_hidden, c_hidden, 0, None)
    for level, c in enumerate(channels):
        block_input = hidden
        for _ in range(layers + 1):
            resnet(c_hidden, c, level, block_input)
            c_hidden = c
        if level < len(channels) - 1:
            live.block(UPSAMPLE * size(c, level + 1))
            out = live.new(size(c, level + 1))
            live.free(hidden)
            hidden = out
        if block_input != hidden:
            live.free(block_input)
    live.block(2 * size(c_hidden, len(channels) - 1))  # norm and activation before conv_out
    return live.peak


def _encoder_peak(config: Mapping[str, Any], images: int, height: int, width: int, maps: bool) -> float:
    """Peak elements of the VAE encoder (2D) on ``images`` of ``height x width``."""
    channels = list(config["block_out_channels"])
    layers = int(config.get("layers_per_block", 2))

    def size(c: int, level: int) -> float:
        return float(images) * c * math.ceil(height / 2**level) * math.ceil(width / 2**level)

    live = _Live()
    x = live.new(size(3, 0))
    hidden = live.new(size(channels[0], 0))
    live.block(0)
    c_hidden = channels[0]
    for level, c in enumerate(channels):
        block_input = hidden
        for _ in range(layers):
            live.block(max(RESNET_2D_IN * size(c_hidden, level), RESNET_2D_OUT * size(c, level)))
            out = live.new(size(c, level))
            if hidden != block_input:
                live.free(hidden)
            hidden, c_hidden = out, c
        if level < len(channels) - 1:
            live.block(DOWNSAMPLE * size(c, level))
            out = live.new(size(c, level + 1))
            live.free(hidden)
            hidden = out
        if block_input != hidden:
            live.free(block_input)
    last = len(channels) - 1
    tokens = math.ceil(height / 2**last) * math.ceil(width / 2**last)
    live.block(max(RESNET_2D_IN, RESNET_2D_OUT) * size(c_hidden, last))
    live.block(VAE_ATTENTION * size(c_hidden, last) + (ATTENTION_MAPS * images * tokens**2 if maps else 0.0))
    live.block(max(RESNET_2D_IN, RESNET_2D_OUT) * size(c_hidden, last))
    live.free(x)
    return live.peak


def _per_level(value, levels: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * levels


# available memory and the check --------------------------------------------------------------------------------


def available_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes a call on ``device`` can still allocate: for CUDA the free device memory plus what torch's caching
    allocator holds unused; for CPU (and MPS, which shares it) the system's available memory, within this process's
    cgroup limit if lower; ``None`` for other devices."""
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

        available = int(psutil.virtual_memory().available)
    except ImportError:
        available = _meminfo_available()
    limit = _cgroup_headroom()
    return min(available, limit) if limit is not None else available


def _meminfo_available() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def _cgroup_headroom() -> int | None:
    """Bytes left under this process's cgroup memory limit (the OOM killer's limit in a container), or None."""
    for limit_file, usage_file, stat_file, inactive in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
            "/sys/fs/cgroup/memory/memory.stat",
            "total_inactive_file",
        ),
    ):
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
                    if key == inactive:
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

    The knobs are named as the sampling options, in backticks (the CLI renames them to its flags); ``hint`` is
    added before them, e.g. the largest size that fits (:func:`largest_fitting_size`).
    """
    if allow_oversize or available is None or estimate.peak_bytes <= margin * available:
        return
    knobs = ["lower `height`/`width` or `num_frames`"]
    if estimate.calls == 1 and estimate.rows > estimate.rows // max(estimate.rows, 1) and _splittable(estimate):
        knobs.append("turn on `split_guidance_batch`")
    if estimate.decode_bytes and estimate.decode_chunk_size > 1:
        knobs.append("a smaller `decode_chunk_size`")
    knobs.append("or pass `allow_oversize` to try anyway")
    hint = f"{hint}; " if hint else ""
    raise ValueError(
        f"this call needs {estimate.describe()} but {format_bytes(available)} is available; {hint}"
        + ", ".join(knobs)
    )


def _splittable(estimate: MemoryEstimate) -> bool:
    """Whether splitting the guidance batch would halve the UNet call (guided layouts have 4 or 2 rows per pair)."""
    return estimate.rows >= 2 and estimate.rows % 2 == 0


def largest_fitting_size(
    unet_config: Mapping[str, Any],
    vae_config: Mapping[str, Any],
    height: int,
    width: int,
    multiple: int,
    available: int,
    margin: float = MARGIN,
    **shape: Any,
) -> tuple[int, int] | None:
    """The largest ``(height, width)`` at the aspect of ``height x width``, in multiples of ``multiple``, whose
    estimate (:func:`estimate_call_memory` with the other arguments ``shape``) fits ``margin`` of ``available``;
    ``None`` when not even one multiple fits."""

    def fits(scale: float) -> tuple[int, int] | None:
        size = (max(multiple, int(height * scale) // multiple * multiple), max(multiple, int(width * scale) // multiple * multiple))
        estimate = estimate_call_memory(unet_config, vae_config, height=size[0], width=size[1], **shape)
        return size if estimate.peak_bytes <= margin * available else None

    if fits(multiple / max(height, width)) is None:
        return None
    low, high = multiple / max(height, width), 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return fits(low)


def format_bytes(count: float) -> str:
    """``812.4 GB``, ``3.2 MB`` (decimal units)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"
