"""Training checkpoints: the adapter, the optimizer state and the step, as safetensors and JSON.

No pickles: the optimizer's tensors go into one safetensors file, its hyper-parameters and the
grad-scaler state into JSON, so a checkpoint is safe to load from anywhere. Each checkpoint
folder is written atomically (a crash leaves the previous ones intact).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from .adapter import BackwardAdapter
from .attention import rotation_processors
from .files import atomic_folder


def save_checkpoint(
    folder: Path,
    step: int,
    unet: torch.nn.Module,
    optimizer,
    accelerator: Accelerator,
    base_model: str,
    settings: dict,
) -> Path:
    """``folder/step-XXXXXXX/`` with the adapter (deltas from ``base_model``), the optimizer state, the step and
    the run's ``settings`` (its config as a dict), written atomically."""
    final = folder / f"step-{step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    tensors, param_groups = optimizer_tensors(optimizer)
    scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
    meta = {"step": step, "param_groups": param_groups, "scaler": scaler, "config": settings}
    with atomic_folder(final, overwrite=True) as tmp:
        BackwardAdapter.from_rotation_processors(unet, base_model=base_model).save(tmp / "adapter.safetensors")
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps(meta, indent=1))
    return final


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """An optimizer's state as flat tensors ``{"<param index>.<name>": tensor}`` (for safetensors) and its
    JSON-able param groups."""
    state = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": value.detach().cpu().contiguous()
        for index, entries in state["state"].items()
        for key, value in entries.items()
    }
    return tensors, state["param_groups"]


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: list[dict]
) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def prune_checkpoints(folder: Path, keep: int) -> None:
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old)


def list_checkpoints(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("step-*") if p.is_dir())


def load_checkpoint(checkpoint: Path, unet: torch.nn.Module, optimizer, accelerator: Accelerator) -> int:
    """Restore deltas, optimizer and grad-scaler state; return the step to continue from."""
    meta = json.loads((checkpoint / "trainer_state.json").read_text())
    adapter = BackwardAdapter.load(checkpoint / "adapter.safetensors")
    adapter.check_fits(unet)
    with torch.no_grad():
        for layer, processor in rotation_processors(unet).items():
            for current, saved in zip(processor.deltas(), adapter.layer_deltas(layer), strict=True):
                if current is not None:
                    current.copy_(saved)
    restore_optimizer(optimizer, load_file(str(checkpoint / "optimizer.safetensors")), meta["param_groups"])
    if meta["scaler"] is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(meta["scaler"])
    return int(meta["step"])


def find_resume_checkpoint(resume: str, checkpoints: Path) -> Path:
    if resume == "latest":
        found = list_checkpoints(checkpoints)
        if not found:
            raise FileNotFoundError(f"`--resume latest` found no checkpoint in `{checkpoints}`; start without it")
        return found[-1]
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"`{resume}` is not a checkpoint folder (no trainer_state.json)")
    return path
