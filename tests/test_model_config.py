"""The model options (inbetween.model_config.ModelConfig): defined once, and every front end (interpolate, the app,
batch, evaluate, ComfyUI) accepts and refuses the same values with the same line."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from inbetween.cli import build_parser, main
from inbetween.comfyui import InbetweenError, LoadInbetweenModel
from inbetween.comfyui import load_model as comfyui_load_model
from inbetween.errors import USER_ERRORS
from inbetween.loading import model_device
from inbetween.model_config import MODEL_OPTIONS, ModelConfig

PACKAGE = Path(__file__).parent.parent / "src" / "inbetween"
FLAGS = {"--" + name.replace("_", "-") for name in MODEL_OPTIONS}
# Declared elsewhere on purpose: TrainConfig loads its model its own way (mixed precision, on the accelerator's
# device, whole Hub snapshot; training.py is left to its owners); a tiny-world method names the adapter file inside
# the model folder it runs with; convert-checkpoint's --dtype is the precision of the adapter it writes.
NOT_MODEL_OPTIONS = {
    ("training.py", "TrainConfig"),
    ("toyworld/science.py", "WorldMethod"),
    ("cli/convert.py", "--dtype"),
}
NOT_MODEL_FLAGS = {(("train",), "--model"), (("train",), "--variant"), (("convert-checkpoint",), "--dtype")}


def declarations() -> list[tuple[str, str, str]]:
    """(file, dataclass or flag, option) for every dataclass field named like a model option and every string that
    is exactly a model option's flag, in the package's source."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        where = str(path.relative_to(PACKAGE))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for statement in node.body:
                    target = getattr(statement, "target", None)
                    if isinstance(statement, ast.AnnAssign) and isinstance(target, ast.Name):
                        nests = ast.unparse(statement.annotation) == "ModelConfig"  # a job's own ModelConfig
                        if target.id in MODEL_OPTIONS and not nests:
                            found.append((where, node.name, target.id))
            elif isinstance(node, ast.Constant) and node.value in FLAGS:
                found.append((where, node.value, node.value))
    return found


def test_each_model_option_is_declared_once_in_the_source():
    found = [(where, owner, name) for where, owner, name in declarations() if (where, owner) not in NOT_MODEL_OPTIONS]
    assert sorted(found) == sorted(("model_config.py", "ModelConfig", name) for name in MODEL_OPTIONS)


def parsers(parser, path=()):
    for action in parser._actions:
        if action.choices and isinstance(action.choices, dict):  # subcommands
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))
    yield path, parser


def test_every_commands_model_flags_come_from_the_dataclass():
    fields = {f"--{f.name.replace('_', '-')}": f for f in dataclasses.fields(ModelConfig)}
    seen = set()
    for path, parser in parsers(build_parser()):
        for action in parser._actions:
            flag = next((s for s in action.option_strings if s in fields), None)
            if flag is None or (path, flag) in NOT_MODEL_FLAGS:
                continue
            seen.add((path[0], flag))
            assert action.help.startswith(fields[flag].metadata["help"]), (path, flag)
            assert action.choices is None, (path, flag)  # refused by ModelConfig's line, not argparse's
    for command in ("interpolate", "app", "batch", "evaluate"):
        assert {flag for name, flag in seen if name == command} == set(fields), command
    inputs = LoadInbetweenModel.INPUT_TYPES()
    assert set(inputs["required"]) | set(inputs["optional"]) == set(MODEL_OPTIONS)


def test_a_configs_cli_flags_load_the_same_config():
    model = ModelConfig("tiny-world", variant="fp16", dtype="bfloat16", device="cuda:1", cpu_offload=True)
    args = build_parser(only="interpolate").parse_args(
        ["interpolate", "a.png", "b.png", "-o", "o.mp4", *model.cli_flags()]
    )
    assert ModelConfig(**{name: getattr(args, name) for name in MODEL_OPTIONS}) == model
    assert ModelConfig("tiny-world").cli_flags() == ["--model", "tiny-world"]


# the same values, the same line, in every front end ---------------------------------------------------------------


def as_options(message: str) -> str:
    """A CLI's line as the library says it: `--cpu-offload` -> `cpu_offload`, the command's prefix dropped."""
    message = message.strip().removeprefix("inbetween: error: ")
    return re.sub(r"`--([a-z-]+)`", lambda m: f"`{m[1].replace('-', '_')}`", message)


def cli_flags(options: dict) -> list[str]:
    flags = ["--dtype", options["dtype"], "--device", options["device"]]
    return flags + (["--cpu-offload"] if options.get("cpu_offload") else [])


def run_cli(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    return as_options(capsys.readouterr().err)


def interpolate(options: dict, missing: Path, capsys) -> str:
    files = [str(missing / "first.png"), str(missing / "last.png"), "-o", str(missing / "out.mp4")]
    return run_cli(["interpolate", *files, "--model", str(missing), *cli_flags(options)], capsys)


def batch(options: dict, missing: Path, capsys) -> str:
    argv = ["batch", str(missing / "shots.csv"), "-o", str(missing / "out"), "--model", str(missing)]
    return run_cli([*argv, *cli_flags(options)], capsys)


def evaluate(options: dict, missing: Path, capsys) -> str:
    argv = ["evaluate", "--data", str(missing), "--out", str(missing / "out"), "--methods", "blend", "--allow-cuts"]
    return run_cli([*argv, "--model", str(missing), *cli_flags(options)], capsys)


def app(options: dict, missing: Path, capsys) -> str:
    """The app's Python API (what `inbetween app` serves and the page loads)."""
    from inbetween.app import load_model

    with pytest.raises(USER_ERRORS) as error:
        load_model(ModelConfig(str(missing), **options))
    return str(error.value)


def comfyui(options: dict, missing: Path, capsys) -> str:
    with pytest.raises(InbetweenError) as error:
        comfyui_load_model(str(missing), "", **options)
    return str(error.value)


FRONT_ENDS = [interpolate, app, batch, evaluate, comfyui]
REFUSED = {
    "float64": dict(dtype="float64", device="cpu"),
    "tpu": dict(dtype="auto", device="tpu"),
    "cuda without a GPU": dict(dtype="auto", device="cuda"),
    "second GPU": dict(dtype="float16", device="cuda:1"),
    "offload on cpu": dict(dtype="auto", device="cpu", cpu_offload=True),
    "offload without a GPU": dict(dtype="auto", device="auto", cpu_offload=True),
}
ACCEPTED = {
    "cpu float32": dict(dtype="float32", device="cpu"),
    "auto": dict(dtype="auto", device="auto"),
    "bfloat16": dict(dtype="bfloat16", device="cpu"),
}
# mps: accepted everywhere on a machine that has it, refused everywhere with the same line on one that has not.
(ACCEPTED if torch.backends.mps.is_available() else REFUSED)["mps"] = dict(dtype="auto", device="mps")


def library_error(options: dict) -> str | None:
    """What the library says of ``options`` on this machine; None when it takes them."""
    try:
        model_device(ModelConfig("anything", **options))
    except ValueError as exc:
        return str(exc)
    return None


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("options", REFUSED.values(), ids=REFUSED)
@pytest.mark.parametrize("front_end", FRONT_ENDS, ids=lambda f: f.__name__)
def test_a_refused_model_option_is_the_same_line_everywhere(front_end, options, tmp_path, capsys, no_gpu):
    expected = library_error(options)
    assert expected is not None and "\n" not in expected
    assert as_options(front_end(options, tmp_path / "missing", capsys)) == expected


@pytest.mark.parametrize("options", ACCEPTED.values(), ids=ACCEPTED)
@pytest.mark.parametrize("front_end", FRONT_ENDS, ids=lambda f: f.__name__)
def test_an_accepted_model_option_goes_on_to_the_next_check(front_end, options, tmp_path, capsys, no_gpu):
    assert library_error(options) is None
    message = front_end(options, tmp_path / "missing", capsys)
    assert "not found" in message or "does not exist" in message, message  # the missing files, after the model
