"""The analytic walks behind the estimate: the tensors alive at each block of the UNet, the VAE decoder and the VAE
encoder as their configs describe them, each block's own transients a measured number of channels per position, and
the peak of one stage's walk alone (what ``bench/memory_estimate.py`` and the tests measure)."""

from __future__ import annotations

import math
from collections.abc import Mapping
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
CONV_WEIGHT_COPY = 1.0  # oneDNN reorders a 3x3 conv's weights into a temporary on every call (CPU): 1 copy alive
FIXED_BYTES = 48_000_000  # a first call's kernels and caches (oneDNN): measured 22 MB (tiny UNet), 47 MB (SVD's)
HEAP_LIMIT = 32 * 2**20  # glibc's largest dynamic mmap threshold: smaller blocks may come from the heap
HEAP_FRAGMENTATION = 2.0  # heap grown / its live blocks at their peak (measured up to 1.8)


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
