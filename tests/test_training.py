"""Backward-motion fine-tuning on tiny components: what trains, exact resume, CLI end to end."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import accelerate_launch
from tiny import save_tiny_svd

from inbetween import BackwardAdapter, InbetweenPipeline
from inbetween.attention import rotation_processors
from inbetween.cli import main
from inbetween.training import (
    StreamBatches,
    TrainConfig,
    backward_branch_step,
    batch_draws,
    best_heldout_step,
    edm_loss,
    encode_batch,
    load_training_pipeline,
    sample_draws,
    stream_indices,
    train_backward,
    trainable_deltas,
)
from inbetween.video_io import write_video

TESTS = Path(__file__).parent


def moving_square_videos(folder: Path, count: int, frames: int = 12, seed: int = 0) -> Path:
    """Tiny mp4s of a square moving in a straight line (a small synthetic dataset)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for v in range(count):
        x, y = rng.integers(4, 48, 2)
        vx, vy = rng.integers(-4, 5, 2)
        colour = rng.integers(60, 255, 3)
        video = np.full((frames, 64, 64, 3), 30, np.uint8)
        for t in range(frames):
            cx, cy = int(np.clip(x + vx * t, 0, 52)), int(np.clip(y + vy * t, 0, 52))
            video[t, cy : cy + 12, cx : cx + 12] = colour
        write_video(video, folder / f"video{v:03d}.mp4")
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    return {"model": save_tiny_svd(root / "model"), "data": moving_square_videos(root / "videos", 4), "root": root}


def tiny_config(workspace, output_dir, **overrides) -> TrainConfig:
    values = dict(
        data=str(workspace["data"]),
        output_dir=str(output_dir),
        model=str(workspace["model"]),
        num_frames=4,
        stride=2,
        height=64,
        width=64,
        batch_size=2,
        max_steps=4,
        checkpoint_every=2,
        num_workers=0,
        adapter_dtype="float32",
    )
    return TrainConfig(**{**values, **overrides})


def cli_args(workspace, **flags) -> list[str]:
    """`inbetween train` arguments for the tiny model and data plus ``flags`` (``max_steps=3``: ``--max-steps 3``)."""
    values = dict(
        data=workspace["data"],
        model=workspace["model"],
        num_frames=4,
        height=64,
        width=64,
        num_workers=0,
        adapter_dtype="float32",
        **flags,
    )
    return [item for key, value in values.items() for item in ("--" + key.replace("_", "-"), str(value))]


def test_stream_is_a_pure_function_of_seed_and_position():
    assert stream_indices(5, 0, 0, 5) == sorted(stream_indices(5, 0, 0, 5), key=stream_indices(5, 0, 0, 5).index)
    assert sorted(stream_indices(5, 0, 0, 5)) == list(range(5))  # one epoch is a permutation
    assert stream_indices(5, 0, 3, 4) == stream_indices(5, 0, 0, 7)[3:]
    one = StreamBatches(10, 0, batch_size=2, accumulation=2, rank=0, world=1)
    ranks = [StreamBatches(10, 0, batch_size=2, accumulation=1, rank=r, world=2) for r in range(2)]
    single = [list(one.positions(3, m)) for m in range(2)]
    split = [list(r.positions(3, 0)) for r in ranks]
    assert sorted(sum(single, [])) == sorted(sum(split, []))  # same global batch, any split
    a = sample_draws(0, 7, (2, 4, 8, 8), (3, 64, 64), 0.7, 1.6)
    b = sample_draws(0, 7, (2, 4, 8, 8), (3, 64, 64), 0.7, 1.6)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_edm_loss_weighting():
    target = torch.zeros(2, 3)
    denoised = torch.ones(2, 3)
    sigma = torch.tensor([1.0, 2.0])
    expected = ((1 + 1) / 1 + (1 + 4) / 4) / 2
    assert edm_loss(denoised, target, sigma).item() == pytest.approx(expected)


def test_only_the_backward_deltas_change(workspace, tmp_path):
    config = tiny_config(workspace, tmp_path / "run", max_steps=3, learning_rate=1e-2, train_bias=True)
    pipe = InbetweenPipeline.from_pretrained(str(workspace["model"]))
    models = ("unet", "vae", "image_encoder")
    before = {(m, n): p.detach().clone() for m in models for n, p in getattr(pipe, m).named_parameters()}
    final = train_backward(config, pipe=pipe)
    after = {(m, n): p.detach() for m in models for n, p in getattr(pipe, m).named_parameters()}
    trained = [key for key in after if ".processor.delta" in key[1]]
    frozen = [key for key in after if key not in trained]
    assert len(trained) == 3 * len(rotation_processors(pipe.unet))
    assert set(frozen) == set(before) and all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(after[k].abs().max() > 0 for k in trained)  # every delta moved away from zero
    adapter = BackwardAdapter.load(final)
    assert len(adapter.deltas) == len(trained)
    assert all(k.endswith(("to_v.weight", "to_out.0.weight", "to_out.0.bias")) for k in adapter.deltas)


@pytest.fixture
def fresh_accelerator_state():
    """Accelerate keeps one mixed-precision setting per process: clear it around a test that changes it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def test_final_adapter_is_saved_in_the_base_unets_dtype_checkpoints_keep_float32(
    workspace, tmp_path, fresh_accelerator_state
):
    # bf16 mixed precision (the one CPUs run): the frozen UNet is bf16, the trained deltas float32 masters.
    config = tiny_config(
        workspace, tmp_path / "run", max_steps=2, mixed_precision="bf16", adapter_dtype="auto", learning_rate=1e-2
    )
    final = BackwardAdapter.load(train_backward(config))
    checkpoint = BackwardAdapter.load(tmp_path / "run" / "checkpoints" / "step-0000002" / "adapter.safetensors")
    assert final.dtype == torch.bfloat16 and checkpoint.dtype == torch.float32
    assert final.deltas.keys() == checkpoint.deltas.keys()
    for key, master in checkpoint.deltas.items():  # the same deltas, rounded once to bf16
        assert master.abs().max() > 0
        assert torch.equal(final.deltas[key], master.to(torch.bfloat16))
    explicit = tiny_config(
        workspace, tmp_path / "explicit", max_steps=1, mixed_precision="bf16", adapter_dtype="float16"
    )
    assert BackwardAdapter.load(train_backward(explicit)).dtype == torch.float16
    with pytest.raises(ValueError, match="`adapter_dtype` must be auto, float32, float16, bfloat16, got 'half'"):
        tiny_config(workspace, tmp_path / "bad", adapter_dtype="half")


def _accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def _one_training_step(pipe, config, layout):
    from inbetween.data import ClipDataset, ClipSpec

    dataset = ClipDataset(config.data, ClipSpec(config.num_frames, config.stride, config.height, config.width))
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    draws = batch_draws(config, [0, 1], pipe.vae_scale_factor)
    encoded = encode_batch(pipe, batch, draws, config)
    return backward_branch_step(
        pipe, encoded, draws, config.__class__(**{**config.__dict__, "layout": layout}), _accelerator(), 1.0
    )


def test_split_and_joint_layouts_give_the_same_loss_and_gradients(workspace, tmp_path):
    config = tiny_config(workspace, tmp_path / "run")
    results = {}
    for layout in ("split", "joint"):
        pipe = load_training_pipeline(config, _accelerator())
        deltas = trainable_deltas(pipe.unet, train_bias=True)
        with torch.no_grad():  # non-zero deltas so the backward branch differs from the forward one
            for i, d in enumerate(deltas):
                d.copy_(torch.randn(d.shape, generator=torch.Generator().manual_seed(i)) * 0.02)
        loss = _one_training_step(pipe, config, layout)
        results[layout] = (loss, [d.grad.clone() for d in deltas])
    assert results["split"][0] == pytest.approx(results["joint"][0], rel=1e-5)
    for a, b in zip(results["split"][1], results["joint"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_checkpoints_are_pruned_and_resume_continues(workspace, tmp_path):
    config = tiny_config(workspace, tmp_path / "run", max_steps=6, checkpoint_every=2, keep_checkpoints=2)
    train_backward(config)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-0000004", "step-0000006"]
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    more = tiny_config(
        workspace, tmp_path / "run", max_steps=8, checkpoint_every=2, keep_checkpoints=2, resume="latest"
    )
    train_backward(more)
    assert (tmp_path / "run" / "checkpoints" / "step-0000008").is_dir()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_adapter(workspace, tmp_path):
    """SIGKILL after the first checkpoint, resume latest: same adapter as an uninterrupted run."""
    args = cli_args(workspace, batch_size=2, max_steps=8, checkpoint_every=2, learning_rate=1e-2)
    assert main(["train", *args, "--output-dir", str(tmp_path / "straight")]) == 0

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "inbetween", "train", *args, "--output-dir", str(killed)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # one thread like this process: same float sums
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step-0000002").is_dir():
        assert process.poll() is None and time.time() < deadline, "training ended or hung before step 2"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "backward_adapter.safetensors").exists()
    assert main(["train", *args, "--output-dir", str(killed), "--resume", "latest"]) == 0

    straight = BackwardAdapter.load(tmp_path / "straight" / "backward_adapter.safetensors")
    resumed = BackwardAdapter.load(killed / "backward_adapter.safetensors")
    for key, value in straight.deltas.items():
        torch.testing.assert_close(resumed.deltas[key], value, rtol=0, atol=1e-7)


def test_cli_trains_from_mp4s_and_the_adapter_interpolates(workspace, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "train",
            "--data",
            str(workspace["data"]),
            "--output-dir",
            str(out),
            "--model",
            str(workspace["model"]),
            "--num-frames",
            "4",
            "--height",
            "64",
            "--width",
            "64",
            "--batch-size",
            "1",
            "--max-steps",
            "2",
            "--num-workers",
            "0",
        ]
    )
    assert code == 0
    adapter = out / "backward_adapter.safetensors"
    assert BackwardAdapter.load(adapter).dtype == torch.float32  # `--adapter-dtype auto`: the float32 UNet's dtype
    from PIL import Image

    first, last = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(first)
    Image.new("RGB", (64, 64), (30, 30, 200)).save(last)
    video = tmp_path / "out.mp4"
    assert (
        main(
            [
                "interpolate",
                str(first),
                str(last),
                "-o",
                str(video),
                "--model",
                str(workspace["model"]),
                "--adapter",
                str(adapter),
                "--steps",
                "1",
                "--num-frames",
                "4",
                "--quiet",
            ]
        )
        == 0
    )
    assert video.is_file()


def test_empty_dataset_fails_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(
        [
            "train",
            "--data",
            str(tmp_path / "empty"),
            "--output-dir",
            str(tmp_path / "run"),
            "--model",
            str(tmp_path / "no-such-model"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no training clips" in err and "no-such-model" not in err
    code = main(["train", "--data", str(tmp_path), "--output-dir", str(tmp_path / "run"), "--layout", "both"])
    assert code == 2 and "`layout` must be one of split, joint" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_rotation_processors_hold_trainable_float32_deltas(workspace):
    pipe = InbetweenPipeline.from_pretrained(str(workspace["model"]))
    params = trainable_deltas(pipe.unet, train_bias=True)
    assert len(params) == 3 * len(rotation_processors(pipe.unet))
    assert all(p.requires_grad and p.dtype == torch.float32 for p in params)
    assert not any(p.requires_grad for n, p in pipe.unet.named_parameters() if ".processor." not in n)


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(workspace, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo) against 1 process accumulating 2 micro-batches."""
    args = cli_args(workspace, batch_size=1, max_steps=3, checkpoint_every=3)  # the paper's lr 1e-4
    two = tmp_path / "two"
    launch = accelerate_launch("train")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [*launch, *args, "--output-dir", str(two)],
        check=True,
        env=env,
        timeout=600,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    one = tmp_path / "one"
    assert main(["train", *args, "--gradient-accumulation-steps", "2", "--output-dir", str(one)]) == 0

    log = [json.loads(line) for line in (two / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]  # one writer: rank 1 appended nothing
    for record in log:
        rank0, rank1 = record["samples"]
        assert set(rank0).isdisjoint(rank1)  # the ranks saw different clips
    single = [json.loads(line)["samples"][0] for line in (one / "train_log.jsonl").read_text().splitlines()]
    assert [sorted(sum(r["samples"], [])) for r in log] == [sorted(s) for s in single]
    files = sorted(str(p.relative_to(two)) for p in two.rglob("*") if p.is_file())
    assert files == [
        "backward_adapter.safetensors",
        "checkpoints/step-0000003/adapter.safetensors",
        "checkpoints/step-0000003/optimizer.safetensors",
        "checkpoints/step-0000003/trainer_state.json",
        "train_log.jsonl",
    ]
    distributed = BackwardAdapter.load(two / "backward_adapter.safetensors")
    single_process = BackwardAdapter.load(one / "backward_adapter.safetensors")
    for key, value in single_process.deltas.items():
        torch.testing.assert_close(distributed.deltas[key], value, rtol=0, atol=1e-5)


def test_validation_videos_are_written_next_to_checkpoints(workspace, tmp_path):
    from PIL import Image

    first, last = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(first)
    Image.new("RGB", (64, 64), (30, 30, 200)).save(last)
    config = tiny_config(
        workspace,
        tmp_path / "run",
        max_steps=2,
        checkpoint_every=2,
        validate_every=2,
        validation_pairs=((str(first), str(last)),),
        validation_inference_steps=1,
    )
    train_backward(config)
    video = tmp_path / "run" / "checkpoints" / "step-0000002" / "validation-0.mp4"
    assert video.is_file()
    from inbetween.video_io import read_video

    assert len(read_video(video)) == 4
    with pytest.raises(ValueError, match="needs `validation_pairs`"):
        tiny_config(workspace, tmp_path / "x", validate_every=2)


@pytest.mark.slow
def test_fine_tuning_lowers_the_heldout_backward_loss(workspace, tmp_path):
    """The learning proof: 200 steps on 12 moving-square videos lower the backward branch's EDM loss on 4
    held-out videos. The loss is evaluated at the same fixed sigmas and noise before and after, so it is a
    deterministic function of the weights: any drop is the training's doing."""
    from accelerate import Accelerator

    from inbetween.attention import install_rotation
    from inbetween.data import ClipDataset, ClipSpec
    from inbetween.training import heldout_loss

    train = moving_square_videos(tmp_path / "train", 12, frames=16, seed=0)
    held = ClipDataset(moving_square_videos(tmp_path / "held", 4, frames=16, seed=99), ClipSpec(4, 2, 64, 64))
    config = tiny_config(
        workspace,
        tmp_path / "run",
        data=str(train),
        batch_size=4,
        max_steps=200,
        learning_rate=5e-3,
        checkpoint_every=10_000,
    )
    pipe = InbetweenPipeline.from_pretrained(str(workspace["model"]))
    install_rotation(pipe.unet)
    accelerator = Accelerator(cpu=True)
    before = heldout_loss(pipe, held, config, accelerator)
    train_backward(config, pipe=pipe)
    after = heldout_loss(pipe, held, config, accelerator)
    assert after < before, f"held-out loss {before:.4f} -> {after:.4f}"


def test_own_attention_ablation_trains_query_and_key_deltas_too(workspace, tmp_path):
    config = tiny_config(workspace, tmp_path / "run", max_steps=2, learning_rate=1e-2, backward_attention="own")
    pipe = InbetweenPipeline.from_pretrained(str(workspace["model"]))
    adapter = BackwardAdapter.load(train_backward(config, pipe=pipe))
    layers = len(rotation_processors(pipe.unet))
    assert adapter.backward_attention == "own" and len(adapter.deltas) == 4 * layers
    assert all(delta.abs().max() > 0 for delta in adapter.deltas.values())


def test_heldout_loss_is_logged_and_patience_stops_the_run(workspace, tmp_path):
    config = tiny_config(
        workspace,
        tmp_path / "run",
        max_steps=6,
        learning_rate=1e-12,  # nothing learns: the held-out loss never improves after its first evaluation
        heldout_data=str(workspace["data"]),
        heldout_every=1,
        heldout_patience=2,
    )
    train_backward(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "heldout_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]  # best at step 1, two evaluations without improvement
    assert max(r["heldout_loss"] for r in log) - min(r["heldout_loss"] for r in log) < 1e-5  # fixed draws
    # The shipped adapter is the one at the best held-out loss (step 1), not the last one (step 3).
    shipped = BackwardAdapter.load(tmp_path / "run" / "backward_adapter.safetensors")
    at_step = {
        steps: BackwardAdapter.load(
            train_backward(
                replace(
                    config,
                    output_dir=str(tmp_path / f"{steps}"),
                    max_steps=steps,
                    heldout_data=None,
                    heldout_patience=None,
                )
            )
        )
        for steps in (1, 3)
    }
    assert best_heldout_step(tmp_path / "run" / "heldout_log.jsonl") == 1
    assert all(torch.equal(shipped.deltas[k], at_step[1].deltas[k]) for k in shipped.deltas)
    assert not all(torch.equal(shipped.deltas[k], at_step[3].deltas[k]) for k in shipped.deltas)
    # Resuming a run that stopped on its held-out loss trains no further step: it only writes its adapter again.
    train_backward(replace(config, resume="latest"))
    train_log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert len(train_log) == 3 and len((tmp_path / "run" / "heldout_log.jsonl").read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="heldout_patience"):
        tiny_config(workspace, tmp_path / "x", heldout_patience=2)


def test_a_fresh_run_deletes_an_older_runs_best_adapter(workspace, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "backward_adapter_best.safetensors").write_bytes(b"an older run's best")
    train_backward(tiny_config(workspace, run, max_steps=1, checkpoint_every=1))
    assert not (run / "backward_adapter_best.safetensors").exists()
    assert (run / "backward_adapter.safetensors").is_file()


@pytest.mark.slow
def test_resuming_before_the_best_step_ships_the_best_the_kept_log_records(workspace, tmp_path):
    """A run that went on past the checkpoint it is resumed from saved a best that the trimmed held-out log no longer
    records: the resumed run must not keep it, but the best of the steps it keeps (from that step's checkpoint)."""
    run = tmp_path / "run"
    config = tiny_config(
        workspace,
        run,
        max_steps=4,
        checkpoint_every=1,
        keep_checkpoints=10,
        learning_rate=1e-2,
        heldout_data=str(workspace["data"]),
        heldout_every=1,
        heldout_patience=10,  # never stops: a best is saved at every improvement
    )
    train_backward(config)
    log = run / "heldout_log.jsonl"
    first_best = best_heldout_step(log)
    losses = [json.loads(line)["heldout_loss"] for line in log.read_text().splitlines()]
    assert first_best > 2, f"the control needs a best after step 2: held-out losses {losses}"
    stale = BackwardAdapter.load(run / "backward_adapter_best.safetensors")
    # Resume from step 2 and stop there (max_steps 2): the log keeps steps 1-2, the best file must follow it.
    train_backward(replace(config, max_steps=2, resume=str(run / "checkpoints" / "step-0000002")))
    kept_best = best_heldout_step(log)
    assert kept_best <= 2 and len(log.read_text().splitlines()) == 2
    best = BackwardAdapter.load(run / "backward_adapter_best.safetensors")
    expected = BackwardAdapter.load(run / "checkpoints" / f"step-{kept_best:07d}" / "adapter.safetensors")
    assert all(torch.equal(best.deltas[k], expected.deltas[k]) for k in best.deltas)
    assert not all(torch.equal(best.deltas[k], stale.deltas[k]) for k in best.deltas)
    shipped = BackwardAdapter.load(run / "backward_adapter.safetensors")
    assert all(torch.equal(shipped.deltas[k], expected.deltas[k]) for k in shipped.deltas)
