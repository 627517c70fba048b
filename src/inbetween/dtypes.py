"""Naming torch dtypes: the one place that turns a user's ``"float16"`` / ``"auto"`` into a torch dtype."""

from __future__ import annotations

import torch

from .config import DTYPE_NAMES

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


def resolve_dtype(dtype: torch.dtype | str | None, default: torch.dtype, what: str = "dtype") -> torch.dtype:
    """``dtype`` as a torch dtype (``"float16"``, ``torch.float16``, ...); ``None`` or ``"auto"``: ``default``."""
    if dtype is None or dtype == "auto":
        return default
    if isinstance(dtype, str):
        if dtype.removeprefix("torch.") not in DTYPES:
            raise ValueError(f"{what} must be auto, {', '.join(DTYPES)}; got {dtype!r}")
        return DTYPES[dtype.removeprefix("torch.")]
    if not dtype.is_floating_point:
        raise ValueError(f"{what} must be a floating-point dtype, got {dtype}")
    return dtype


def model_dtype(name: str | None, device: torch.device | str) -> torch.dtype:
    """The dtype to load a video model in: ``name``, or for ``"auto"`` float16 on CUDA and float32 elsewhere."""
    return resolve_dtype(name, torch.float16 if torch.device(device).type == "cuda" else torch.float32)
