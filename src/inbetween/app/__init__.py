"""``inbetween app``: the browser app, a thin gradio face over the library (``pip install "inbetween[app]"``).

``generation`` runs one request on the model (no gradio), ``uploads`` decodes keyframes safely, ``ui`` is the page
and its ``/interpolate`` endpoint. :func:`serve` starts it: the model loads in the background while the page is up,
one generation runs at a time (the others wait in a queue that shows their position), and every file the app
writes (uploads, videos, strips, gradio's copies) lives in one temporary folder deleted when it stops.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import typing
from collections.abc import Callable
from pathlib import Path

from ..model_config import ModelConfig

if typing.TYPE_CHECKING:
    from ..pipeline import InbetweenPipeline

__all__ = ["load_model", "serve"]

MAX_QUEUE = 16  # waiting generations; one more is refused with "queue full" in the page


def load_model(model: ModelConfig) -> InbetweenPipeline:
    """The pipeline as ``inbetween interpolate`` loads it: same model options, same one-line errors; the device and
    the adapter are checked first, so a missing one is reported without waiting for the model."""
    from ..loading import load_pipeline, model_device

    device = model_device(model)
    return load_pipeline(model, device, progress=False)  # the page shows the progress, not the console


def serve(
    model: ModelConfig,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    load: Callable[[ModelConfig], InbetweenPipeline] = load_model,
) -> None:
    """Serve the app on ``host:port`` until interrupted (Ctrl-C or SIGTERM), then delete its temporary folder.

    Binds to this machine only unless ``host`` says otherwise; a public share link only with ``share``.
    """
    folder = Path(tempfile.mkdtemp(prefix="inbetween-app-"))
    # Set before gradio is imported (it reads them then): uploads and its copies of our outputs go to our folder,
    # and nothing is reported to gradio's servers.
    os.environ["GRADIO_TEMP_DIR"] = str(folder / "gradio")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        from .generation import ModelSlot, RunFolders
        from .ui import build_app
        from .uploads import MAX_UPLOAD_MB

        slot = ModelSlot(model, load)
        app = build_app(slot, RunFolders(folder / "runs"))
        app.queue(default_concurrency_limit=1, max_size=MAX_QUEUE)
        print(f"inbetween app: temporary files in {folder} (deleted on exit)", flush=True)
        app.launch(
            server_name=host,
            server_port=port,
            share=share,
            max_file_size=f"{MAX_UPLOAD_MB}mb",
            ssr_mode=False,
            footer_links=["api"],
            prevent_thread_lock=True,
        )
        # The model loads once the server is up (a port in use fails before any of it) and the page is built (two
        # threads importing diffusers' lazy modules at once can fail).
        slot.start()
        try:
            app.block_thread()  # until Ctrl-C or SIGTERM
        finally:
            slot.close()  # a running generation stops at its next step: no thread is left inside torch at exit
    finally:
        shutil.rmtree(folder, ignore_errors=True)
