"""`inbetween batch`: the shot list, one model load for many shots, each shot once over 2 processes, resuming after a
kill, bad rows one line each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import accelerate_launch, random_keyframe
from tiny import FAST_CLI

from inbetween.batch import read_shot_list
from inbetween.batch.render import RECORDS, SUMMARY
from inbetween.cli import main
from inbetween.config import SamplingConfig
from inbetween.video_io import read_video

FAST = FAST_CLI
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tiny_svd_folder: Path) -> Path:
    return tiny_svd_folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    for index in range(5):
        random_keyframe(index).save(folder / f"k{index}.png")
    random_keyframe(9, size=(96, 64)).save(folder / "wide.png")
    return folder


def six_shots(folder: Path) -> Path:
    """Six shots with their own options: two keyframes, three, a loop, a preset, a seed, a step count."""
    rows = [
        "name,keyframes,loop,seed,preset,steps",
        "a,k0.png;k1.png,,,,",
        "b,k1.png;k2.png;k3.png,,,,",
        "c,k2.png;k3.png,true,,,",
        "d,k3.png;k4.png,,7,,",
        "e,k4.png;k0.png,,,fast,",
        "f,k0.png;k2.png,,,,3",
    ]
    path = folder / "shots.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def batch_args(shots: Path, out: Path, model: Path) -> list[str]:
    return ["batch", str(shots), "-o", str(out), "--model", str(model), "--format", "png", *FAST, "--quiet"]


def frames_of(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(image) for image in read_video(folder)])


def summary_of(out: Path) -> dict[str, dict]:
    return {record["name"]: record for record in json.loads((out / SUMMARY).read_text())["records"]}


# the shot list ---------------------------------------------------------------------------------------------------


def test_the_shot_list_reads_csv_and_json_alike(inputs: Path) -> None:
    csv_shots, errors = read_shot_list(six_shots(inputs))
    assert not errors and [shot.name for shot in csv_shots] == list("abcdef")
    b, c, d, e, f = csv_shots[1:]
    assert b.keyframes == tuple(str(inputs / f"k{i}.png") for i in (1, 2, 3))  # relative to the list's folder
    assert c.loop and d.seed == 7 and f.sampling == {"num_inference_steps": 3}  # a flag's name works as a column
    base = SamplingConfig(num_inference_steps=9)
    assert (
        e.sampling_config(base) == SamplingConfig.preset("fast", base)
        and f.sampling_config(base).num_inference_steps == 3
    )
    document = [{"name": "a", "keyframes": ["k0.png", "k1.png"], "loop": True, "num_inference_steps": 4}]
    (inputs / "shots.json").write_text(json.dumps({"shots": document}))
    (json_shot,), errors = read_shot_list(inputs / "shots.json")
    assert not errors and json_shot.loop and json_shot.sampling == {"num_inference_steps": 4}


def test_each_bad_row_is_one_line_naming_its_row_and_the_others_are_read(inputs: Path) -> None:
    rows = [
        "name,keyframes,steps,preset,colour",
        "good,k0.png;k1.png,,,",
        "one,k0.png,,,",
        "steps,k0.png;k1.png,many,,",
        "preset,k0.png;k1.png,,slowest,",
        "good,k1.png;k2.png,,,",
        "bad name!,k1.png;k2.png,,,",
        "column,k1.png;k2.png,,,red",
        "zero,k1.png;k2.png,0,,",
        "records,k1.png;k2.png,,,",
    ]
    (inputs / "bad.csv").write_text("\n".join(rows) + "\n")
    shots, errors = read_shot_list(inputs / "bad.csv")
    assert [shot.name for shot in shots] == ["good"]
    messages = [str(error) for error in errors]
    assert [error.row for error in errors] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert all("\n" not in m and m.startswith(f"bad.csv row {r}") for m, r in zip(messages, range(2, 10), strict=True))
    for fragment, message in zip(
        [
            "at least two",
            "must be int",
            "unknown preset",
            "used by an earlier row",
            "cannot name a file",
            "unknown column `colour`",
            "num_inference_steps",
            "bookkeeping",
        ],
        messages,
        strict=True,
    ):
        assert fragment in message, message
    with pytest.raises(ValueError, match="needs a header row with a `keyframes` column"):
        (inputs / "headless.csv").write_text("k0.png;k1.png\n")
        read_shot_list(inputs / "headless.csv")


def test_a_rows_preset_undoes_no_typed_option(inputs: Path, tmp_path: Path) -> None:
    """Each shot's options: the row's own, then the options typed, then the row's preset, then the defaults (and the
    command's --preset, which a row's preset replaces where both set an option)."""
    from inbetween.cli import build_parser
    from inbetween.cli.batch import batch_config

    shots = inputs / "precedence.csv"
    shots.write_text(
        "name,keyframes,preset,steps\nplain,k0.png;k1.png,,\npreset,k0.png;k1.png,fast,\nown,k0.png;k1.png,fast,3\n"
    )

    def sampling(*flags: str) -> dict[str, SamplingConfig]:
        config = batch_config(
            build_parser(only="batch").parse_args(["batch", str(shots), "-o", str(tmp_path), *flags])
        )
        return {
            shot.name: shot.sampling_config(config.sampling, config.typed_options) for shot in read_shot_list(shots)[0]
        }

    fast = SamplingConfig.preset("fast")
    typed = sampling("--steps", "7", "--fusion", "linear")
    assert (typed["plain"].num_inference_steps, typed["plain"].fusion, typed["plain"].solver) == (7, "linear", "euler")
    assert (typed["preset"].num_inference_steps, typed["preset"].fusion) == (7, "linear")  # typed beats the preset
    assert (typed["preset"].solver, typed["preset"].exact_ends) == (fast.solver, True)  # the rest is the preset's
    assert (typed["own"].num_inference_steps, typed["own"].fusion) == (3, "linear")  # the row's own beats typed
    # The command's --preset is not typed: a row's preset replaces it where both set an option.
    command_preset = sampling("--preset", "vibid", "--steps", "7")
    assert (command_preset["plain"].sampler, command_preset["plain"].num_inference_steps) == ("vibid", 7)
    assert (command_preset["preset"].sampler, command_preset["preset"].solver) == ("gi", fast.solver)
    assert command_preset["preset"].num_inference_steps == 7


# rendering ---------------------------------------------------------------------------------------------------------


def test_a_batch_renders_every_shot_as_interpolate_would(inputs: Path, model: Path, tmp_path: Path) -> None:
    shots = six_shots(inputs)
    out = tmp_path / "out"
    assert main(batch_args(shots, out, model)) == 0
    records = summary_of(out)
    assert [records[name]["status"] for name in "abcdef"] == ["rendered"] * 6
    assert [len(read_video(out / name)) for name in "abcdef"] == [3, 5, 4, 3, 3, 3]  # loop: 2 (3 - 1)
    # the same shot through `inbetween interpolate` with the row's options gives the same frames
    # (a row's preset gives way to the options typed: the command's steps stay, as with interpolate's --preset)
    for name, extra in [("d", [*FAST, "--seed", "7"]), ("e", [*FAST, "--preset", "fast"]), ("b", FAST)]:
        shot = next(s for s in read_shot_list(shots)[0] if s.name == name)
        single = tmp_path / f"single-{name}"
        command = ["interpolate", *shot.keyframes, "-o", str(single), "--model", str(model), *extra, "--quiet"]
        assert main(command) == 0
        np.testing.assert_array_equal(frames_of(out / name), frames_of(single), err_msg=name)
    # a second run finds every video and renders nothing
    assert main(batch_args(shots, out, model)) == 0
    assert {r["status"] for r in summary_of(out).values()} == {"done before"}


def test_failed_shots_are_one_line_each_and_the_others_render(
    inputs: Path, model: Path, tmp_path: Path, capsys
) -> None:
    rows = [
        "name,keyframes",
        "good,k0.png;k1.png",
        "missing,k0.png;nowhere.png",
        "aspect,k0.png;wide.png",
        "one,k0.png",
    ]
    (inputs / "mixed.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main(batch_args(inputs / "mixed.csv", out, model)) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("inbetween batch:")]
    assert len(errors) == 3 and all("row" in line for line in errors)
    assert "nowhere.png" in errors[1] + errors[2] and "aspect" in " ".join(errors)
    records = summary_of(out)
    assert records["good"]["status"] == "rendered" and (out / "good").is_dir()
    assert [records[n]["status"] for n in ("missing", "aspect")] == ["failed", "failed"]
    assert not (out / "missing").exists() and not (out / "aspect").exists()


def test_two_processes_render_each_shot_once_with_the_frames_of_one(inputs: Path, model: Path, tmp_path: Path) -> None:
    shots = six_shots(inputs)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(batch_args(shots, one, model)) == 0
    launched = subprocess.run(
        [*accelerate_launch("batch"), *batch_args(shots, two, model)[1:]],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    records = summary_of(two)
    assert sorted(records) == list("abcdef") and {r["status"] for r in records.values()} == {"rendered"}
    assert {r["process"] for r in records.values()} == {0, 1}  # both processes took shots
    # each shot once: process r renders shots r, r + 2, ... of the list, and nothing else wrote a record
    assert {name: records[name]["process"] for name in "abcdef"} == {n: i % 2 for i, n in enumerate("abcdef")}
    assert sorted(path.name for path in (two / RECORDS).iterdir()) == [f"{n}.json" for n in "abcdef"]
    for name in "abcdef":  # other processes: float sums may round a pixel the other way, never more
        difference = np.abs(frames_of(two / name).astype(int) - frames_of(one / name))
        assert difference.max() <= 1 and difference.mean() < 0.01, name


def test_a_killed_run_resumes_without_redoing_finished_shots(inputs: Path, model: Path, tmp_path: Path) -> None:
    shots, out = six_shots(inputs), tmp_path / "out"
    command = [sys.executable, "-m", "inbetween", *batch_args(shots, out, model)]
    process = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((out / RECORDS).glob("[!.]*.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = {path.stem for path in (out / RECORDS).glob("[!.]*.json")}
    videos = {path.name: path.stat().st_mtime_ns for path in out.iterdir() if path.name in set("abcdef")}
    assert finished and len(finished) < 6, "the run was not killed part way"
    assert set(videos) >= finished  # a shot's video is in place before its record
    lengths = dict(zip("abcdef", [3, 5, 4, 3, 3, 3], strict=True))
    for name in videos:  # a video under its own name is whole: it was renamed there complete
        assert len(read_video(out / name)) == lengths[name]
    # what a kill part way through a write leaves: hidden temporaries beside the videos and the records
    (out / ".tmp-0123456789ab.c").mkdir(exist_ok=True)
    (out / RECORDS / ".tmp-0123456789ab.c.json").write_text("{")
    assert subprocess.run(command, capture_output=True, timeout=600).returncode == 0
    records = summary_of(out)
    assert {name for name, r in records.items() if r["status"] == "done before"} == set(videos)
    assert {name for name, r in records.items() if r["status"] == "rendered"} == set("abcdef") - set(videos)
    assert {name: (out / name).stat().st_mtime_ns for name in videos} == videos  # not rewritten
    hidden = [path for folder in (out, out / RECORDS) for path in folder.iterdir() if path.name.startswith(".")]
    assert not hidden  # no temporary left behind
