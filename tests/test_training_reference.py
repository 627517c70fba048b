"""The fast trainer against the naive one (tests/reference.py): same loss, same W_v / W_o gradients."""

import pytest
import torch
from accelerate import Accelerator
from reference import NaiveBackwardTrainer
from tiny import save_tiny_svd

from inbetween import BackwardAdapter, InbetweenPipeline
from inbetween.attention import rotation_processors
from inbetween.training import (
    TrainConfig,
    backward_branch_step,
    batch_draws,
    encode_batch,
    load_training_pipeline,
    trainable_deltas,
)

BATCH, FRAMES, SIZE = 2, 4, 64


def random_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch shaped like stacked ``ClipDataset`` samples: clip (B, N, 3, H, W) in [-1, 1] and its keyframes."""
    generator = torch.Generator().manual_seed(seed)
    # smooth random frames (a coarse grid upsampled) so the VAE latents are not pure noise
    coarse = torch.rand(BATCH, FRAMES, 3, 8, 8, generator=generator) * 2 - 1
    clip = torch.nn.functional.interpolate(coarse.flatten(0, 1), size=(SIZE, SIZE), mode="bilinear")
    clip = clip.unflatten(0, (BATCH, FRAMES)).clamp(-1, 1)
    return {"clip": clip, "first_frame": clip[:, 0].clone(), "last_frame": clip[:, -1].clone()}


def stacked_draws(config: TrainConfig, vae_scale: int) -> dict[str, torch.Tensor]:
    return batch_draws(config, range(BATCH), vae_scale)


def test_one_step_matches_the_naive_two_unet_trainer(tmp_path):
    model = save_tiny_svd(tmp_path / "model")
    config = TrainConfig(
        data=str(tmp_path / "unused"),
        output_dir=str(tmp_path / "run"),
        model=str(model),
        num_frames=FRAMES,
        height=SIZE,
        width=SIZE,
        batch_size=BATCH,
        layout="split",
    )
    accelerator = Accelerator(cpu=True)

    # ours: one frozen UNet, trainable float32 deltas on the rotation processors (non-zero here,
    # so that the backward branch differs from the forward one)
    pipe = load_training_pipeline(config, accelerator)
    deltas = trainable_deltas(pipe.unet, train_bias=False)
    with torch.no_grad():
        for i, delta in enumerate(deltas):
            delta.copy_(torch.randn(delta.shape, generator=torch.Generator().manual_seed(100 + i)) * 0.05)
    adapter = BackwardAdapter.from_rotation_processors(pipe.unet)
    assert len(adapter.deltas) == len(deltas) == 2 * len(rotation_processors(pipe.unet))

    batch = random_batch()
    draws = stacked_draws(config, pipe.vae_scale_factor)
    encoded = encode_batch(pipe, batch, draws, config)
    our_loss = backward_branch_step(pipe, encoded, draws, config, accelerator)

    # naive: two UNet copies of a separately loaded pipeline, the deltas added into the backward weights
    naive_pipe = InbetweenPipeline.from_pretrained(str(model))
    naive = NaiveBackwardTrainer(naive_pipe, adapter)
    trainable = [n for n, p in naive.backward_unet.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(adapter.deltas)
    assert not any(p.requires_grad for p in naive.forward_unet.parameters())
    before = {k: p.detach().clone() for k, p in naive.trainable.items()}
    naive_loss = naive.step(encoded, draws)

    assert our_loss > 0
    assert naive_loss == pytest.approx(our_loss, rel=1e-5)
    for layer, processor in rotation_processors(pipe.unet).items():
        for ours, key in [
            (processor.delta_v, f"{layer}.to_v.weight"),
            (processor.delta_o, f"{layer}.to_out.0.weight"),
        ]:
            theirs = naive.trainable[key].grad
            assert ours.grad is not None and theirs is not None, key
            scale = theirs.abs().max().item()
            assert scale > 0, f"{key}: zero gradient"
            torch.testing.assert_close(ours.grad, theirs, rtol=1e-4, atol=1e-5 * scale, msg=key)
    # the naive step did update its weights (AdamW)
    assert all(not torch.equal(before[k], p.detach()) for k, p in naive.trainable.items())
