"""Metrics as ``evaluate`` modules loaded by path, so ``evaluate`` works without the Hub."""

from __future__ import annotations

from pathlib import Path

import evaluate

_HERE = Path(__file__).resolve().parent
AVAILABLE_METRICS = ("accuracy", "f1")


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load one of hf_reduce's bundled metrics (``accuracy``, ``f1`` = macro F1) by name, offline."""
    if name not in AVAILABLE_METRICS:
        raise ValueError(f"unknown metric {name!r}; available: {list(AVAILABLE_METRICS)}")
    return evaluate.load(str(_HERE / name))


def load_metrics(names: list[str] | tuple[str, ...] = AVAILABLE_METRICS) -> evaluate.CombinedEvaluations:
    """Several bundled metrics combined, e.g. ``load_metrics(["accuracy", "f1"]).compute(...)``."""
    return evaluate.combine([load_metric(n) for n in names])
