import os
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models gain nothing from a second thread, and lose a lot when the other core is busy.
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))

from reference import zero_adapter  # noqa: E402
from tiny import save_tiny_svd, tiny_components  # noqa: E402

from inbetween import BackwardAdapter, InbetweenPipeline  # noqa: E402


def random_keyframe(seed: int, size: tuple[int, int] = (64, 64)) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8"))


def random_adapter(unet: torch.nn.Module, seed: int = 1, scale: float = 0.05) -> BackwardAdapter:
    """A non-zero adapter for ``unet`` (W_v, W_o and b_o deltas)."""
    generator = torch.Generator().manual_seed(seed)
    zeros = zero_adapter(unet, include_bias=True)
    return BackwardAdapter({k: torch.randn(v.shape, generator=generator) * scale for k, v in zeros.deltas.items()})


@pytest.fixture(scope="module")
def tiny_pipe() -> InbetweenPipeline:
    pipe = InbetweenPipeline(**tiny_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def keyframes() -> tuple[PIL.Image.Image, PIL.Image.Image]:
    return random_keyframe(0), random_keyframe(1)


def accelerate_launch(command: str, processes: int = 2) -> list[str]:
    """`accelerate launch -m inbetween COMMAND` in CPU processes (gloo), without needing the scripts folder on
    PATH."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.accelerate_cli",
        "launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "inbetween",
        command,
    ]


@pytest.fixture
def refuse_model_loading(monkeypatch):
    """Offline, no CUDA, and loading the pipeline fails the test: the CLI must reject bad input before it loads."""
    import huggingface_hub

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(InbetweenPipeline, "from_pretrained", must_not_load)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def tiny_svd_folder(tmp_path_factory) -> Path:
    """Tiny random SVD components saved in SVD's folder layout, once per test module."""
    return save_tiny_svd(tmp_path_factory.mktemp("tiny_svd"))
