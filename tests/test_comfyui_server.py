"""The node pack in a real ComfyUI server: cloned into custom_nodes/, started on the CPU on 127.0.0.1, the README's
example workflow posted to its HTTP API (two keyframe images -> Load inbetween model (tiny-world) -> Inbetween
interpolate -> Save Image), the saved frames read back; and a bad input shown as the library's one-line error.

ComfyUI is not on the package registries and needs torchvision, which the test environment cannot have beside its
torch: it runs in its own Python, ``INBETWEEN_COMFYUI_PYTHON`` (``.ci/install-comfyui`` builds one from the
pip-installable ComfyUI source tree and ``.ci/run`` sets the variable). Without it the test skips with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inbetween.evaluation.report import contact_sheet
from inbetween.files import atomic_output
from inbetween.toyworld.seeds import HELDOUT_SEEDS
from inbetween.toyworld.world import interpolation_pairs

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / "examples" / "comfyui" / "inbetween_api.json"
# The README's picture of the example's output, rewritten when INBETWEEN_UPDATE_DOCS=1 (else into the test's folder).
PICTURE = REPO / "docs" / "comfyui" / "output.png"
STARTUP_S = 600
RUN_S = 600


def comfyui_python() -> str:
    """The Python of a ComfyUI installation, or a skip that says how to get one."""
    python = os.environ.get("INBETWEEN_COMFYUI_PYTHON", "")
    if not python:
        pytest.skip("no ComfyUI installed: run .ci/install-comfyui and set INBETWEEN_COMFYUI_PYTHON to what it prints")
    probe = subprocess.run([python, "-c", "import comfy.cmd.main"], capture_output=True, text=True)
    if probe.returncode:
        pytest.fail(f"INBETWEEN_COMFYUI_PYTHON={python} cannot import ComfyUI: {probe.stderr.strip()[-500:]}")
    return python


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A ComfyUI server process in its own base folder, with this checkout as a custom node pack."""

    def __init__(self, python: str, base: Path) -> None:
        self.base = base
        self.port = free_port()
        (base / "custom_nodes").mkdir(parents=True)
        (base / "input").mkdir()
        (base / "custom_nodes" / "inbetween").symlink_to(REPO, target_is_directory=True)  # as a clone is
        self.log = open(base / "server.log", "w")  # noqa: SIM115 (closed in stop)
        command = [
            python, "-m", "comfy.cmd.main", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--cwd", str(base), "--disable-auto-launch", "--disable-api-nodes", "--disable-known-models",
            "--database-url", "sqlite:///:memory:",
        ]  # fmt: skip
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        environment.pop("PYTHONPATH", None)  # ComfyUI's Python finds the library through the pack, not ours
        self.process = subprocess.Popen(  # its own process group: stop() ends the workers it starts too
            command, cwd=base, stdout=self.log, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url(path), timeout=30) as response:
            return json.load(response)

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            self.url(path), data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"POST {path}: {error.code} {error.read().decode()[:2000]}") from None

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"ComfyUI exited at start:\n{self.output()}")
            try:
                nodes = self.get("/object_info/InbetweenInterpolate")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
                continue
            assert "InbetweenInterpolate" in nodes, f"ComfyUI is up without the pack's nodes:\n{self.output()}"
            return
        raise AssertionError(f"ComfyUI did not answer in {STARTUP_S} s:\n{self.output()}")

    def run(self, workflow: dict) -> dict:
        """Queue ``workflow`` (API format) and wait for its history entry."""
        prompt_id = self.post("/prompt", {"prompt": workflow, "client_id": uuid.uuid4().hex})["prompt_id"]
        deadline = time.monotonic() + RUN_S
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            if self.process.poll() is not None:
                raise AssertionError(f"ComfyUI exited during the run:\n{self.output()}")
            time.sleep(0.5)
        raise AssertionError(f"the workflow did not finish in {RUN_S} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.base / "server.log").read_text()[-6000:]

    def stop(self) -> None:
        for signal_number, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
            try:
                os.killpg(self.process.pid, signal_number)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    python = comfyui_python()
    running = Server(python, tmp_path_factory.mktemp("comfyui"))
    try:
        running.wait_until_up()
        yield running
    finally:
        running.stop()


def held_out_video() -> np.ndarray:
    """A tiny-world video the model never saw, ``(N, H, W, 3)`` uint8: its ends are the keyframes."""
    return next(interpolation_pairs(range(HELDOUT_SEEDS, HELDOUT_SEEDS + 1000))).frames


def example_workflow(first: str, last: str) -> dict:
    """The README's example workflow with the images of its ``keyframes`` and ``more_keyframes`` inputs set to
    ``first`` and ``last``."""
    workflow = json.loads(WORKFLOW.read_text())
    inputs = node_of(workflow, "InbetweenInterpolate")["inputs"]
    for link, name in (("keyframes", first), ("more_keyframes", last)):
        loader = workflow[inputs[link][0]]
        assert loader["class_type"] == "LoadImage", f"the example's {link} come from a LoadImage node"
        loader["inputs"]["image"] = name
    return workflow


def node_of(workflow: dict, class_type: str) -> dict:
    (node,) = [node for node in workflow.values() if node["class_type"] == class_type]
    return node


def test_the_example_workflow_renders_the_librarys_frames_in_comfyui(server, tmp_path) -> None:
    truth = held_out_video()
    first, last = Image.fromarray(truth[0]), Image.fromarray(truth[-1])
    first.save(server.base / "input" / "first.png")
    last.save(server.base / "input" / "last.png")
    workflow = example_workflow("first.png", "last.png")

    entry = server.run(workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (saved,) = [out["images"] for out in entry["outputs"].values() if "images" in out]
    files = [server.base / "output" / image["subfolder"] / image["filename"] for image in saved]
    frames = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in files])

    # The library's frames for the same keyframes, seed and settings, in this process (our torch, not ComfyUI's).
    from inbetween.comfyui import interpolate, load_model

    settings = node_of(workflow, "InbetweenInterpolate")["inputs"]
    keys = torch.from_numpy(np.stack([np.asarray(first), np.asarray(last)])).float() / 255
    inputs = {name: value for name, value in settings.items() if not isinstance(value, list)}  # not the links
    (expected,) = interpolate(load_model(**node_of(workflow, "LoadInbetweenModel")["inputs"])[0], keys, **inputs)
    expected = (expected.numpy() * 255).clip(0, 255).astype(np.uint8)  # as SaveImage writes a frame

    assert frames.shape == expected.shape  # every frame, saved in order
    difference = np.abs(frames.astype(int) - expected.astype(int))
    # Two torch builds (ComfyUI's and ours) may put a float on the other side of an 8-bit level: one level, rarely.
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (difference.max(), (difference > 0).mean())
    picture = PICTURE if os.environ.get("INBETWEEN_UPDATE_DOCS") == "1" else tmp_path / PICTURE.name
    with atomic_output(picture, overwrite=True) as tmp:
        contact_sheet({"saved by ComfyUI": frames, "the library, same seed": expected}, zoom=3).save(tmp, format="PNG")
    ends = np.abs(frames[[0, -1]].astype(int) - np.stack([np.asarray(first), np.asarray(last)]).astype(int))
    assert ends.max() <= 1  # the example runs with keyframe-exact ends: its first and last frames are the keyframes


def test_a_bad_input_is_the_librarys_one_line_error_in_comfyui(server) -> None:
    Image.fromarray(held_out_video()[0]).save(server.base / "input" / "alone.png")
    workflow = example_workflow("alone.png", "alone.png")
    del node_of(workflow, "InbetweenInterpolate")["inputs"]["more_keyframes"]  # one keyframe only
    entry = server.run(workflow)
    assert entry["status"]["status_str"] == "error", entry["status"]
    (message,) = [data for kind, data in status_messages(entry) if kind == "execution_error"]
    assert message.strip().startswith("got 1 keyframe; give at least two")  # the library's words, first
    assert "\n" not in message.strip() and "Traceback" not in message


def status_messages(entry: dict) -> list[tuple[str, str]]:
    """``(kind, message)`` of a history entry's status: upstream ComfyUI gives ``[kind, {..., "exception_message"}]``
    pairs, the pip-installable one ``"kind: message"`` strings."""
    pairs = []
    for item in entry["status"]["messages"]:
        if isinstance(item, str):
            kind, _, text = item.partition(": ")
            pairs.append((kind, text))
        else:
            kind, data = item
            pairs.append((kind, data.get("exception_message", "") if isinstance(data, dict) else str(data)))
    return pairs
