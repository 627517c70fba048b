"""The check that refuses a call that cannot fit, in one line naming the largest size that would: of a loaded
pipeline's call, or of a model's call from its configs before it loads."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

from .available import available_memory
from .estimate import CallShape, MemoryEstimate, format_bytes

MARGIN = 0.9  # refuse a call whose estimate is above this fraction of the available memory


def estimate_pipeline_call(
    pipe, config, batch_size: int = 1, output_type: str = "pil", *, include_weights: bool | None = None
) -> MemoryEstimate:
    """:func:`estimate_call_memory` of ``pipe(first, last, config, output_type=...)`` on ``batch_size`` pairs.

    ``config`` is the call's :class:`~inbetween.config.SamplingConfig` with its sizes filled in (what
    ``pipe.sampling_config`` returns). ``include_weights`` (default: when model CPU offload keeps the weights off the
    execution device) counts the largest component's weights, which offload brings onto the device for its stage.
    Attention maps are counted on MPS, glibc's heap on Linux CPUs.
    """
    return _pipeline_shape(pipe, config, batch_size, output_type, include_weights).estimate()


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

    device = torch.device(device)
    shape = call_shape(
        unet_config,
        vae_config,
        config,
        batch_size=batch_size,
        output_type=output_type,
        dtype_bytes=dtype_bytes,
        weight_bytes=weight_bytes,
        device=device,
    )
    return _check(shape, device, allow_oversize)


def call_shape(
    unet_config: Mapping[str, Any],
    vae_config: Mapping[str, Any],
    config,
    *,
    batch_size: int,
    output_type: str,
    dtype_bytes: int,
    vae_dtype_bytes: int | None = None,
    weight_bytes: int = 0,
    device,
) -> CallShape:
    """The shape of a call on ``config`` (a :class:`~inbetween.config.SamplingConfig`; a missing frame count or
    chunk size is the model's default) on ``device`` (a ``torch.device``): the layout of the sampler's request with
    the most rows, which sets the peak; attention maps where SDPA falls back to the math kernel (MPS), glibc's heap
    on Linux CPUs."""
    from ..cost import largest_request

    layout = largest_request(config)
    num_frames = config.num_frames or int(unet_config.get("num_frames", 25))
    return CallShape(
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
        vae_dtype_bytes=vae_dtype_bytes,
        decode=output_type != "latent",
        weight_bytes=weight_bytes,
        attention_matrices=device.type == "mps",
        cpu_heap=device.type == "cpu" and sys.platform.startswith("linux"),
        guided=config.guided,
    )


def _pipeline_shape(pipe, config, batch_size: int, output_type: str, include_weights: bool | None) -> CallShape:
    """The shape of a pipeline's call, its weights counted where model CPU offload brings them onto the device."""
    device = pipe._execution_device
    components = [pipe.unet, pipe.vae, pipe.image_encoder]
    if include_weights is None:  # model CPU offload: the weights come onto the device for their stage
        include_weights = any(_device_type(module) not in (None, device.type) for module in components)
    return call_shape(
        pipe.unet.config,
        pipe.vae.config,
        config,
        batch_size=batch_size,
        output_type=output_type,
        dtype_bytes=pipe.unet.dtype.itemsize,
        vae_dtype_bytes=pipe.vae.dtype.itemsize,
        weight_bytes=max(_weight_bytes(module) for module in components) if include_weights else 0,
        device=device,
    )


def _check(shape: CallShape, device, allow_oversize: bool) -> MemoryEstimate:
    estimate = shape.estimate()
    available = None if allow_oversize else available_memory(device)
    if available is None or estimate.peak_bytes <= MARGIN * available:
        return estimate
    multiple = 2 ** (len(shape.vae_config["block_out_channels"]) - 1)
    multiple *= 2 ** (len(shape.unet_config["block_out_channels"]) - 1)
    size = largest_fitting_size(
        lambda height, width: dataclasses.replace(shape, height=height, width=width).estimate().peak_bytes,
        shape.height,
        shape.width,
        multiple,
        MARGIN * available,
    )
    if size is None:
        hint = "not even the smallest size fits these settings"
    else:
        hint = f"about {size[1]}x{size[0]} fits at this aspect and these settings"
    check_call_fits(estimate, available, hint=hint)
    raise AssertionError("check_call_fits accepted an estimate above the margin")  # pragma: no cover


def _device_type(module) -> str | None:
    parameter = next(iter(module.parameters()), None)
    return None if parameter is None else parameter.device.type


def _weight_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


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
