"""Tiny world v2: evaluate rows as soon as the model parts they need exist, one core, beside the training.

Run: OMP_NUM_THREADS=1 nohup python /work/runs/eval_v2.py LANE >> /work/runs/eval_v2_LANE.log 2>&1 &
Resumable: every table is written with --resume, so a killed run goes on from its last finished row.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

RUN = Path("/work/runs/tiny_world_v2")
MODEL = RUN / "eval_model"  # forward model + the adapters as they land (the finished model folder, piece by piece)
DOCS = Path("/work/main/docs/tiny_world/v2")
ADAPTER = RUN / "adapter" / "backward_adapter.safetensors"
ABLATION = RUN / "adapter_own_attention" / "backward_adapter.safetensors"
FAST = ["--preset", "fast"]
PAPER = ["--preset", "paper"]  # the tiny world's guidance (none): 350 UNet rows a video

DEFAULT: list[str] = []  # the tiny world's own sampling: the paper's sampler at 10 Euler steps, no guidance
FINISHED = RUN / "tiny_world"  # the training run is over: its core is free
# (table folder, sampling flags, method, file it needs), in order of importance, per lane (one core each)
LANES = {
    "B": [
        ("default", DEFAULT, "crossfade", None),
        ("default", DEFAULT, "flow", None),
        ("default", DEFAULT, "forward-only", None),
        ("fast", FAST, "full", ADAPTER),
        ("default", DEFAULT, "full", ADAPTER),
        ("fast", FAST, "without-ra", ABLATION),
        ("default", DEFAULT, "without-ra", ABLATION),
        ("default", DEFAULT, "dual-no-ft", None),
        ("default", DEFAULT, "trf", None),
        ("fast", FAST, "dual-no-ft", None),
        ("default", DEFAULT, "full-no-reinjection", ADAPTER),
        ("default", DEFAULT, "backward-only", ADAPTER),
        ("fast", FAST, "full-no-reinjection", ADAPTER),
        ("fast", FAST, "backward-only", ADAPTER),
        ("fast", FAST, "trf", None),
    ],
    "A": [
        ("paper", PAPER, "full", FINISHED),
        ("vibid", ["--preset", "vibid"], "full", FINISHED),
        ("vibid-adapter", ["--preset", "vibid-adapter"], "full", FINISHED),
        ("paper", PAPER, "dual-no-ft", FINISHED),
        ("paper", PAPER, "without-ra", FINISHED),
    ],
}


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def restart_training_on_one_core() -> None:
    subprocess.run(["pkill", "-f", "train_tiny_world"])
    time.sleep(5)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.Popen(["bash", "/work/runs/train_v2.sh"], env=env, start_new_session=True)
    log("training restarted on one core")


def prepare_model() -> None:
    while not (RUN / "forward_model" / "model_index.json").is_file():
        time.sleep(30)
    if not MODEL.is_dir():
        restart_training_on_one_core()
        while not (RUN / "adapter_videos").is_dir():  # the restarted run has re-exported the forward model
            time.sleep(10)
        shutil.copytree(RUN / "forward_model", MODEL.with_suffix(".partial"))
        sys.path.insert(0, "/work/runs/code_v2b/src")
        from inbetween.toyworld.recipe import TinyWorldRecipe, save_world

        save_world(MODEL.with_suffix(".partial"), TinyWorldRecipe().world)
        MODEL.with_suffix(".partial").rename(MODEL)
        log(f"wrote {MODEL}")


def install_adapters() -> None:
    for source, name in ((ADAPTER, "backward_adapter.safetensors"),
                         (ABLATION, "backward_adapter_own_attention.safetensors")):
        if source.is_file() and not (MODEL / name).is_file():
            shutil.copy(source, MODEL / f"{name}.{sys.argv[1]}.partial")
            (MODEL / f"{name}.{sys.argv[1]}.partial").rename(MODEL / name)
            log(f"installed {name}")


def main() -> None:
    prepare_model()
    pending = list(LANES[sys.argv[1]])
    while pending:
        install_adapters()
        ready = [t for t in pending if t[3] is None or t[3].is_file()]
        if not ready:
            time.sleep(30)
            continue
        folder, flags, method, _ = task = ready[0]
        pending.remove(task)
        command = ["python", "-m", "inbetween", "toyworld", "evaluate", "--model", str(MODEL), *flags,
                   "--methods", method, "--out", str(DOCS / folder), "--resume"]
        log(" ".join(command))
        start = time.time()
        result = subprocess.run(command, cwd="/work/main")
        log(f"{folder} {method}: exit {result.returncode} after {time.time() - start:.0f} s")
    log("all rows done")


if __name__ == "__main__":
    main()
