"""The public API: every name of ``inbetween.__all__`` imports, importing ``inbetween`` stays cheap, and the front
ends reach the library through ``__all__`` or through the support modules the package docstring names."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import inbetween

PACKAGE = Path(inbetween.__file__).parent
FRONT_ENDS = ("cli", "app", "batch", "comfyui")  # packages and the one module, under src/inbetween
# Shared plumbing the front ends use module by module (named in inbetween's docstring); everything else they take
# from the library is in __all__.
SUPPORT_MODULES = (
    "options",
    "errors",
    "files",
    "hub",
    "loading",
    "dtypes",
    "video_io",
    "memory",
    "toyworld",
    "families",
    "progress",
    "model_config",
)


@pytest.mark.parametrize("name", inbetween.__all__)
def test_every_public_name_imports(name: str) -> None:
    assert getattr(inbetween, name) is not None


def test_all_is_the_lazily_imported_names() -> None:
    assert sorted(inbetween.__all__) == sorted(inbetween._PUBLIC)


def test_importing_inbetween_loads_no_torch() -> None:
    code = "import sys, inbetween; inbetween.__all__; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def front_end_files() -> list[Path]:
    files = []
    for name in FRONT_ENDS:
        path = PACKAGE / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return files


def library_imports(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` for each name ``path`` imports from the package, the module relative to ``inbetween``."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]  # ("inbetween", "cli") for cli/jobs.py
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package[: len(package) - node.level + 1]
            module = ".".join([*base[1:], *(node.module.split(".") if node.module else [])])
            found += [(module, alias.name) for alias in node.names]
    return found


def test_front_ends_import_the_library_through_the_public_api_or_a_support_module() -> None:
    stray = []
    for path in front_end_files():
        for module, name in library_imports(path):
            top = module.split(".")[0]
            if module == "" and name == "__version__" or top in FRONT_ENDS or top in SUPPORT_MODULES:
                continue
            if name not in inbetween.__all__:
                stray.append(f"{path.relative_to(PACKAGE)}: from {module} import {name}")
    assert not stray, "export these from inbetween (or name the module a support module):\n" + "\n".join(stray)
