"""`inbetween evaluate` on real footage with the tiny model: report, resume, 2 processes, methods, bad inputs."""

import csv
import dataclasses
import importlib.util
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import accelerate_launch, random_adapter
from PIL import Image
from real_footage import REAL_VIDEO_SHOTS, real_video_path, shot_of
from safetensors.torch import save_file
from tiny import save_tiny_svd

from inbetween import InbetweenPipeline
from inbetween.cli import main
from inbetween.config import SamplingConfig
from inbetween.evaluation import harness as evaluation
from inbetween.evaluation.harness import METHODS, EvalConfig, Keyframes, Runtime, evaluate, pair_seed
from inbetween.evaluation.metrics import frechet_distance, frechet_distance_of_features, gaussian_stats
from inbetween.evaluation.metrics import psnr as psnr_of
from inbetween.evaluation.networks import LPIPS, FIDInceptionV3
from inbetween.evaluation.pairs import load_manifest, load_pair, read_manifest
from inbetween.evaluation.report import t_critical
from inbetween.options import config_from_flat
from inbetween.video_io import read_frames

ALL = ("blend", "flow", "forward", "gi")
SKIPPED = ("LPIPS ↓: skipped:", "FID ↓: skipped:", "FVD-I3D ↓: skipped:", "FVD-VideoMAE ↓: skipped:")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny model + random adapter, and a data folder of real footage: the video and a DAVIS-layout frame folder."""
    root = tmp_path_factory.mktemp("evaluation")
    data = root / "videos"
    data.mkdir()
    shutil.copy(real_video_path(), data / "bikes.mp4")
    davis = data / "JPEGImages" / "480p" / "street"
    davis.mkdir(parents=True)
    for index, frame in enumerate(read_frames(real_video_path(), 140, 12)):
        frame.save(davis / f"{index:05d}.jpg", quality=95)
    model = save_tiny_svd(root / "model")
    adapter = random_adapter(InbetweenPipeline.from_pretrained(str(model)).unet).save(root / "adapter.safetensors")
    with pytest.MonkeyPatch.context() as patch:  # no weight cache, no downloads: FID/FVD/LPIPS must be skipped
        patch.setenv("INBETWEEN_CACHE", str(root / "empty-cache"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield {"root": root, "data": data, "model": model, "adapter": adapter}


def settings(workspace, out, **overrides) -> dict:
    values = dict(
        data=str(workspace["data"]),
        out=str(out),
        methods=",".join(ALL),
        model=str(workspace["model"]),
        adapter=str(workspace["adapter"]),
        num_frames=5,
        pairs_per_video=2,
        height=64,
        width=64,
        num_inference_steps=2,
        noise_injection_steps=1,
    )
    return {**values, **overrides}


def flags(values: dict) -> list[str]:
    found = []
    renamed = {
        f.name: f.metadata["flag"].removeprefix("--")
        for f in dataclasses.fields(SamplingConfig)
        if "flag" in f.metadata
    }
    for key, value in values.items():
        flag = renamed.get(key, key.replace("_", "-"))
        if isinstance(value, bool):  # argparse.BooleanOptionalAction: --name / --no-name, no value
            found.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            found += [f"--{flag}", str(value)]
    return found


@pytest.fixture(scope="module")
def reference(workspace):
    """One uninterrupted single-process run of all four methods: the report every other run must reproduce."""
    out = workspace["root"] / "reference"
    assert main(["evaluate", *flags(settings(workspace, out))]) == 0
    return out


def table(summary: Path) -> list[str]:
    return [line for line in summary.read_text().splitlines() if line.startswith("|")]


def results(out: Path) -> dict[str, dict]:
    """Per-pair results by `method/pair`, without the fields that legitimately vary (time, process)."""
    found = {}
    for path in sorted((out / "results").glob("*/*.json")):
        document = json.loads(path.read_text())
        found[f"{path.parent.name}/{path.stem}"] = {
            k: v for k, v in document.items() if k not in ("seconds", "process")
        }
    return found


@pytest.mark.slow
def test_report_on_real_footage(reference):
    pairs, _ = load_manifest(reference / "manifest.json")
    assert len(pairs) == 4 and {Path(p.source).name for p in pairs} == {"bikes.mp4", "street"}
    summary = (reference / "summary.md").read_text()
    rows = table(reference / "summary.md")
    assert len(rows) == 2 + len(ALL)
    for method in ALL:
        row = next(r for r in rows if r.startswith(f"| {method} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "4" and "±" in cells[2] and "±" in cells[3]  # 4 pairs; PSNR, SSIM with an interval
        assert cells[4:] == ["skipped"] * 4  # LPIPS, FID, FVD-I3D, FVD-VideoMAE: no weights offline
    for line in SKIPPED:
        assert line in summary
    assert "HF_HUB_OFFLINE=1 forbids downloading" in summary and "Student-t" in summary
    assert "- torch: " in summary and "- num_inference_steps: `2`" in summary and "Date: " in summary
    assert "each inside one shot" in summary and "- allow_cuts: `False`" in summary
    assert "Scored frames: all 3 in-between frames of each pair" in summary  # gap 4 = num_frames - 1
    _, spec, videos = read_manifest(reference / "manifest.json")
    bikes = next(video for video in videos if video.source.endswith("bikes.mp4"))
    assert bikes.shots == tuple((shot.start, shot.stop) for shot in REAL_VIDEO_SHOTS) and not spec.allow_cuts
    assert all(shot_of(p.start, p.start + p.gap) for p in pairs if p.source.endswith("bikes.mp4"))

    per_pair = list(csv.DictReader(io.StringIO((reference / "per_pair.csv").read_text())))
    assert [(r["method"], r["pair"]) for r in per_pair] == [(m, p.name) for m in ALL for p in pairs]
    psnr = {(r["method"], r["pair"]): float(r["psnr"]) for r in per_pair}
    # Real footage: the cross-fade beats an untrained tiny model on every pair.
    assert all(psnr["blend", p.name] > psnr["gi", p.name] for p in pairs)
    assert all(r["lpips"] == "" for r in per_pair)

    assert Image.open(reference / "per_frame.png").format == "PNG"
    for pair in pairs:
        sheet = Image.open(reference / "contact_sheets" / f"{pair.name}.png")
        assert sheet.height == 64 * (1 + len(ALL))  # rows: ground truth + methods; 64-pixel frames
        frames = np.load(reference / "frames" / "gi" / f"{pair.name}.npz")["frames"]
        assert frames.shape == (5, 64, 64, 3) and frames.dtype == np.uint8
        document = json.loads((reference / "results" / "flow" / f"{pair.name}.json").read_text())
        assert document["frames"] == [1, 2, 3] and len(document["psnr"]) == 3 and document["lpips"] is None
        assert document["seed"] == pair_seed(0, pair.name)


class Recorder(torch.nn.Module):
    """A stand-in feature network that keeps every input it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # set_features reads the device from a parameter
        self.inputs: list[torch.Tensor] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return x.flatten(1)[:, :8].double()


def test_only_frames_with_ground_truth_are_scored(workspace, tmp_path, monkeypatch):
    """gap 6 over 4 steps: output frames 1 and 3 lie at 1.5 and 4.5 source frames; only frame 2 (source frame
    start + 3) has ground truth, and it alone is scored (PSNR/SSIM, FID); FVD sees whole 16-frame clips."""
    networks = {"fid": Recorder(), "fvd_i3d": Recorder()}
    skipped = {"fvd_videomae": "not in this test"}
    monkeypatch.setattr(evaluation, "load_feature_networks", lambda config, device: (networks, skipped))
    out = tmp_path / "out"
    assert main(["evaluate", *flags(settings(workspace, out, methods="blend,flow", gap=6, pairs_per_video=1))]) == 0
    summary = (out / "summary.md").read_text()
    assert "Scored frames: 1 of the 3 in-between frames of each pair, output frames 2: " in summary
    pairs, spec = load_manifest(out / "manifest.json")
    # Per pair: the real set first, then blend, then flow; FID gets the one scored frame, FVD a 16-frame clip.
    assert [x.shape[0] for x in networks["fid"].inputs] == [1] * 3 * len(pairs)
    assert all(x.shape == (1, 3, 16, 64, 64) for x in networks["fvd_i3d"].inputs)
    for index, pair in enumerate(pairs):
        loaded = load_pair(pair, spec, clip_offsets=evaluation.clip_indices(pair.gap + 1))
        torch.testing.assert_close(networks["fid"].inputs[3 * index], loaded["ground_truth"][1:2] * 2 - 1)
        real_clip = loaded["clip"].permute(1, 0, 2, 3)[None] * 2 - 1  # source frames start + 0, 0, 1, 1, ...
        torch.testing.assert_close(networks["fvd_i3d"].inputs[3 * index], real_clip)
        generated = np.load(out / "frames" / "blend" / f"{pair.name}.npz")["frames"]
        fake_clip = evaluation.as_tensor(generated)[evaluation.clip_indices(5)].permute(1, 0, 2, 3)[None] * 2 - 1
        torch.testing.assert_close(networks["fvd_i3d"].inputs[3 * index + 1], fake_clip)
    for pair in pairs:
        real = load_pair(pair, spec)["ground_truth"][1:2]  # source frame start + 3
        for method in ("blend", "flow"):
            document = json.loads((out / "results" / method / f"{pair.name}.json").read_text())
            assert document["frames"] == [2] and len(document["psnr"]) == len(document["ssim"]) == 1
            generated = np.load(out / "frames" / method / f"{pair.name}.npz")["frames"]  # all 5 frames are kept
            fake = torch.from_numpy(generated[2]).permute(2, 0, 1)[None] / 255.0
            assert document["psnr"][0] == pytest.approx(psnr_of(fake, real).item(), abs=1e-6)
        # Contact sheet: 5 columns of 64 px; the ground-truth row is blank in columns 1 and 3 (no source frame).
        sheet = np.asarray(Image.open(out / "contact_sheets" / f"{pair.name}.png").convert("RGB"))
        label = sheet.shape[1] - 5 * 64
        cells = [sheet[:64, label + column * 64 : label + (column + 1) * 64] for column in range(5)]
        assert [bool((cell == 255).all()) for cell in cells] == [False, True, False, True, False]


def test_allow_cuts_draws_across_shots_and_is_kept_with_the_pairs(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    values = settings(workspace, out, methods="blend", pairs_per_video=1, allow_cuts=True)
    assert main(["evaluate", *flags(values)]) == 0
    stored = json.loads((out / "manifest.json").read_text())
    assert stored["spec"]["allow_cuts"] is True and stored["shot_detection"] is None
    assert {tuple(map(tuple, video["shots"])) for video in stored["videos"]} == {((0, 250),), ((0, 12),)}
    assert "drawn across shot cuts too (--allow-cuts)" in (out / "summary.md").read_text()
    capsys.readouterr()
    assert main(["evaluate", *flags({**values, "allow_cuts": False})]) == 2
    assert "has pairs drawn with allow_cuts=True but the settings ask for allow_cuts=False" in capsys.readouterr().err


def test_missing_scenedetect_is_a_one_line_error(workspace, tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec

    def without_scenedetect(name, *args):
        return None if name == "scenedetect" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_scenedetect)
    assert main(["evaluate", *flags(settings(workspace, tmp_path / "out", methods="blend"))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "inbetween[eval]"' in err and "--allow-cuts" in err
    assert not (tmp_path / "out").exists()


def test_injected_weights_compute_lpips_and_fid(workspace, tmp_path):
    """Random LPIPS and Inception weights saved in their source layouts are loaded and actually used."""
    torch.manual_seed(0)
    lpips = LPIPS().state_dict()
    backbone = {k: v for k, v in lpips.items() if k.startswith("features.")}
    linear = {f"lin{i}.model.1.weight": lpips[f"lins.{i}.weight"] for i in range(5)}
    save_file(backbone, str(tmp_path / "alexnet.safetensors"))
    save_file(linear, str(tmp_path / "alex-linear.safetensors"))
    save_file(FIDInceptionV3().state_dict(), str(tmp_path / "inception.safetensors"))
    values = settings(
        workspace,
        tmp_path / "out",
        methods="blend,flow",
        pairs_per_video=1,
        lpips_backbone_weights=tmp_path / "alexnet.safetensors",
        lpips_linear_weights=tmp_path / "alex-linear.safetensors",
        inception_weights=tmp_path / "inception.safetensors",
    )
    assert main(["evaluate", *flags(values)]) == 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    for method in ("blend", "flow"):
        cells = [
            c.strip()
            for c in next(r for r in table(tmp_path / "out" / "summary.md") if f"| {method} |" in r).split("|")[1:-1]
        ]
        assert "±" in cells[4]  # LPIPS over 2 pairs
        assert cells[5].endswith("(N=6)") and float(cells[5].split()[0]) > 0  # FID: 3 in-between frames x 2 pairs
        assert cells[6:] == ["skipped", "skipped"]  # FVD weights still missing
    assert "LPIPS ↓: skipped" not in summary and "FID ↓: skipped" not in summary and "FVD-I3D ↓: skipped" in summary
    document = json.loads(next((tmp_path / "out" / "results" / "blend").glob("*.json")).read_text())
    assert len(document["lpips"]) == 3 and all(v > 0 for v in document["lpips"])


@pytest.mark.slow
def test_resume_after_a_crash_recomputes_nothing(workspace, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    config = config_from_flat(EvalConfig, settings(workspace, out))
    calls = []

    def counting(method, fail_at=None):
        def run(keyframes, runtime):
            calls.append(method.name)
            if len(calls) == fail_at:
                raise RuntimeError("killed")
            return method.run(keyframes, runtime)

        return dataclasses.replace(method, run=run)

    originals = dict(METHODS)
    for name in ALL:
        monkeypatch.setitem(METHODS, name, counting(originals[name], fail_at=3))
    with pytest.raises(RuntimeError, match="killed"):
        evaluate(config)
    done = sorted((out / "results").glob("*/*.json"))
    assert len(done) == 2 and not (out / "summary.md").exists()
    assert not [p for p in out.rglob(".tmp-*")]  # the crash left no temporary file behind
    stamps = {p: p.stat().st_mtime_ns for p in [*done, *(out / "frames").glob("*/*.npz")]}

    calls.clear()
    for name in ALL:
        monkeypatch.setitem(METHODS, name, counting(originals[name]))
    assert evaluate(config) == out / "summary.md"
    assert len(calls) == 4 * len(ALL) - 2  # only what was missing
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    assert results(out) == results(reference)
    assert (out / "per_pair.csv").read_text() == (reference / "per_pair.csv").read_text()
    assert table(out / "summary.md") == table(reference / "summary.md")

    calls.clear()
    assert evaluate(config) == out / "summary.md" and calls == []  # complete: a third run generates nothing


@pytest.mark.slow
def test_two_processes_give_the_same_results_as_one(workspace, reference, tmp_path):
    out = tmp_path / "two"
    launch = accelerate_launch("evaluate")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [*launch, *flags(settings(workspace, out))],
        check=True,
        env=env,
        timeout=600,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    processes = {json.loads(p.read_text())["process"] for p in (out / "results").glob("*/*.json")}
    assert processes == {0, 1}  # the pairs were split
    assert results(out) == results(reference)
    for path in (reference / "frames").glob("*/*.npz"):
        twin = out / path.relative_to(reference)
        np.testing.assert_array_equal(np.load(twin)["frames"], np.load(path)["frames"])
    assert (out / "per_pair.csv").read_text() == (reference / "per_pair.csv").read_text()
    assert "- processes: 2" in (out / "summary.md").read_text()


def test_pipeline_methods_differ_and_are_seeded(workspace, tmp_path):
    config = config_from_flat(EvalConfig, settings(workspace, tmp_path / "out", methods="gi,gi-no-ft,trf,forward"))
    pair = load_manifest_free_pair(config)
    data = load_pair(pair, config.pair_spec)
    keyframes = Keyframes(data["first"], data["last"], config.sampling.num_frames, pair_seed(config.seed, pair.name))
    runtime = Runtime(config, torch.device("cpu"))
    videos = {name: METHODS[name].run(keyframes, runtime) for name in config.methods}
    names = list(videos)
    for i, a in enumerate(names):
        assert videos[a].shape == (5, 64, 64, 3) and videos[a].dtype == np.uint8
        for b in names[i + 1 :]:
            assert not np.array_equal(videos[a], videos[b]), f"{a} and {b} gave the same frames"
    np.testing.assert_array_equal(METHODS["gi"].run(keyframes, runtime), videos["gi"])  # same seed, same video
    other = dataclasses.replace(keyframes, seed=keyframes.seed + 1)
    assert not np.array_equal(METHODS["trf"].run(other, runtime), videos["trf"])


def load_manifest_free_pair(config: EvalConfig):
    from inbetween.evaluation.pairs import build_pairs

    return build_pairs(config.data, config.pair_spec)[0]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methods": "blend,magic"}, "unknown method 'magic'"),
        ({"adapter": None}, "method 'gi' needs a backward adapter"),
        ({"methods": "blend", "data": "EMPTY"}, "no keyframe pairs in"),
        ({"methods": "blend", "data": "MISSING"}, "not found"),
        ({"methods": "blend,blend"}, "lists a method twice"),
        # The CLI names the flags the user typed, as `interpolate` does.
        ({"methods": "blend", "num_frames": 2}, "`--num-frames` must be at least 3"),
        ({"methods": "blend", "gap": 3}, "`--gap` 3 with `--num-frames` 5: no in-between output frame falls on"),
        ({"methods": "blend", "lpips_linear_weights": "nowhere.pth"}, "`lpips_linear_weights` file"),
    ],
    ids=[
        "unknown-method",
        "gi-without-adapter",
        "empty-data",
        "missing-data",
        "duplicate",
        "frames",
        "unscored",
        "weights",
    ],
)
def test_bad_inputs_are_one_line_errors_and_write_nothing(workspace, tmp_path, capsys, change, message):
    (tmp_path / "EMPTY").mkdir()
    values = settings(workspace, tmp_path / "out", **change)
    values = {k: v for k, v in values.items() if v is not None}
    if values["data"] in ("EMPTY", "MISSING"):
        values["data"] = str(tmp_path / values["data"])
    assert main(["evaluate", *flags(values)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("inbetween: error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_out_folder_with_other_pairs_or_settings_is_refused(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    base = settings(workspace, out, methods="blend", pairs_per_video=1)
    assert main(["evaluate", *flags(base)]) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    for change, message in (
        ({"seed": 1}, "has pairs drawn with seed=0 but the settings ask for seed=1"),
        ({"num_inference_steps": 3}, "was run with num_inference_steps=2"),
    ):
        assert main(["evaluate", *flags({**base, **change})]) == 2
        err = capsys.readouterr().err
        assert err.startswith("inbetween: error: ") and message in err, err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # An explicit manifest is reused as it is; one drawn with other settings is refused.
    manifest = tmp_path / "pairs.json"
    assert main(["evaluate", *flags({**base, "out": tmp_path / "b", "manifest": manifest})]) == 0
    assert load_manifest(manifest)[0] == load_manifest(tmp_path / "b" / "manifest.json")[0]
    assert main(["evaluate", *flags({**base, "out": tmp_path / "c", "manifest": manifest, "gap": 2})]) == 2
    assert "manifest" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_frechet_distance_of_few_features_is_exact():
    rng = np.random.default_rng(0)
    for n1, n2, d in ((5, 7, 16), (3, 4, 64), (40, 50, 4)):
        real, fake = rng.normal(size=(n1, d)), rng.normal(size=(n2, d)) + 0.5
        expected = frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))
        assert frechet_distance_of_features(real, fake) == pytest.approx(expected, rel=1e-5)
    assert frechet_distance_of_features(real, real) == pytest.approx(0.0, abs=1e-9)


def test_t_critical_values():
    # Student-t table, two-sided 95 %.
    for dof, value in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (9, 2.2622), (30, 2.0423), (1000, 1.9623)):
        assert t_critical(dof) == pytest.approx(value, abs=1e-3)
