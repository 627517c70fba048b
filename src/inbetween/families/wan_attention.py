"""Rotated full self-attention for Wan's transformer (the attention rotation of Wang et al., ICLR 2025, on a DiT).

SVD attends over time in a separate temporal layer; Wan has ONE self-attention over all ``T' x H' x W'`` tokens of a
video (token order ``(t, h, w)``, rotary positions split over the three axes). The paper's rotation of the forward
map by 180 degrees in time holds there token for token:

    A'[(i, p), (j, q)] = A[(T'-1-i, p), (T'-1-j, q)]
    =>  out_bwd = flip_t( softmax(Q_fwd K_fwd^T / sqrt(d)) @ flip_t(V_bwd) )

so the backward rows use the forward rows' queries and keys (rotary positions applied), on their own values flipped
in time, and the result is flipped back: fused attention over views of the forward rows' Q and K, no map materialised.
In dual mode the batch is ``[forward rows | backward rows]`` as for SVD (:mod:`inbetween.layout`); with fewer
backward groups than forward ones the backward rows pair with the LAST forward rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_wan import WanAttnProcessor
from torch import nn

from ..attention import processors_set

_SELF_ATTENTION = re.compile(r"^blocks\.\d+\.attn1$")


class RotatedWanSelfAttnProcessor:
    """Processor of one Wan self-attention layer (``blocks.<i>.attn1``): diffusers' own processor with ``mode="off"``;
    in ``mode="dual"`` the rotated attention above, ``frames`` latent frames per row (after the time patch)."""

    def __init__(self) -> None:
        self.mode = "off"
        self.groups = (1, 1)  # (forward, backward) groups of equal size in a dual batch
        self.frames = 1
        self._plain = WanAttnProcessor()

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if self.mode == "off":
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        forward_groups, backward_groups = self.groups
        rows = hidden_states.shape[0] // (forward_groups + backward_groups)
        x_fwd, x_bwd = hidden_states.split([forward_groups * rows, backward_groups * rows])  # (R, L, C) each

        query = _heads(attn.norm_q(attn.to_q(x_fwd)), attn.heads)  # (R_f, L, H, D)
        key = _heads(attn.norm_k(attn.to_k(x_fwd)), attn.heads)
        if rotary_emb is not None:
            query, key = apply_rotary(query, *rotary_emb), apply_rotary(key, *rotary_emb)
        values_fwd = _heads(attn.to_v(x_fwd), attn.heads)
        values_bwd = flip_time(_heads(attn.to_v(x_bwd), attn.heads), self.frames)

        # The paired forward rows' Q, K serve the backward values: a second attention over views of them (a cat into
        # one call would copy the paired rows' Q and K, L tokens each, for nothing).
        paired = slice(query.shape[0] - values_bwd.shape[0], None)
        out_fwd = _attend(query, key, values_fwd)
        out_bwd = flip_time(_attend(query[paired], key[paired], values_bwd), self.frames)
        out = torch.cat([out_fwd, out_bwd]).flatten(2, 3).type_as(hidden_states)
        return attn.to_out[1](attn.to_out[0](out))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on ``x`` ``(R, L, H, D)``: consecutive channel pairs rotated by the position's angle
    (``cos`` / ``sin`` ``(1, L, 1, D)``, each angle repeated over its pair)."""
    even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2).type_as(x)


def flip_time(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Tokens ``(R, T' * H' * W', ...)`` in ``(t, h, w)`` order with their time order reversed."""
    return x.unflatten(1, (frames, -1)).flip(1).flatten(1, 2)


def _attend(query: torch.Tensor, key: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Fused attention on ``(R, L, H, D)`` tensors (no map materialised), ``(R, L, H, D)`` out."""
    out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), values.transpose(1, 2))
    return out.transpose(1, 2)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:  # (R, L, H*D) -> (R, L, H, D)
    return x.unflatten(2, (heads, -1))


def self_attention_names(transformer: nn.Module) -> list[str]:
    return [name for name, _ in transformer.named_modules() if _SELF_ATTENTION.match(name)]


def install_rotation(transformer: nn.Module) -> dict[str, RotatedWanSelfAttnProcessor]:
    """Put a :class:`RotatedWanSelfAttnProcessor` on every self-attention layer of ``transformer`` (in place;
    idempotent) and return them by layer name. Off, they are diffusers' processor."""
    processors = {}
    for name in self_attention_names(transformer):
        attn = transformer.get_submodule(name)
        if not isinstance(attn.processor, RotatedWanSelfAttnProcessor):
            attn.set_processor(RotatedWanSelfAttnProcessor())
        processors[name] = attn.processor
    if not processors:
        raise ValueError("the transformer has no `blocks.<i>.attn1` self-attention layer; is it a Wan transformer?")
    return processors


@contextmanager
def dual_mode(transformer: nn.Module, forward_groups: int, backward_groups: int, frames: int) -> Iterator[None]:
    """Within the block, ``transformer``'s batch is ``[forward rows | backward rows]`` of ``frames`` latent frames
    (time patches) each, and the backward rows attend with the forward rows' rotated maps."""
    processors = [transformer.get_submodule(name).processor for name in self_attention_names(transformer)]
    with processors_set(processors, mode="dual", groups=(forward_groups, backward_groups), frames=frames):
        yield
