"""The tiny-world model: resumable, seeded training stages and the model shipped in the package."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from inbetween import InbetweenPipeline
from inbetween.cli import main
from inbetween.evaluation.metrics import psnr
from inbetween.hub import TINY_WORLD, TINY_WORLD_FOLDER
from inbetween.toyworld.candidates import TINY_WORLD_SAMPLING
from inbetween.toyworld.recipe import (
    TinyWorldRecipe,
    build_feature_extractor,
    build_image_encoder,
    build_unet,
    build_vae,
    forward_i2v_loss,
    load_stage_checkpoint,
    model_world,
    step_generator,
    train_vae,
    world_clips,
)
from inbetween.toyworld.science import (
    FULL,
    heldout_videos,
    interpolate_videos,
    load_tiny_world,
)
from inbetween.video_io import read_video

TINY_RECIPE = TinyWorldRecipe(vae_steps=4, vae_batch_size=1, checkpoint_every=2)


def vae_state(folder: Path) -> dict[str, torch.Tensor]:
    vae = build_vae(0)
    optimizer = torch.optim.AdamW(vae.parameters())
    assert load_stage_checkpoint(folder / "vae", {"vae": vae}, optimizer) == TINY_RECIPE.vae_steps
    return vae.state_dict()


@pytest.mark.slow
def test_a_stage_resumed_from_its_checkpoint_ends_where_an_uninterrupted_run_does(tmp_path):
    train_vae(TINY_RECIPE, tmp_path / "straight")
    # Stop after the first checkpoint (step 2), then run the same command again.
    train_vae(replace(TINY_RECIPE, vae_steps=2), tmp_path / "resumed")
    train_vae(TINY_RECIPE, tmp_path / "resumed")
    straight, resumed = vae_state(tmp_path / "straight"), vae_state(tmp_path / "resumed")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)
    log = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "vae" / "loss.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]  # one loss per step, none twice


def test_forward_loss_is_seeded_by_the_step_and_reaches_every_trained_module():
    recipe = TinyWorldRecipe()
    frames = recipe.world.num_frames
    unet, encoder, vae = build_unet(0, frames), build_image_encoder(0), build_vae(0)
    clips = world_clips([1, 2], recipe.world)
    assert clips.shape == (2, frames, 3, 32, 32) and -1 <= clips.min() and clips.max() <= 1
    args = (unet, encoder, vae, build_feature_extractor(32), clips)
    loss = forward_i2v_loss(*args, step_generator(0, 2, 7), recipe)
    again = forward_i2v_loss(*args, step_generator(0, 2, 7), recipe)
    other = forward_i2v_loss(*args, step_generator(0, 2, 8), recipe)
    assert loss.item() == again.item() != other.item()
    loss.backward()
    assert all(p.grad is not None for p in unet.parameters() if p.requires_grad)
    assert encoder.visual_projection.weight.grad.abs().sum() > 0  # the conditioning tower trains too
    assert all(p.grad is None for p in vae.parameters())  # frozen after its own stage


# the shipped model ------------------------------------------------------------------------------


def test_shipped_model_fits_the_size_budget_and_loads_with_its_adapter():
    size = sum(f.stat().st_size for f in TINY_WORLD_FOLDER.rglob("*") if f.is_file())
    assert size <= 20e6, f"{size / 1e6:.1f} MB"
    pipe = InbetweenPipeline.from_pretrained(str(TINY_WORLD_FOLDER))
    assert pipe.has_backward_adapter
    assert pipe.unet.dtype == pipe.image_encoder.dtype == torch.float32
    assert model_world().num_frames == pipe.unet.config.num_frames  # evaluation draws the model's own world
    assert (pipe.size_multiple, pipe.default_long_side) == (8, 32)
    assert not InbetweenPipeline.from_pretrained(str(TINY_WORLD_FOLDER), load_adapter=False).has_backward_adapter


@pytest.mark.slow
def test_shipped_model_interpolates_with_the_right_shape_and_keyframes():
    pipe, adapters = load_tiny_world()
    videos = heldout_videos(4)
    frames = interpolate_videos(pipe, adapters, FULL, videos, TINY_WORLD_SAMPLING, seed=0)
    assert frames.shape == (4, 8, 32, 32, 3) and frames.dtype == np.uint8

    def as_tensor(x):
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255

    for generated, video in zip(frames, videos, strict=True):
        ends = as_tensor(generated[[0, -1]])
        same = psnr(ends, as_tensor(video.frames[[0, -1]]))  # first with first, last with last
        swapped = psnr(ends, as_tensor(video.frames[[-1, 0]]))
        # The video starts on the first keyframe and ends on the last one, not the other way round, and no frame
        # of it matches a keyframe better than the end that keyframe conditions.
        assert (same > swapped).all(), (same, swapped)
        to_first = psnr(as_tensor(generated), as_tensor(video.frames[[0]]).expand(len(generated), -1, -1, -1))
        to_last = psnr(as_tensor(generated), as_tensor(video.frames[[-1]]).expand(len(generated), -1, -1, -1))
        assert to_first.argmax() == 0 and to_last.argmax() == len(generated) - 1, (to_first, to_last)


def test_interpolate_cli_takes_the_tiny_world_name(tmp_path):
    from PIL import Image

    video = heldout_videos(1)[0]
    Image.fromarray(video.frames[0]).save(tmp_path / "a.png")
    Image.fromarray(video.frames[-1]).save(tmp_path / "b.png")
    out = tmp_path / "frames"
    args = ["interpolate", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out), "--quiet"]
    assert main([*args, "--model", TINY_WORLD, "--steps", "2"]) == 0
    written = sorted(out.glob("*.png"))
    world = model_world()  # the model's own frame count and size
    assert len(written) == world.num_frames and Image.open(written[0]).size == (world.size, world.size)


def test_a_call_that_cannot_fit_is_refused_in_one_line_before_loading(tmp_path, capfd, monkeypatch):
    """`--height 100000 --width 100000` used to be killed by the OOM killer (exit 137, no message)."""
    from PIL import Image

    video = heldout_videos(1)[0]
    Image.fromarray(video.frames[0]).save(tmp_path / "a.png")
    Image.fromarray(video.frames[-1]).save(tmp_path / "b.png")
    out = tmp_path / "h.mp4"
    args = ["interpolate", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out), "--model", TINY_WORLD]
    loaded = []
    monkeypatch.setattr(InbetweenPipeline, "from_pretrained", lambda *a, **k: loaded.append(a))
    assert main([*args, "--height", "100000", "--width", "100000"]) == 2
    error = capfd.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("inbetween: error: this call needs about")
    assert "is available" in error and "--allow-oversize" in error and "--split-guidance-batch" in error
    assert not out.exists() and loaded == []  # refused before the model loaded, nothing written


def test_the_pipeline_refuses_an_oversize_call_unless_allowed():
    pipe, _ = load_tiny_world()
    video = heldout_videos(1)[0]
    first = torch.from_numpy(video.frames[0]).permute(2, 0, 1)[None].float() / 255
    with pytest.raises(ValueError, match="this call needs about .* is available"):
        pipe(first, first, height=65536, width=65536, num_inference_steps=1)


@pytest.mark.slow
def test_demo_writes_videos_and_the_comparison_sheet(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--pairs", "2", "--steps", "2"]) == 0
    names = {p.name for p in out.iterdir()}
    methods = [
        "ground-truth",
        "linear-cross-fade",
        "forward-only-i2v",
        "dual-rotated-no-fine-tuning",
        "full-method-paper-s-sampling",
        "full-method-fast-exact-ends",
    ]
    assert {f"pair{i}-{m}.mp4" for i in range(2) for m in methods} <= names
    assert {"comparison.png", "pair0-first.png", "pair1-last.png"} <= names
    from PIL import Image

    sheet = Image.open(out / "comparison.png")
    assert sheet.height >= 2 * 6 * 32 * 4  # 2 pairs x 6 rows of 4x enlarged 32 px frames
    # The best preset's row starts and ends on the keyframes' own pixels (enlarged 4x in the video).
    best = np.asarray(read_video(out / "pair0-full-method-fast-exact-ends.mp4")[0])
    first = np.asarray(Image.open(out / "pair0-first.png"))
    assert np.abs(best.astype(int) - first.repeat(4, 0).repeat(4, 1)).mean() < 4  # mp4's lossy coding
    assert str(out) in capsys.readouterr().out
    # never overwrite without being asked
    assert main(["demo", "--out", str(out), "--pairs", "1", "--steps", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_model_takes_a_model_folder_and_its_world(tmp_path, capsys):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(TINY_WORLD_FOLDER, folder)
    args = ["demo", "--pairs", "1", "--steps", "1"]
    assert main([*args, "--out", str(tmp_path / "shipped")]) == 0
    assert main([*args, "--out", str(tmp_path / "copy"), "--model", str(folder)]) == 0
    # The same weights from another folder: the same videos (same seed).
    for name in ("pair0-first.png", "pair0-full-method-fast-exact-ends.mp4"):
        assert (tmp_path / "shipped" / name).read_bytes() == (tmp_path / "copy" / name).read_bytes()
    # Its world.json decides the held-out pairs: another world, other keyframes.
    world = json.loads((folder / "world.json").read_text())
    (folder / "world.json").write_text(json.dumps({**world, "max_balls": 1, "min_balls": 1}))
    assert main([*args, "--out", str(tmp_path / "other"), "--model", str(folder)]) == 0
    other = (tmp_path / "other" / "pair0-first.png").read_bytes()
    assert other != (tmp_path / "shipped" / "pair0-first.png").read_bytes()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "missing"), "--model", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert "nowhere" in error and "Traceback" not in error and not (tmp_path / "missing").exists()


@pytest.mark.slow
def test_the_whole_recipe_runs_all_four_stages_and_ships_both_adapters(tmp_path):
    from dataclasses import replace as replace_field

    from inbetween import BackwardAdapter
    from inbetween.toyworld.recipe import ABLATION_ADAPTER_FILE, TinyWorldRecipe, train_tiny_world

    recipe = TinyWorldRecipe(
        world=replace_field(TinyWorldRecipe().world, num_frames=4),
        vae_steps=2,
        unet_steps=2,
        warmup_steps=1,
        adapter_videos=4,
        adapter_steps=6,
        adapter_batch_size=2,
        adapter_heldout_videos=2,
        adapter_heldout_every=1,
        adapter_patience=1,
        adapter_learning_rate=1e-12,  # no progress: the held-out patience stops stage 3 after two evaluations
        checkpoint_every=1,
    )
    model = train_tiny_world(tmp_path / "run", recipe)
    heldout = (tmp_path / "run" / "adapter" / "heldout_log.jsonl").read_text().splitlines()
    assert len(heldout) == 2
    ablation_log = (tmp_path / "run" / "adapter_own_attention" / "train_log.jsonl").read_text().splitlines()
    assert len(ablation_log) == 1  # as many steps as the shipped adapter trained: its best held-out step, the first
    assert BackwardAdapter.load(model / "backward_adapter.safetensors").backward_attention == "rotated"
    assert BackwardAdapter.load(model / ABLATION_ADAPTER_FILE).backward_attention == "own"
    assert (tmp_path / "run" / "loss_curves.png").is_file()
