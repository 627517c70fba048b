"""Which model runs, and where: the single definition of the model options (``--model``, ``--variant``, ``--dtype``,
``--device``, ``--cpu-offload``, ``--adapter``) that every job nests and every front end's flags come from.

Only the values are checked here; whether this machine has the device is :func:`inbetween.loading.pick_device`'s
question, asked by each front end before any work (a config stays valid on any machine).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from .config import DTYPE_NAMES
from .hub import SVD_XT, TINY_WORLD

DTYPES = ("auto", *DTYPE_NAMES)
# What torch can place a model on: a CUDA GPU (the current one, or one by index) or Apple's MPS; "auto" picks.
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICES = "auto, cpu, cuda, cuda:N or mps"


@dataclass(frozen=True)
class ModelConfig:
    """The model (a Hub id, a folder in diffusers' layout, or ``tiny-world``), its weights variant and dtype, the
    device it runs on, CPU offload, and a backward adapter file. Defaults are ``inbetween interpolate``'s."""

    model: str = field(
        default=SVD_XT,
        metadata={
            "help": f"Hub id or folder of an SVD or Wan image-to-video model in diffusers' layout, or `{TINY_WORLD}` "
            "(the small offline model shipped with inbetween)"
        },
    )
    variant: str | None = field(default=None, metadata={"help": "weights variant, e.g. fp16"})
    dtype: str = field(
        default="auto", metadata={"help": f"{', '.join(DTYPES)}; auto: float16 on cuda, float32 elsewhere"}
    )
    device: str = field(
        default="auto",
        metadata={"help": f"{DEVICES}; auto: cuda (a launched process: its own GPU), else mps, else cpu"},
    )
    cpu_offload: bool = field(default=False, metadata={"help": "keep models in CPU memory until used (cuda only)"})
    group_offload: bool = field(
        default=False,
        metadata={"help": "stream each model's blocks to the GPU as they run: least GPU memory, slower (cuda only)"},
    )
    adapter: str | None = field(
        default=None, metadata={"help": "backward adapter .safetensors (see convert-checkpoint)", "metavar": "PATH"}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"`model` must be a Hub id or a folder, got {self.model!r}; e.g. `{SVD_XT}`")
        if self.dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"`device` must be {DEVICES}, got {self.device!r}")
        if self.cpu_offload and self.group_offload:
            raise ValueError("`cpu_offload` and `group_offload` are two ways to offload; pass one of them")
        if self.device != "auto":  # auto is known once the machine is: loading.model_device checks it then
            check_cpu_offload(self.cpu_offload or self.group_offload, self.device)

    def cli_flags(self) -> list[str]:
        """The ``inbetween interpolate`` flags that load this model the same way: ``--model`` always, the others
        where they are not the default."""
        flags = []
        for option in fields(self):
            value = getattr(self, option.name)
            if value == option.default and option.name != "model":  # the model always: a reader sees which
                continue
            flag = "--" + option.name.replace("_", "-")
            flags += [flag] if value is True else [flag, str(value)]
        return flags


def check_cpu_offload(cpu_offload: bool, device: str) -> None:
    """CPU offload moves each model (group offload: each group of blocks) to a CUDA GPU as it is used (diffusers'
    ``enable_model_cpu_offload`` / ``enable_group_offload``)."""
    if cpu_offload and device.partition(":")[0] != "cuda":
        raise ValueError(f"`cpu_offload` needs a CUDA GPU (the device is {device}); drop it or pass `device` cuda")


MODEL_OPTIONS = tuple(option.name for option in fields(ModelConfig))
