"""ComfyUI's entry point to the inbetween node pack: ComfyUI imports this folder, cloned into its ``custom_nodes/``.

The nodes live in the library (``inbetween.comfyui``). ``pip install -r requirements.txt`` in this folder (what
ComfyUI-Manager does) installs its dependencies into ComfyUI's Python, leaving ComfyUI's torch as it is; the library
itself is imported from this checkout's ``src/`` unless it is installed (``pip install -e .``).
"""

import importlib
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve()


def import_nodes():
    """``inbetween.comfyui``, the library's, also when ComfyUI imported this folder under the library's own name (a
    clone named ``inbetween``: ComfyUI registers a pack under its folder's name)."""
    if __name__ == "inbetween":
        sys.modules.pop("inbetween", None)  # this folder took the library's name in sys.modules: give it back
    spec = importlib.util.find_spec("inbetween")
    if spec is None or Path(spec.origin or "").resolve() == HERE:  # not installed, or only this folder found
        sys.path.insert(0, str(HERE.parent / "src"))
        importlib.invalidate_caches()
    return importlib.import_module("inbetween.comfyui")


nodes = import_nodes()
NODE_CLASS_MAPPINGS = nodes.NODE_CLASS_MAPPINGS
NODE_DISPLAY_NAME_MAPPINGS = nodes.NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
