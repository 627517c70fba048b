"""ComfyUI's entry point to the inbetween node pack: ComfyUI imports this folder, cloned into its ``custom_nodes/``.

The nodes live in the library (``inbetween.comfyui``). Install it into ComfyUI's Python with ``pip install -e .`` in
this folder (what ``requirements.txt`` does for ComfyUI-Manager); a checkout that is not installed is found through
its ``src/`` folder.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("inbetween") is None:  # a plain clone: use its own source tree
    sys.path.append(str(Path(__file__).resolve().parent / "src"))

from inbetween.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
