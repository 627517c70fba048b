"""``inbetween batch``: many shots rendered with one model load per process, resumable, over ``accelerate launch``.

- :mod:`.shotlist`: the shot list (CSV or JSON), each row checked on its own (:func:`~.shotlist.read_shot_list`);
- :mod:`.render`: the job (:class:`~.render.BatchConfig`, :func:`~.render.render_batch`).
"""

from .render import BatchConfig, BatchSummary, render_batch
from .shotlist import Shot, ShotError, read_shot_list

__all__ = ["BatchConfig", "BatchSummary", "Shot", "ShotError", "read_shot_list", "render_batch"]
