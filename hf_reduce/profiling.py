"""Cost of a model: parameters, multiply-accumulates (torch's ``FlopCounterMode``) and measured latency.

Latencies of several models are measured interleaved (one call of each in turn, repeated) so that a change
of machine load hits all of them alike; the median is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: torch.nn.Module, pixel_values: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass per example (FLOPs / 2, as counted by ``FlopCounterMode``:
    convolutions and matrix products; element-wise operations are not counted)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(pixel_values=pixel_values)
    model.train(was_training)
    return counter.get_total_flops() // 2 // len(pixel_values)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def interleaved_latency(
    models: Mapping[str, torch.nn.Module],
    make_input: Callable[[int], torch.Tensor],
    batch_sizes: tuple[int, ...] = (1, 64),
    repeats: int = 50,
    warmup: int = 5,
) -> dict[str, dict[int, float]]:
    """Median seconds per forward pass of each model at each batch size, measured interleaved."""
    results: dict[str, dict[int, float]] = {name: {} for name in models}
    for model in models.values():
        model.eval()
    for batch_size in batch_sizes:
        x = make_input(batch_size)
        times: dict[str, list[float]] = {name: [] for name in models}
        for i in range(warmup + repeats):
            for name, model in models.items():
                _synchronize(x.device)
                start = time.perf_counter()
                model(pixel_values=x)
                _synchronize(x.device)
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
        for name in models:
            results[name][batch_size] = statistics.median(times[name])
    return results


def model_costs(
    models: Mapping[str, torch.nn.Module], test_data: Any, accelerator: Any, repeats: int
) -> dict[str, dict[str, Any]]:
    """Accuracy on ``test_data``, parameters, MACs and latency (batch 1 and 64, measured interleaved) of each
    model, by name."""
    c = next(iter(models.values())).config
    example = test_data[0]["pixel_values"][None]
    latency = interleaved_latency(
        models,
        lambda b: torch.rand(b, c.num_channels, c.image_size, c.image_size, device=accelerator.device),
        repeats=repeats,
    )
    return {
        name: {
            "accuracy": _evaluate(model, test_data, accelerator=accelerator, desc=name)["accuracy"],
            "parameters": count_parameters(model),
            "MACs": count_macs(model, example.to(accelerator.device)),
            "latency b1 ms": 1000 * latency[name][1],
            "latency b64 ms": 1000 * latency[name][64],
        }
        for name, model in models.items()
    }


def compare_models(
    original: torch.nn.Module, reduced: torch.nn.Module, test_data: Any, accelerator: Any, repeats: int
) -> list[dict[str, Any]]:
    """Accuracy, parameters, MACs and interleaved latency (batch 1 and 64) of both models, one row each."""
    costs = model_costs({"original": original, "reduced": reduced}, test_data, accelerator, repeats)
    rows = [{"model": name, **row} for name, row in costs.items()]
    rows.append(in_words(rows[0], rows[1]))
    return rows


def cost_ratios(original: dict[str, Any], reduced: dict[str, Any]) -> dict[str, float]:
    """Original / reduced for each cost (> 1: the reduced model is cheaper), and the accuracy change."""
    out = {"accuracy change": reduced["accuracy"] - original["accuracy"]}
    for key in ("parameters", "MACs", "latency b1 ms", "latency b64 ms"):
        out[key] = round(original[key] / reduced[key], 2)
    return out


def _factor(ratio: float, cheaper: str, dearer: str) -> str:
    if ratio >= 1:
        return f"{ratio:.2f}x {cheaper}"
    return f"{1 / ratio:.2f}x {dearer}"


def in_words(original: dict[str, Any], reduced: dict[str, Any]) -> dict[str, Any]:
    """The comparison row, in words: "1.16x more" parameters is not hidden in a ratio of 0.86."""
    r = cost_ratios(original, reduced)
    return {
        "model": "reduced vs original",
        "accuracy": f"{100 * r['accuracy change']:+.2f} pt",
        "parameters": _factor(r["parameters"], "fewer", "more"),
        "MACs": _factor(r["MACs"], "fewer", "more"),
        "latency b1 ms": _factor(r["latency b1 ms"], "faster", "slower"),
        "latency b64 ms": _factor(r["latency b64 ms"], "faster", "slower"),
    }


def summary_in_words(original: dict[str, Any], reduced: dict[str, Any]) -> str:
    """``"more parameters, fewer MACs"``-style verdict of a reduction."""
    r = cost_ratios(original, reduced)
    parts = [
        ("fewer" if r["parameters"] >= 1 else "more") + " parameters",
        ("fewer" if r["MACs"] >= 1 else "more") + " MACs",
        ("faster" if r["latency b64 ms"] >= 1 else "slower") + " at batch 64",
    ]
    return ", ".join(parts)


def _evaluate(*args: Any, **kwargs: Any) -> dict[str, float]:
    from .training import evaluate_model  # late: training imports accelerate, profiling stays light

    return evaluate_model(*args, **kwargs)
