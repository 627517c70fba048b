"""Rotated temporal self-attention, fused into one SDPA call (the README's "How it works").

In dual mode the batch entering each temporal self-attention layer holds two halves,
``[forward rows | backward rows]``, row ``r`` of one half pairing with row ``r`` of the other
(the temporal transformer reshapes to ``(batch * h * w, N, C)`` batch-major, so the pipeline's
batch ``[fwd-uncond, fwd-cond, bwd-uncond, bwd-cond]`` arrives that way). With fewer backward
groups than forward ones (``[fwd-uncond, fwd-cond, bwd-cond]``, one unconditional row shared by
both branches) the backward rows pair with the LAST forward rows. The backward half
uses the forward half's attention probabilities rotated by 180 degrees (paper section 3.2):

    A'[i, k] = A[N-1-i, N-1-k]   =>   out_bwd = flip_time(softmax(Q_fwd K_fwd^T / sqrt(d)) @ flip_time(V_bwd))

so the forward queries/keys serve both halves, the backward values are time-flipped, and no
attention map is ever materialised or stored.

The paper's "w/o RA" ablation (section 4.3) fine-tunes W_q, W_k, W_v, W_o of the backward model and lets it attend
with its own queries and keys: a processor with ``backward_attention = "own"`` (set by an adapter that holds W_q /
W_k deltas) runs the backward half that way, in the same call.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

TEMPORAL_SELF_ATTENTION_PATTERN = "temporal_transformer_blocks.<i>.attn1"
_TEMPORAL_SELF_ATTENTION = re.compile(r"(^|\.)temporal_transformer_blocks\.\d+\.attn1$")


class RotatedTemporalAttnProcessor(nn.Module):
    """Attention processor for one temporal self-attention layer of an SVD UNet.

    With ``mode="off"`` it is diffusers' default SDPA processor. In ``mode="dual"`` (see :func:`dual_mode`) the input
    ``hidden_states`` of shape ``(2 * R, N, C)`` is ``[forward rows | backward rows]`` (or, with ``groups``, more
    forward rows than backward ones, :func:`split_dual_batch`); the forward
    rows attend normally with the base weights, the backward rows use the forward rows' rotated
    attention probabilities, values ``W_v + delta_v`` and output ``W_o + delta_o`` (the backward
    adapter). ``delta_*`` are ``None`` when no adapter is loaded (backward branch = base weights).

    The deltas are parameters so that training can optimise exactly them; they live on this
    processor, which the ``Attention`` module registers as a submodule.

    Training can also run the two halves as two calls (see :func:`recording_forward`): a
    ``"record"`` call over forward rows keeps this layer's forward queries and keys, and the
    following ``"replay"`` call over backward rows attends with them. Each processor keeps only
    its own layer's tensors, so re-running a layer (gradient checkpointing) reads the same ones.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mode = "off"  # "off" | "dual" | "record" | "replay"
        self.groups = (1, 1)  # dual mode: (forward, backward) groups of equal size in the batch (dual_mode sets it)
        self._recorded_qk: tuple[torch.Tensor, torch.Tensor] | None = None
        self.delta_v: nn.Parameter | None = None
        self.delta_o: nn.Parameter | None = None
        self.delta_o_bias: nn.Parameter | None = None
        self.delta_q: nn.Parameter | None = None
        self.delta_k: nn.Parameter | None = None
        self._default = AttnProcessor2_0()

    def set_deltas(
        self,
        delta_v: torch.Tensor | None,
        delta_o: torch.Tensor | None,
        delta_o_bias: torch.Tensor | None = None,
        delta_q: torch.Tensor | None = None,
        delta_k: torch.Tensor | None = None,
    ) -> None:
        """Set the backward branch's weight deltas (``None`` removes them). W_q / W_k deltas make the backward
        branch attend with its own queries and keys (the "w/o RA" ablation)."""
        self.delta_v = _as_parameter(delta_v)
        self.delta_o = _as_parameter(delta_o)
        self.delta_o_bias = _as_parameter(delta_o_bias)
        self.delta_q = _as_parameter(delta_q)
        self.delta_k = _as_parameter(delta_k)

    def deltas(self) -> tuple[torch.Tensor | None, ...]:
        """``(delta W_v, delta W_o, delta b_o, delta W_q, delta W_k)``, ``None`` where absent."""
        return self.delta_v, self.delta_o, self.delta_o_bias, self.delta_q, self.delta_k

    @property
    def backward_attention(self) -> str:
        """``"rotated"`` (the paper: the forward rows' maps, rotated) or ``"own"`` (W_q / W_k deltas present)."""
        return "own" if self.delta_q is not None or self.delta_k is not None else "rotated"

    def backward_own_attention(self, attn: Attention, x_bwd: torch.Tensor) -> torch.Tensor:
        """The backward rows ``(R, N, C)`` attending with their own adapted queries and keys."""
        q = _split_heads(F.linear(x_bwd, _plus(attn.to_q.weight, self.delta_q), attn.to_q.bias), attn.heads)
        k = _split_heads(F.linear(x_bwd, _plus(attn.to_k.weight, self.delta_k), attn.to_k.bias), attn.heads)
        v = _split_heads(F.linear(x_bwd, self.backward_value_weight(attn), attn.to_v.bias), attn.heads)
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        return _project_out(attn, _merge_heads(out, x_bwd.dtype), *self.backward_output_weight(attn))

    def backward_value_weight(self, attn: Attention) -> torch.Tensor:
        """``W_v`` of the backward branch, shape ``(inner_dim, C)``."""
        return _plus(attn.to_v.weight, self.delta_v)

    def backward_output_weight(self, attn: Attention) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W_o, b_o)`` of the backward branch."""
        weight, bias = attn_output_weight(attn)
        return _plus(weight, self.delta_o), _plus(bias, self.delta_o_bias)

    def forward(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if self.mode == "off":
            return self._default(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("rotated attention is self-attention over frames; it takes no context and no mask")
        if self.mode == "record":
            q, k = forward_queries_keys(attn, hidden_states)
            self._recorded_qk = (q.detach(), k.detach())
            v = _split_heads(attn.to_v(hidden_states), attn.heads)
            out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
            return _project_out(attn, _merge_heads(out, hidden_states.dtype), *attn_output_weight(attn))
        if self.mode == "replay" and self.backward_attention == "own":
            return self.backward_own_attention(attn, hidden_states)  # needs no recorded forward maps
        if self.mode == "replay":
            if self._recorded_qk is None or self._recorded_qk[0].shape[0] != hidden_states.shape[0]:
                raise ValueError("replay needs a recorded forward call over the same rows first")
            out = rotated_values(attn, *self._recorded_qk, hidden_states, self.backward_value_weight(attn))
            return _project_out(attn, out, *self.backward_output_weight(attn))
        x_fwd, x_bwd = split_dual_batch(hidden_states, *self.groups)
        if self.backward_attention == "own":
            y_fwd = self._default(attn, x_fwd, None, None, temb, **kwargs)
            return torch.cat([y_fwd, self.backward_own_attention(attn, x_bwd)])
        weights = self.backward_value_weight(attn), *self.backward_output_weight(attn)
        return rotated_attention(attn, x_fwd, x_bwd, *weights)

    def clear_recording(self) -> None:
        self._recorded_qk = None


def split_dual_batch(
    hidden_states: torch.Tensor, forward_groups: int, backward_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G R, N, C)``, ``G = forward_groups + backward_groups`` groups of R rows -> the forward rows ``(F R, N, C)``
    and the backward rows ``(B' R, N, C)``; the backward rows pair with the last ``B' R`` forward rows."""
    groups = forward_groups + backward_groups
    if not 1 <= backward_groups <= forward_groups or hidden_states.shape[0] % groups:
        raise ValueError(
            f"dual mode needs a batch of [forward | backward] rows, {forward_groups} forward and {backward_groups} "
            f"backward groups of equal size (at most as many backward as forward), got {hidden_states.shape[0]} rows"
        )
    rows = hidden_states.shape[0] // groups * forward_groups
    return hidden_states[:rows], hidden_states[rows:]


def rotated_attention(
    attn: Attention,
    x_fwd: torch.Tensor,
    x_bwd: torch.Tensor,
    value_weight_bwd: torch.Tensor,
    output_weight_bwd: torch.Tensor,
    output_bias_bwd: torch.Tensor | None,
) -> torch.Tensor:
    """Dual-mode temporal attention of the forward rows ``(R, N, C)`` and the backward rows ``(R', N, C)``,
    ``R' <= R``, paired with the last R' forward rows: ``(R + R', N, C_out)``, rows ``[forward | backward]``."""
    q, k = forward_queries_keys(attn, x_fwd)
    v_fwd = _split_heads(attn.to_v(x_fwd), attn.heads)
    v_bwd = _split_heads(F.linear(x_bwd, value_weight_bwd, attn.to_v.bias), attn.heads)
    head_dim, unpaired = v_fwd.shape[-1], x_fwd.shape[0] - x_bwd.shape[0]
    # One softmax(QK^T) serves both branches of a pair of rows: stack the forward values and the time-flipped
    # backward values along the feature axis.
    values = torch.cat([v_fwd[unpaired:], v_bwd.flip(2)], dim=-1)  # (R', H, N, 2D)
    out = F.scaled_dot_product_attention(q[unpaired:], k[unpaired:], values, scale=attn.scale)
    out_fwd, out_bwd = out.split(head_dim, dim=-1)
    if unpaired:
        alone = F.scaled_dot_product_attention(q[:unpaired], k[:unpaired], v_fwd[:unpaired], scale=attn.scale)
        out_fwd = torch.cat([alone, out_fwd])
    y_fwd = attn.to_out[0](_merge_heads(out_fwd, x_fwd.dtype))
    y_bwd = _project_out(attn, _merge_heads(out_bwd.flip(2), x_bwd.dtype), output_weight_bwd, output_bias_bwd)
    return torch.cat([attn.to_out[1](y_fwd) / attn.rescale_output_factor, y_bwd])


def forward_queries_keys(attn: Attention, x_fwd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys of the forward rows, ``(R, N, C) -> 2 x (R, H, N, D)``."""
    return _split_heads(attn.to_q(x_fwd), attn.heads), _split_heads(attn.to_k(x_fwd), attn.heads)


def rotated_values(
    attn: Attention, q_fwd: torch.Tensor, k_fwd: torch.Tensor, x_bwd: torch.Tensor, value_weight_bwd: torch.Tensor
) -> torch.Tensor:
    """``flip_time(softmax(Q_fwd K_fwd^T / sqrt(d)) @ flip_time(V_bwd))`` merged to ``(R, N, H*D)``."""
    v_bwd = _split_heads(F.linear(x_bwd, value_weight_bwd, attn.to_v.bias), attn.heads)
    out = F.scaled_dot_product_attention(q_fwd, k_fwd, v_bwd.flip(2), scale=attn.scale)
    return _merge_heads(out.flip(2), x_bwd.dtype)


def attn_output_weight(attn: Attention) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W_o, b_o)`` of the base output projection."""
    return attn.to_out[0].weight, attn.to_out[0].bias


def _project_out(attn: Attention, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return attn.to_out[1](F.linear(x, weight, bias)) / attn.rescale_output_factor


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:  # (R, N, H*D) -> (R, H, N, D)
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # (R, H, N, D) -> (R, N, H*D)
    return x.transpose(1, 2).flatten(2).to(dtype)


def temporal_self_attention_names(unet: nn.Module) -> list[str]:
    """Module paths of the temporal self-attention layers (``*.temporal_transformer_blocks.0.attn1``)."""
    return [name for name, _ in unet.named_modules() if _TEMPORAL_SELF_ATTENTION.search(name)]


def expected_temporal_self_attention_layers(config) -> int:
    """How many temporal self-attention layers a ``UNetSpatioTemporalConditionModel`` config implies (16 for SVD)."""
    n_blocks = len(config.down_block_types)
    per_block = _per_block(config.transformer_layers_per_block, n_blocks)
    layers = _per_block(config.layers_per_block, n_blocks)
    down = sum(layers[i] * per_block[i] for i, kind in enumerate(config.down_block_types) if "CrossAttn" in kind)
    up_per_block = per_block[::-1]
    up = sum(
        (layers[::-1][i] + 1) * up_per_block[i] for i, kind in enumerate(config.up_block_types) if "CrossAttn" in kind
    )
    return down + per_block[-1] + up


def install_rotation(unet: nn.Module) -> dict[str, RotatedTemporalAttnProcessor]:
    """Put a :class:`RotatedTemporalAttnProcessor` on every temporal self-attention layer of ``unet``.

    Idempotent: layers that already have one keep it (and its deltas); other layers keep their
    processors. Returns ``{layer name: processor}``. Raises ``ValueError`` when the model does not
    have the structure of SVD's ``UNetSpatioTemporalConditionModel``: as many temporal
    self-attention layers as its config implies (16 for SVD/SVD-XT), each a plain self-attention.
    """
    names = temporal_self_attention_names(unet)
    config = getattr(unet, "config", None)
    expected = expected_temporal_self_attention_layers(config) if hasattr(config, "down_block_types") else None
    if not names or len(names) != expected:
        raise ValueError(
            f"expected {expected} temporal self-attention layers (`*.{TEMPORAL_SELF_ATTENTION_PATTERN}`, 16 in "
            f"Stable Video Diffusion), found {len(names)} in {type(unet).__name__}; "
            "use a diffusers UNetSpatioTemporalConditionModel"
        )
    processors = {}
    for name in names:
        attn = unet.get_submodule(name)
        _check_plain_self_attention(name, attn)
        if not isinstance(attn.processor, RotatedTemporalAttnProcessor):
            attn.set_processor(RotatedTemporalAttnProcessor())
        processors[name] = attn.processor
    return processors


def rotation_processors(unet: nn.Module) -> dict[str, RotatedTemporalAttnProcessor]:
    """The installed rotation processors by layer name (empty if none are installed)."""
    return {
        name: module.processor
        for name, module in unet.named_modules()
        if isinstance(getattr(module, "processor", None), RotatedTemporalAttnProcessor)
    }


def remove_rotation(unet: nn.Module) -> None:
    """Restore diffusers' default processor (and drop any adapter deltas) on the rotated layers."""
    for name in rotation_processors(unet):
        unet.get_submodule(name).set_processor(AttnProcessor2_0())


@contextmanager
def dual_mode(unet: nn.Module, forward_groups: int = 1, backward_groups: int = 1) -> Iterator[None]:
    """Within this block the UNet's batch is ``[forward rows | backward rows]``: ``forward_groups`` then
    ``backward_groups`` groups of equal size, the backward groups pairing with the last forward ones (default: two
    halves).

    Needs :func:`install_rotation` first. Dual mode is switched off again on exit, also on error,
    so the same UNet keeps serving plain image-to-video calls.
    """
    processors = list(rotation_processors(unet).values())
    for processor in processors:
        processor.groups = (forward_groups, backward_groups)
    try:
        with _processor_mode(unet, "dual"):
            yield
    finally:
        for processor in processors:
            processor.groups = (1, 1)


@contextmanager
def recording_forward(unet: nn.Module) -> Iterator[None]:
    """Run the forward rows alone (typically under ``torch.no_grad``), keeping each layer's queries and keys."""
    with _processor_mode(unet, "record"):
        yield


@contextmanager
def replaying_backward(unet: nn.Module) -> Iterator[None]:
    """Run the backward rows alone with the rotated attention of the preceding :func:`recording_forward` call.

    The recorded tensors are dropped on exit; run ``loss.backward()`` inside the block when gradient
    checkpointing re-runs the layers.
    """
    try:
        with _processor_mode(unet, "replay"):
            yield
    finally:
        for processor in rotation_processors(unet).values():
            processor.clear_recording()


@contextmanager
def _processor_mode(unet: nn.Module, mode: str) -> Iterator[None]:
    processors = list(rotation_processors(unet).values())
    if not processors:
        raise ValueError("no rotated attention processors installed; call install_rotation(unet) first")
    with processors_set(processors, mode=mode):
        yield


@contextmanager
def processors_set(processors: list, **settings: object) -> Iterator[None]:
    """Within the block every processor has ``settings`` (its ``mode`` among them); after it, also on error, its mode
    is ``"off"`` again, so the same network keeps serving plain calls."""
    for processor in processors:
        for name, value in settings.items():
            setattr(processor, name, value)
    try:
        yield
    finally:
        for processor in processors:
            processor.mode = "off"


def _check_plain_self_attention(name: str, attn: nn.Module) -> None:
    if not isinstance(attn, Attention):
        raise ValueError(f"`{name}` is a {type(attn).__name__}, not a diffusers Attention layer")
    unsupported = [
        flag
        for flag, present in [
            ("spatial_norm", attn.spatial_norm is not None),
            ("group_norm", attn.group_norm is not None),
            ("norm_q/norm_k", attn.norm_q is not None or attn.norm_k is not None),
            ("residual_connection", attn.residual_connection),
            ("cross-attention", attn.is_cross_attention),
        ]
        if present
    ]
    if unsupported:
        raise ValueError(f"temporal attention `{name}` uses {', '.join(unsupported)}, which rotation does not support")


def _as_parameter(tensor: torch.Tensor | None) -> nn.Parameter | None:
    if tensor is None:
        return None
    return tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor, requires_grad=False)


def _plus(base: torch.Tensor | None, delta: torch.Tensor | None) -> torch.Tensor | None:
    if delta is None:
        return base
    if base is None:
        return delta
    return base + delta.to(base.dtype)


def _per_block(value: int | tuple[int, ...] | list[int], n_blocks: int) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [value] * n_blocks
