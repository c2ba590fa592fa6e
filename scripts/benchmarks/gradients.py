"""IRDM vs torchdiffeq's adjoint vs backprop through the solver, side by side in one run.

Problems: torchdiffeq's own test problems (constant, linear, sine), its demo's cubic spiral, and hf_reduce's
neural fields (smooth MLP, stiff MLP pulled onto a moving manifold at rate 50, a conv ODE block on 16 real
digits), all from ``hf_reduce.ode.problems``. Every method runs at the *default* settings of its API at the
same ``rtol`` / ``atol`` (dopri5; IRDM's default ``n_nodes``); IRDM also runs with a 10x looser backward
tolerance, for comparisons at matched accuracy. Per problem: relative error of all gradients (y0, t,
parameters) against backprop through a tight solve, backward NFE and wall time (median of interleaved
repeats) with their ratio to the adjoint's, and the Chebyshev nodes IRDM kept.

    python scripts/benchmarks/gradients.py [--repeats 3] [--tol 1e-6] [--label after]

Results accumulate in ``results/gradients.json`` under ``--label`` (run it with an older hf_reduce on
``PYTHONPATH`` and ``--label before`` to compare implementations).
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import time
from pathlib import Path

import torch
from _measure import write_results
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

import hf_reduce  # noqa: F401
from hf_reduce.commands.common import format_table
from hf_reduce.ode import NFECounter
from hf_reduce.ode.irdm import odeint_irdm
from hf_reduce.ode.problems import T64, ConvField, ForcedStiffField, SmoothMLPField, gradients, problem
from hf_reduce.ode.problems import relative_error as gradient_error

try:  # absent from older versions (--label before)
    from hf_reduce.ode.irdm import IRDMStats
except ImportError:
    IRDMStats = None


def problems() -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor, float]]:
    """name -> (field, y0, t, reference tolerance)."""
    out = {name: (*problem(name), 1e-12) for name in ("constant", "linear", "sine", "cubic")}
    generator = torch.Generator().manual_seed(0)
    y_mlp = torch.randn(128, 16, dtype=T64, generator=generator)
    unit = torch.tensor([0.0, 1.0], dtype=T64)
    out["smooth MLP"] = (SmoothMLPField(16).double(), y_mlp, unit, 1e-11)
    out["stiff MLP (rate 50)"] = (ForcedStiffField(16, 50.0, hidden=64).double(), y_mlp, unit, 1e-11)
    from hf_reduce.data import image_tensors, load_image_classification

    digits = image_tensors(load_image_classification("digits")["test"], 1).tensors["pixel_values"][:16]
    torch.manual_seed(0)
    stem = nn.Conv2d(1, 16, 3, padding=1)
    with torch.no_grad():
        features = torch.relu(stem(digits)).double()
    out["conv ODE block, 16 digits"] = (ConvField().double(), features, unit, 1e-9)
    return out


def run_once(mode: str, func: NFECounter, y0, t, tol: float, backward_scale: float = 1.0) -> dict:
    kwargs = {"method": "dopri5", "rtol": tol, "atol": tol * 1e-2}
    stats = None
    if mode == "backprop":
        integrate = odeint
    elif mode == "adjoint":
        integrate = odeint_adjoint
    else:
        integrate = odeint_irdm
        if backward_scale != 1.0:
            kwargs.update(adjoint_rtol=tol * backward_scale, adjoint_atol=tol * 1e-2 * backward_scale)
        if IRDMStats is not None and "stats" in inspect.signature(odeint_irdm).parameters:
            stats = IRDMStats()
            kwargs["stats"] = stats

    func.reset()
    start = [0.0]

    class Timed(torch.autograd.Function):  # marks when the backward pass starts
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, g):
            start[0] = time.perf_counter()
            return g

    begin = time.perf_counter()
    grads = gradients(lambda f, y, tt, **kw: Timed.apply(integrate(f, y, tt, **kw)), func, y0, t, **kwargs)
    seconds = time.perf_counter() - start[0] if start[0] else time.perf_counter() - begin
    return {
        "grads": grads,
        "nfe_fwd": func.nfe_forward,
        "nfe_bwd": func.nfe_backward,
        "seconds": seconds,
        "nodes": None if stats is None else stats.nodes,
        "pieces": None if stats is None else len(stats.pieces),
    }


def benchmark(name, field, y0, t, tol, reference_tol, repeats) -> list[dict]:
    func = NFECounter(field)
    reference = gradients(odeint, func, y0, t, method="dopri5", rtol=reference_tol, atol=reference_tol)
    modes = [("backprop", 1.0), ("adjoint", 1.0), ("irdm", 1.0), ("irdm", 10.0)]
    runs = {m: [] for m in modes}
    for r in range(repeats):  # interleaved, alternating order
        for mode in modes[:: 1 if r % 2 else -1]:
            try:
                runs[mode].append(run_once(mode[0], func, y0, t, tol, mode[1]))
            except Exception as error:  # an implementation that fails is a result too
                runs[mode].append({"error": f"{type(error).__name__}: {str(error)[:80]}"})
    adjoint = runs[("adjoint", 1.0)][0]
    adjoint_seconds = statistics.median(r["seconds"] for r in runs[("adjoint", 1.0)])
    adjoint_error = gradient_error(adjoint["grads"], reference)
    rows = []
    for (mode, scale), results in runs.items():
        label = mode if mode != "irdm" else ("irdm" if scale == 1 else f"irdm, bwd tol x{scale:g}")
        first = results[0]
        if "error" in first:
            rows.append({"problem": name, "method": label, "error": first["error"]})
            continue
        seconds = statistics.median(r["seconds"] for r in results)
        error = gradient_error(first["grads"], reference)
        rows.append(
            {
                "problem": name,
                "method": label,
                "rel. grad error": error,
                "error / adjoint": error / adjoint_error if adjoint_error else float("nan"),
                "fwd NFE": first["nfe_fwd"],
                "bwd NFE": first["nfe_bwd"],
                "bwd NFE / adjoint": first["nfe_bwd"] / adjoint["nfe_bwd"] if mode != "backprop" else None,
                "bwd ms": 1000 * seconds,
                "bwd time / adjoint": seconds / adjoint_seconds,
                "nodes (pieces)": f"{first['nodes']} ({first['pieces']})" if first["nodes"] else "",
            }
        )
    print(format_table(rows), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--label", default="after", help="key of this run in results/gradients.json")
    parser.add_argument("--problems", nargs="*", help="a subset of the problems, by name")
    args = parser.parse_args()
    rows = []
    for name, (field, y0, t, reference_tol) in problems().items():
        if args.problems and name not in args.problems:
            continue
        rows += benchmark(name, field, y0, t, args.tol, reference_tol, args.repeats)
    print()
    print(format_table(rows))
    path = Path(__file__).resolve().parent / "results" / "gradients.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report[args.label] = {"args": vars(args), "rows": rows}
    print(write_results("gradients", report))


if __name__ == "__main__":
    main()
