"""The evaluation harness: keyframe pairs from real videos (inside shots), methods, metrics and the report.

``harness`` runs the methods and writes the results (``EvalConfig``, ``evaluate``, ``METHODS``); ``pairs`` and
``shots`` choose the keyframe pairs; ``metrics`` and ``networks`` score them; ``report`` writes ``summary.md``, the
tables, plots and contact sheets; ``flow`` is the optical-flow baseline.
"""

from __future__ import annotations

import importlib

_PUBLIC = ("EvalConfig", "METHODS", "evaluate")
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> object:
    if name in _PUBLIC:  # imported on first use: ``inbetween.evaluation.pairs`` alone does not load the harness
        return getattr(importlib.import_module(".harness", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
