"""The browser app (`inbetween app`): its parts in-process, the real server in a subprocess driven by
`gradio_client`, and the page in a real headless browser (Debian's chromium + chromedriver through Selenium).

Every generation uses the shipped tiny-world model (32x32) with a few steps, so each takes a second or two.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import random_keyframe
from PIL import Image

from inbetween.app.generation import (
    Cancelled,
    Job,
    ModelSlot,
    ModelUnavailable,
    Run,
    RunFolders,
    generate,
    settings_command,
)
from inbetween.app.uploads import read_keyframe
from inbetween.config import PRESETS, SamplingConfig
from inbetween.files import atomic_output
from inbetween.model_config import ModelConfig

needs_app = pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None or importlib.util.find_spec("gradio_client") is None,
    reason="the app's extra is not installed: pip install -e '.[app]'",
)

REPO = Path(__file__).resolve().parent.parent
# The README's screenshot of the app, rewritten when INBETWEEN_UPDATE_DOCS=1 (else into the test's folder).
SCREENSHOT = REPO / "docs" / "app.png"
# Few steps, no guidance, no re-injection: a 32x32 tiny-world generation in about a second.
QUICK = dict(num_inference_steps=2, noise_injection_steps=0, max_guidance_scale=1.0)
SERVER_START_S = 120  # importing torch and gradio on a busy 2-core machine


def frame_count(path: str | Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Keyframes the size of the tiny world, and files that are not keyframes (the large ones are refused from their
    headers: decoding them would allocate 192 MB and 2.7 GB from files of about 100 bytes)."""
    from inbetween.toyworld.science import heldout_videos

    folder = tmp_path_factory.mktemp("keyframes")
    first, second = heldout_videos(2)  # the tiny world's own held-out pairs: the screenshot shows a real one
    for index, frame in enumerate((first.frames[0], first.frames[-1], second.frames[-1])):
        Image.fromarray(frame).save(folder / f"key{index}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    truncated = (folder / "key0.png").read_bytes()
    (folder / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    (folder / "large.png").write_bytes(png_header_only(8_000, 8_000))  # above our limit, below Pillow's
    (folder / "bomb.png").write_bytes(png_header_only(30_000, 30_000))  # above Pillow's own limit too
    random_keyframe(5, size=(32, 32)).save(folder / "animation.gif")  # a real image, in a format we refuse
    return folder


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels but holds a few bytes of them (a decompression bomb's header:
    decoding it would allocate ``3 * width * height`` bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_a_valid_keyframe_decodes_to_rgb(files):
    image = read_keyframe(files / "key0.png")
    assert image.mode == "RGB" and image.size == (32, 32)
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(files / "key0.png").convert("RGB")))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("broken.png", r"keyframe `broken.png` is not a PNG, JPEG or WebP image"),
        ("truncated.png", r"cannot decode keyframe `truncated.png`"),
        ("large.png", r"keyframe `large.png` is 8000x8000 \(64 megapixels\), above the 50-megapixel limit"),
        ("bomb.png", r"keyframe `bomb.png` is too large to decode safely"),
        ("animation.gif", r"keyframe `animation.gif` is not a PNG, JPEG or WebP image"),
    ],
)
def test_an_unsafe_or_broken_upload_is_a_one_line_message(files, name, message):
    with pytest.raises(ValueError, match=message) as error:
        read_keyframe(files / name)
    assert "\n" not in str(error.value) and str(files) not in str(error.value)  # no server paths either


# ---------------------------------------------------------------------------------------------- settings


def test_a_job_is_its_preset_with_the_given_options():
    job = Job(("a.png", "b.png"), ("a.png", "b.png"), preset="fast", options=dict(num_inference_steps=7, fusion=None))
    assert job.config() == SamplingConfig.preset("fast", num_inference_steps=7)


def test_an_unticked_rotation_box_turns_rotation_off():
    from inbetween.app.ui import page_options

    options = page_options({"rotation": False, "fusion": "linear", "num_frames": 0})
    assert options == {"rotation": False, "fusion": "linear", "num_frames": None}  # 0 is unset only where None is
    job = Job(("a.png", "b.png"), ("a.png", "b.png"), preset="paper", options=options)
    assert (job.config().rotation, job.config().fusion) == (False, "linear")


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (Job((), (), preset="quick"), r"unknown preset 'quick'; choose one of paper, fast"),
        (Job((), (), options=dict(rotation="yes")), r"`rotation` must be a bool, got 'yes'"),
        (Job((), (), options=dict(num_inference_steps=2.5)), r"`num_inference_steps` must be a int"),
        (Job((), (), options=dict(num_inference_steps=0)), r"`num_inference_steps` must be at least 1"),
        (Job((), (), options=dict(steps=3)), r"unknown sampling option `steps`"),
        (Job((), (), seed=-1), r"`seed` must be a whole number from 0"),
        (Job((), (), segment_batch=0), r"`segment_batch` must be a whole number of at least 1"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(job, message):
    with pytest.raises(ValueError, match=message):
        job.check()


@pytest.mark.parametrize("preset", list(PRESETS))
def test_the_settings_command_makes_the_same_config_in_the_cli(preset):
    from inbetween.cli import build_parser

    options = dict(num_inference_steps=7, rotation=False, fusion="linear", noise_aug_strength=0.05, height=64)
    job = Job(("first frame.png", "b.png", "c.png"), ("first frame.png", "b.png", "c.png"), loop=True,
              preset=preset, seed=123, segment_batch=2, options=options)  # fmt: skip
    model = ModelConfig("tiny-world", dtype="float32", adapter="my adapter.safetensors")
    command = settings_command(model, job, job.config())
    words = shlex.split(command)
    assert words[:2] == ["inbetween", "interpolate"]
    args = build_parser(only="interpolate").parse_args(words[1:])
    cli_config = SamplingConfig(**{name: getattr(args, name) for name in SamplingConfig.field_names()})
    assert cli_config == job.config()
    assert (args.keyframes, args.loop, args.seed, args.segment_batch) == (list(job.names), True, 123, 2)
    assert (args.model, args.adapter, args.dtype, args.device) == (
        "tiny-world",
        "my adapter.safetensors",
        "float32",
        "auto",
    )


@needs_app
def test_the_page_shows_each_presets_values():
    from inbetween.app.ui import ADVANCED, preset_values

    for name in PRESETS:
        config = SamplingConfig.preset(name)
        shown = dict(zip(ADVANCED, preset_values(name), strict=True))
        value = {option: getattr(config, option) for option in ADVANCED}
        assert shown == {option: 0 if v is None else v for option, v in value.items()}  # the page's 0 is unset


# ---------------------------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def slot() -> ModelSlot:
    from inbetween.app import load_model

    slot = ModelSlot(ModelConfig("tiny-world"), load_model)
    slot.start()
    return slot


def test_generation_reports_every_step_of_every_segment(slot, files, tmp_path):
    names = ("key0.png", "key1.png", "key2.png")
    job = Job(tuple(str(files / n) for n in names), names, segment_batch=1, options=dict(QUICK, num_frames=4))
    seen = []
    result = generate(slot, job, RunFolders(tmp_path), on_progress=seen.append)
    texts = [p.text for p in seen if p.done > 0]
    assert texts == [f"segment {s} of 2: step {k} of 2" for s in (1, 2) for k in (1, 2)]
    assert [p.done for p in seen if p.done > 0] == [1, 2, 3, 4] and seen[-1].total == 4
    assert len(result.frames) == frame_count(result.video) == 2 * (4 - 1) + 1
    assert result.frames[0].size == (32, 32) and Image.open(result.strip).size[0] > 4 * 32


def test_the_settings_command_remakes_the_video_from_a_shell(slot, files, tmp_path, monkeypatch):
    from inbetween.cli import main

    names = ("key0.png", "key1.png", "key2.png")
    job = Job(tuple(str(files / n) for n in names), names, preset="fast", seed=7, options=dict(QUICK, num_frames=4))
    result = generate(slot, job, RunFolders(tmp_path / "app"))
    monkeypatch.chdir(files)  # the command names the keyframes as the user uploaded them
    words = shlex.split(result.command)
    words[words.index("-o") + 1] = f"{tmp_path / 'cli'}/"  # PNG frames: exact, unlike any two mp4 encodings
    assert main(words[1:]) == 0
    from_shell = [np.asarray(Image.open(path)) for path in sorted((tmp_path / "cli").glob("*.png"))]
    assert len(from_shell) == len(result.frames) == 2 * (4 - 1) + 1
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(from_shell, result.frames, strict=True))


def test_cancel_stops_between_steps_and_frees_the_model(slot, files, tmp_path):
    names = ("key0.png", "key1.png")
    job = Job(tuple(str(files / n) for n in names), names, options=dict(QUICK, num_inference_steps=6))
    run, steps = Run(owner="me"), []

    def cancel_after_two(progress):
        if progress.done > 0:
            steps.append(progress.done)
        if progress.done == 2:
            assert not slot.cancel("someone else")  # only the owner's session cancels its run
            assert slot.cancel("me")

    with pytest.raises(Cancelled):
        generate(slot, job, RunFolders(tmp_path), on_progress=cancel_after_two, run=run)
    assert steps == [1, 2]
    assert not list(tmp_path.glob("run-*"))  # nothing was written
    again = generate(slot, Job(job.keyframes, names, options=QUICK), RunFolders(tmp_path))  # the model is free
    assert frame_count(again.video) == 8


@needs_app
def test_a_missing_model_is_a_message_not_a_traceback(files, tmp_path):
    from inbetween.app import load_model
    from inbetween.app.ui import status_text

    slot = ModelSlot(ModelConfig(str(tmp_path / "no_such_model")), load_model)
    slot.start()
    job = Job((str(files / "key0.png"), str(files / "key1.png")), ("key0.png", "key1.png"))
    with pytest.raises(ModelUnavailable, match=r"could not be loaded: model folder `.*no_such_model` not found"):
        generate(slot, job, RunFolders(tmp_path))
    assert "⚠ model" in status_text(slot) and "not found" in status_text(slot)


# ---------------------------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``inbetween app`` in a subprocess, on a free port of 127.0.0.1, its console in a log file."""

    def __init__(self, log: Path, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "inbetween", "app", "--port", str(self.port), *flags]
        with open(log, "w") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.folder = self._wait_until_serving()

    def output(self) -> str:
        return self.log.read_text()

    def _wait_until_serving(self) -> Path:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline and self.process.poll() is None:
            folder = re.search(r"temporary files in (\S+) \(deleted on exit\)", self.output())
            if folder and "Running on local URL" in self.output():
                return Path(folder[1])
            time.sleep(0.2)
        self.stop()
        raise AssertionError("the app did not start:\n" + self.output())

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("server") / "console.log", "--model", "tiny-world")
    yield server
    server.stop()


@pytest.mark.slow
@needs_app
def test_the_api_interpolates_keyframes_into_a_video(server, files):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(endpoints) == ["/interpolate"]  # the one public endpoint
    two = client.predict([handle_file(files / "key0.png"), handle_file(files / "key1.png")], num_frames=5,
                         **QUICK, api_name="/interpolate")  # fmt: skip
    assert frame_count(two) == 5
    loop = client.predict([handle_file(files / f"key{i}.png") for i in range(3)], loop=True, num_frames=4,
                          **QUICK, api_name="/interpolate")  # fmt: skip
    assert frame_count(loop) == 3 * (4 - 1)


@pytest.mark.slow
@needs_app
def test_the_api_interpolates_with_a_wan_model_and_a_prompt(tmp_path_factory, files):
    from gradio_client import Client, handle_file
    from tiny_wan import save_tiny_wan

    folder = save_tiny_wan(tmp_path_factory.mktemp("wan") / "wan22", "wan2.2-a14b")
    server = Server(tmp_path_factory.mktemp("wan-server") / "console.log", "--model", str(folder), "--device", "cpu")
    try:
        client = Client(server.url, verbose=False)
        keyframes = [handle_file(files / "key0.png"), handle_file(files / "key1.png")]
        video = client.predict(keyframes, num_frames=5, height=32, width=32, num_inference_steps=2,
                               prompt="a ball bounces", api_name="/interpolate")  # fmt: skip
        assert frame_count(video) == 5
    finally:
        server.stop()


@pytest.mark.slow
@needs_app
def test_the_api_says_what_is_wrong_with_a_broken_image(server, files):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server.url, verbose=False)
    with pytest.raises(AppError, match=r"keyframe `broken.png` is not a PNG, JPEG or WebP image; upload one"):
        client.predict([handle_file(files / "key0.png"), handle_file(files / "broken.png")], api_name="/interpolate")
    with pytest.raises(AppError, match=r"`num_inference_steps` must be at least 1, got 0"):
        client.predict([handle_file(files / "key0.png"), handle_file(files / "key1.png")], num_inference_steps=0,
                       api_name="/interpolate")  # fmt: skip


@pytest.mark.slow
@needs_app
def test_a_missing_adapter_is_a_message(files, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    server = Server(
        tmp_path / "console.log", "--model", "tiny-world", "--adapter", str(tmp_path / "missing.safetensors")
    )
    try:
        client = Client(server.url, verbose=False)
        with pytest.raises(AppError, match=r"could not be loaded: adapter `.*missing.safetensors` not found"):
            client.predict([handle_file(files / "key0.png"), handle_file(files / "key1.png")], api_name="/interpolate")
    finally:
        assert server.stop() == 0
    assert not server.folder.exists()  # the temporary files went with it


# ---------------------------------------------------------------------------------------------- the browser


def browser_paths() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def visible(elements: list) -> object | None:
    return next((element for element in elements if element.is_displayed()), None)


@pytest.mark.slow
@needs_app
@pytest.mark.skipif(browser_paths() is None, reason="no chromium + chromedriver (Debian: apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")  # fmt: skip
def test_the_page_makes_a_video_that_plays_in_a_real_browser(server, files, tmp_path):
    screenshot = SCREENSHOT if os.environ.get("INBETWEEN_UPDATE_DOCS") == "1" else tmp_path / SCREENSHOT.name
    pytest.importorskip("selenium", reason="selenium is in the test extra: pip install -e '.[test]'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # both paths given: Selenium Manager downloads nothing
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1200",
                     "--autoplay-policy=no-user-gesture-required", "--mute-audio"):  # fmt: skip
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    wait = WebDriverWait(browser, 120)
    try:
        browser.get(server.url)
        upload = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#keyframes input[type=file]"))
        upload.send_keys(f"{files / 'key0.png'}\n{files / 'key1.png'}")
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#keyframe-order img")) == 2)
        wait.until(lambda b: "ready" in b.find_element(By.ID, "model-status").text)

        # Cancel a generation with the paper's 50 steps once it is under way: it stops between two steps.
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda b: re.search(r"step [1-9]\d* of 50", b.find_element(By.ID, "video").text))
        browser.find_element(By.ID, "cancel").click()
        wait.until(lambda b: b.find_element(By.ID, "run-status").text.startswith("Cancelled"))
        stopped = wait.until(lambda b: re.search(r"cancelled after step (\d+) of 50", server.output()))
        assert int(stopped[1]) < 50

        accordion = "//span[contains(text(), 'advanced sampling options')]"
        wait.until(lambda b: b.find_element(By.XPATH, accordion)).click()
        steps = wait.until(lambda b: visible(b.find_elements(By.CSS_SELECTOR, "#option-num-inference-steps input")))
        steps.clear()
        steps.send_keys("10")
        started = time.monotonic()
        browser.find_element(By.ID, "generate").click()
        video = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#video video"))
        wait.until(lambda b: b.execute_script("return arguments[0].readyState >= 1", video))
        seconds = time.monotonic() - started
        assert browser.execute_script("return arguments[0].duration", video) > 0
        browser.execute_script("arguments[0].play()", video)
        wait.until(lambda b: b.execute_script("return arguments[0].currentTime > 0", video))  # it plays
        command = wait.until(lambda b: b.find_element(By.ID, "command").text)
        assert "inbetween interpolate key0.png key1.png" in command and "--steps 10" in command
        assert "Done: 8 frames, 32x32" in browser.find_element(By.ID, "run-status").text
        print(f"Generate to video in the browser: {seconds:.1f} s")
        browser.find_element(By.XPATH, accordion).click()  # the screenshot shows the page as it first looks
        browser.execute_script("window.scrollTo(0, 0)")
        time.sleep(1)  # the accordion's animation
        with atomic_output(screenshot, overwrite=True) as tmp:
            assert browser.save_screenshot(str(tmp))
    finally:
        browser.quit()
    assert Image.open(screenshot).size[0] >= 1000
