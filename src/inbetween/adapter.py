"""The backward adapter: the backward model's W_v / W_o deltas, one small safetensors file.

The paper fine-tunes only the value and output projections of the temporal self-attention
layers (section 3.2), so the backward model is the base UNet plus these deltas: 24.8 M
parameters for SVD (a 49.6 MB file in fp16, 99.1 MB in fp32) instead of a 1.5 B-parameter UNet copy.
Keys are the UNet's own parameter names, e.g.
``mid_block.attentions.0.temporal_transformer_blocks.0.attn1.to_v.weight``.

Precision: deltas extracted from two UNets (:meth:`BackwardAdapter.from_unets`,
:func:`convert_full_unet_checkpoint`) are computed in float32 and stored in the base weights'
dtype unless ``dtype`` says otherwise: fp16 deltas for SVD's fp16 variant. The file records its
dtype in the metadata; :meth:`BackwardAdapter.apply_to` casts the deltas to the UNet's dtype, so
any adapter loads into any UNet. On an fp32 UNet, fp16 deltas of a 1e-4-scale fine-tuning give the
fine-tuned weights 180x more accurately than storing those weights in fp16; on an fp16 UNet the sum is
rounded to fp16 anyway, so fp16 and fp32 deltas give the same weights (bench/adapter_dtype.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .attention import install_rotation, rotation_processors, temporal_self_attention_names
from .dtypes import resolve_dtype
from .files import atomic_output
from .hub import find_unet_weight_files

FORMAT_NAME = "inbetween.backward_adapter"
FORMAT_VERSION = "1"
VALUE_WEIGHT = "to_v.weight"
OUTPUT_WEIGHT = "to_out.0.weight"
OUTPUT_BIAS = "to_out.0.bias"
QUERY_WEIGHT = "to_q.weight"  # only in the "w/o RA" ablation's adapter (own attention)
KEY_WEIGHT = "to_k.weight"
# In the order of RotatedTemporalAttnProcessor.deltas() / set_deltas().
ADAPTED_PARAMETERS = (VALUE_WEIGHT, OUTPUT_WEIGHT, OUTPUT_BIAS, QUERY_WEIGHT, KEY_WEIGHT)
OPTIONAL_PARAMETERS = (OUTPUT_BIAS, QUERY_WEIGHT, KEY_WEIGHT)  # stored only where the fine-tuning changed them


@dataclass
class BackwardAdapter:
    """Deltas of the backward model's temporal self-attention W_v / W_o (and optionally b_o; W_q / W_k only in
    the paper's "w/o RA" ablation, whose backward branch attends with its own queries and keys).

    Args:
        deltas: ``{"<layer>.to_v.weight": (C, C), "<layer>.to_out.0.weight": (C, C), ...}`` where
            ``<layer>`` is a temporal self-attention module path of the UNet.
        base_model: id or path of the model the deltas were computed against (informational).
    """

    deltas: dict[str, torch.Tensor]
    base_model: str = ""
    extra_metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.deltas:
            layer, param = _split_key(key)
            if param not in ADAPTED_PARAMETERS or not layer:
                raise ValueError(f"adapter key `{key}` is not a temporal attention {' / '.join(ADAPTED_PARAMETERS)}")

    @property
    def layers(self) -> list[str]:
        """Layer names, in a stable order."""
        return sorted({_split_key(key)[0] for key in self.deltas})

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.deltas.values())

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.deltas.values())).dtype

    @property
    def backward_attention(self) -> str:
        """``"rotated"`` (the paper's adapter: W_v / W_o) or ``"own"`` (W_q / W_k deltas too: the ablation)."""
        own = any(_split_key(key)[1] in (QUERY_WEIGHT, KEY_WEIGHT) for key in self.deltas)
        return "own" if own else "rotated"

    def layer_deltas(self, layer: str) -> tuple[torch.Tensor | None, ...]:
        """``(delta W_v, delta W_o, delta b_o, delta W_q, delta W_k)`` of one layer (``None`` where absent)."""
        return tuple(self.deltas.get(f"{layer}.{param}") for param in ADAPTED_PARAMETERS)

    # construction -------------------------------------------------------------------------

    @classmethod
    def from_unets(
        cls,
        base_unet: nn.Module,
        finetuned_unet: nn.Module,
        include_bias: bool = True,
        dtype: torch.dtype | str | None = None,
        include_query_key: bool = False,
    ) -> BackwardAdapter:
        """Extract ``finetuned - base`` for W_v / W_o (and b_o where it changed) of the temporal self-attention;
        W_q / W_k (where they changed) only with ``include_query_key``: they make an own-attention ("w/o RA")
        adapter, which rounding noise between two copies of the base weights must never do silently.

        The difference is taken in float32 and kept in ``dtype``: by default (``None`` or ``"auto"``) the base
        weights' dtype, so an fp16 UNet gives an fp16 adapter (half the bytes; :meth:`save` keeps it).
        """
        base_state, tuned_state = base_unet.state_dict(), finetuned_unet.state_dict()
        return cls._from_states(
            base_state,
            tuned_state,
            temporal_self_attention_names(base_unet),
            include_bias,
            base_model=_model_id(base_unet),
            dtype=dtype,
            include_query_key=include_query_key,
        )

    @classmethod
    def from_rotation_processors(cls, unet: nn.Module, base_model: str = "") -> BackwardAdapter:
        """The deltas currently installed on ``unet``'s rotation processors (e.g. after training)."""
        deltas = {}
        for layer, processor in rotation_processors(unet).items():
            for param, delta in zip(ADAPTED_PARAMETERS, processor.deltas(), strict=True):
                if delta is not None:
                    deltas[f"{layer}.{param}"] = delta.detach().clone()
        if not deltas:
            raise ValueError("the UNet's rotation processors hold no adapter deltas")
        return cls(deltas, base_model=base_model or _model_id(unet))

    @classmethod
    def _from_states(
        cls,
        base: Mapping[str, torch.Tensor],
        tuned: Mapping[str, torch.Tensor],
        layers: list[str],
        include_bias: bool,
        base_model: str,
        dtype: torch.dtype | str | None = None,
        include_query_key: bool = False,
    ) -> BackwardAdapter:
        if not layers:
            raise ValueError("no temporal self-attention layers (`*.temporal_transformer_blocks.0.attn1`) found")
        first = f"{layers[0]}.{VALUE_WEIGHT}"
        dtype = resolve_dtype(dtype, base[first].dtype if first in base else torch.float32, "adapter dtype")
        deltas = {}
        for layer in layers:
            for param in ADAPTED_PARAMETERS:
                key = f"{layer}.{param}"
                if key not in base:
                    continue
                if key not in tuned:
                    raise ValueError(f"the fine-tuned UNet has no `{key}`; is it the same architecture as the base?")
                if base[key].shape != tuned[key].shape:
                    raise ValueError(
                        f"`{key}` is {tuple(tuned[key].shape)} in the fine-tuned UNet but "
                        f"{tuple(base[key].shape)} in the base; they are different architectures"
                    )
                if (param == OUTPUT_BIAS and not include_bias) or (
                    param in (QUERY_WEIGHT, KEY_WEIGHT) and not include_query_key
                ):
                    continue
                if param in OPTIONAL_PARAMETERS and _equal_at_coarser_precision(base[key], tuned[key]):
                    continue  # unchanged (an fp32 copy next to its fp16 one differs by rounding only)
                delta = tuned[key].float() - base[key].float()
                deltas[key] = delta.to(dtype)
        return cls(deltas, base_model=base_model)

    # files ------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, dtype: torch.dtype | str | None = None, overwrite: bool = False) -> Path:
        """Write one safetensors file with metadata (its ``dtype`` included), atomically.

        ``dtype`` defaults to the adapter's own (for an adapter made by :meth:`from_unets` or
        :func:`convert_full_unet_checkpoint`, the base weights' dtype).
        """
        dtype = resolve_dtype(dtype, self.dtype, "adapter dtype")
        tensors = {key: t.detach().to("cpu", dtype).contiguous() for key, t in self.deltas.items()}
        metadata = {
            **self.extra_metadata,
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "base_model": self.base_model,
            "layers": json.dumps(self.layers),
            "dtype": str(dtype).removeprefix("torch."),
        }
        with atomic_output(path, overwrite=overwrite) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> BackwardAdapter:
        """Read an adapter written by :meth:`save` (safetensors only; nothing is unpickled)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"adapter `{path}` not found; pass the .safetensors file written by "
                "`inbetween convert-checkpoint` or `inbetween train`"
            )
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                deltas = {key: f.get_tensor(key) for key in f.keys()}
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"cannot read adapter `{path}` as safetensors ({exc})") from exc
        if metadata.get("format") != FORMAT_NAME:
            raise ValueError(
                f"`{path}` is not an inbetween backward adapter; convert a fine-tuned UNet with "
                "`inbetween convert-checkpoint`"
            )
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"adapter `{path}` has format version {metadata.get('format_version')}, this "
                f"inbetween reads version {FORMAT_VERSION}; upgrade inbetween"
            )
        extra = {
            k: v for k, v in metadata.items() if k not in {"format", "format_version", "base_model", "layers", "dtype"}
        }
        return cls(deltas, base_model=metadata.get("base_model", ""), extra_metadata=extra)

    # applying ---------------------------------------------------------------------------------

    def check_fits(self, unet: nn.Module) -> None:
        """Raise ``ValueError`` unless every delta matches a temporal attention parameter of ``unet`` in shape,
        and every temporal self-attention layer of ``unet`` is covered."""
        unet_layers = set(temporal_self_attention_names(unet))
        missing = sorted(unet_layers - set(self.layers))
        unknown = sorted(set(self.layers) - unet_layers)
        if missing or unknown:
            detail = (
                f"layer `{(unknown or missing)[0]}` is {'not in the model' if unknown else 'missing from the adapter'}"
            )
            raise ValueError(
                f"the backward adapter does not fit this UNet ({len(unknown)} unknown, {len(missing)} "
                f"missing layers; {detail}); use an adapter made for {self.base_model or 'this model'}"
            )
        state_shapes = {name: p.shape for name, p in unet.named_parameters()}
        for key, delta in self.deltas.items():
            if state_shapes.get(key) != delta.shape:
                raise ValueError(
                    f"the backward adapter does not fit this UNet: `{key}` is {tuple(delta.shape)} in "
                    f"the adapter but {tuple(state_shapes.get(key, ()))} in the model"
                )

    def apply_to(self, unet: nn.Module) -> None:
        """Install rotation on ``unet`` and load these deltas into its processors (base weights untouched).

        The deltas are cast to the UNet's device and dtype, whatever dtype they were stored in.
        """
        self.check_fits(unet)
        reference = next(unet.parameters())
        for layer, processor in install_rotation(unet).items():
            processor.set_deltas(
                *(None if d is None else d.to(reference.device, reference.dtype) for d in self.layer_deltas(layer))
            )


def convert_full_unet_checkpoint(
    finetuned: str | os.PathLike,
    base: str | os.PathLike,
    variant: str | None = None,
    dtype: torch.dtype | str | None = None,
) -> BackwardAdapter:
    """Turn a full fine-tuned UNet (e.g. the authors' released 14-frame checkpoint) into an adapter.

    ``finetuned`` and ``base`` are UNet folders, pipeline folders (their ``unet/`` is used) or Hub ids;
    ``variant`` is the base's weights variant (e.g. ``"fp16"``). Only the W_v / W_o tensors are read
    (lazily, from safetensors), so neither UNet is built. The deltas are kept in ``dtype``; by default
    (``None`` or ``"auto"``) that of the base's weights: fp16 for SVD's fp16 variant, fp32 for its main weights.
    """
    tuned_files = find_unet_weight_files(finetuned, variant=None)
    base_files = find_unet_weight_files(base, variant=variant)
    layers = sorted(
        {
            key.rsplit(".", 2)[0]
            for key in _keys(base_files)
            if key.endswith("attn1." + VALUE_WEIGHT) and ".temporal_transformer_blocks." in key
        }
    )
    wanted = [f"{layer}.{param}" for layer in layers for param in ADAPTED_PARAMETERS]
    base_state = _read_tensors(base_files, wanted)
    tuned_state = _read_tensors(tuned_files, wanted)
    return BackwardAdapter._from_states(
        base_state, tuned_state, layers, include_bias=True, base_model=str(base), dtype=dtype
    )


def _keys(files: list[Path]) -> list[str]:
    keys = []
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            keys.extend(f.keys())
    return keys


def _read_tensors(files: list[Path], wanted: list[str]) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            tensors.update({key: f.get_tensor(key) for key in set(f.keys()) & set(wanted)})
    return tensors


def _equal_at_coarser_precision(a: torch.Tensor, b: torch.Tensor) -> bool:
    coarse = a.dtype if torch.finfo(a.dtype).eps >= torch.finfo(b.dtype).eps else b.dtype
    return torch.equal(a.to(coarse), b.to(coarse))


def _split_key(key: str) -> tuple[str, str]:
    """``"<layer>.to_v.weight"`` -> ``("<layer>", "to_v.weight")``; ``("", key)`` for a foreign key."""
    for param in ADAPTED_PARAMETERS:
        if key.endswith("." + param):
            return key[: -len(param) - 1], param
    return "", key


def _model_id(unet: nn.Module) -> str:
    return str(getattr(getattr(unet, "config", None), "_name_or_path", "") or "")
