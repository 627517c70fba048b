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

Its parts: :mod:`.walks` (the measured per-block constants and the walks over the UNet's and the VAE's blocks),
:mod:`.estimate` (a call's :class:`CallShape` and its :class:`MemoryEstimate`), :mod:`.available` (the memory a
device can still allocate) and :mod:`.check` (the check of a pipeline's or a model's call, and the largest size that
fits).
"""

from .available import available_memory
from .check import (
    MARGIN,
    call_shape,
    check_call_fits,
    check_model_call,
    check_pipeline_call,
    estimate_pipeline_call,
    largest_fitting_size,
)
from .estimate import CallShape, MemoryEstimate, estimate_call_memory, format_bytes
from .walks import decode_forward_bytes, encode_forward_bytes, unet_forward_bytes

__all__ = [
    "MARGIN",
    "CallShape",
    "MemoryEstimate",
    "available_memory",
    "call_shape",
    "check_call_fits",
    "check_model_call",
    "check_pipeline_call",
    "decode_forward_bytes",
    "encode_forward_bytes",
    "estimate_call_memory",
    "estimate_pipeline_call",
    "format_bytes",
    "largest_fitting_size",
    "unet_forward_bytes",
]
