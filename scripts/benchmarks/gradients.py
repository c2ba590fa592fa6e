"""IRDM vs torchdiffeq's adjoint vs backprop through the solver, side by side in one run.

Same forward solver (dopri5), tolerances and backward error control (the adjoint seminorm) for the adjoint and
IRDM. Per problem: backward NFE, backward wall time (median of interleaved repeats), memory held for the
backward pass, and the relative error of all gradients (y0 and parameters) against backprop through a
tight-tolerance solve. Memory: on a GPU the peak allocated
during forward+backward; on a CPU the bytes kept for backward (autograd's saved tensors, plus the stored
Chebyshev nodes for IRDM).

    python scripts/benchmarks/gradients.py [--repeats 5] [--nodes 16 32]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from _measure import saved_tensor_bytes
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

import hf_reduce  # noqa: F401
from hf_reduce.commands.common import format_table
from hf_reduce.ode import NFECounter
from hf_reduce.ode.irdm import odeint_irdm


class MLPField(nn.Module):
    """A smooth field ``f(t, z) = MLP(z)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 64), nn.Tanh(), nn.Linear(64, dim))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class DissipativeField(nn.Module):
    """``f(t, z) = rate · (MLP(z, sin 2πt) - z)``: z is pulled onto a moving slow manifold at ``rate``.

    Integrating z backwards (what the adjoint does) amplifies every error by ~e^rate per unit time, while the
    trajectory keeps changing, so the backward state cannot simply sit on a fixed point.
    """

    def __init__(self, dim: int, rate: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, 64), nn.Tanh(), nn.Linear(64, dim))
        self.rate = rate

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        forcing = torch.sin(2 * math.pi * t).expand(*z.shape[:-1], 1)
        return self.rate * (self.net(torch.cat([z, forcing], -1)) - z)


class ConvField(nn.Module):
    """The dynamics of an ODE block of an image classifier: conv, GroupNorm, ReLU, conv."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(4, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.norm(self.conv1(z))))


def run_once(
    mode: str,
    func: NFECounter,
    y0: torch.Tensor,
    t: torch.Tensor,
    tol: float,
    nodes: int,
    backward_rtol: float | None = None,
) -> dict:
    func.reset()
    func.zero_grad(set_to_none=True)
    y0 = y0.detach().requires_grad_(True)
    kwargs = {"method": "dopri5", "rtol": tol, "atol": tol * 1e-2}
    if mode != "backprop":
        kwargs["adjoint_options"] = {"norm": "seminorm"}
    device = y0.device
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    counter = {"bytes": 0}
    with saved_tensor_bytes(counter):
        if mode == "backprop":
            out = odeint(func, y0, t, **kwargs)
        elif mode == "adjoint":
            out = odeint_adjoint(func, y0, t, **kwargs)
        else:
            if backward_rtol is not None:
                kwargs.update(adjoint_rtol=backward_rtol, adjoint_atol=backward_rtol * 1e-2)
            out = odeint_irdm(func, y0, t, n_nodes=nodes, **kwargs)
    memory = counter["bytes"]
    if mode == "irdm":
        memory += sum(v.numel() * v.element_size() for v in out.grad_fn.node_values)
    loss = out[-1].square().mean()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        memory = torch.cuda.max_memory_allocated()
    seconds = time.perf_counter() - start
    grads = [y0.grad] + [p.grad for p in func.parameters()]
    return {
        "nfe_fwd": func.nfe_forward,
        "nfe_bwd": func.nfe_backward,
        "seconds": seconds,
        "memory": memory,
        "grads": grads,
    }


def relative_error(grads, reference) -> float:
    num = math.sqrt(sum(((g - r) ** 2).sum().item() for g, r in zip(grads, reference, strict=True)))
    return num / math.sqrt(sum((r**2).sum().item() for r in reference))


def benchmark(
    name: str,
    field: nn.Module,
    y0: torch.Tensor,
    tol: float,
    nodes: list[int],
    repeats: int,
    loose_backward_rtol: float,
    reference_tol: float | None = None,
) -> list[dict]:
    func = NFECounter(field)
    t = torch.tensor([0.0, 1.0], dtype=y0.dtype, device=y0.device)
    reference = run_once("backprop", func, y0, t, reference_tol or tol * 1e-4, 0)["grads"]
    modes = [("backprop", 0, None), ("adjoint", 0, None)] + [("irdm", n, None) for n in nodes]
    modes.append(("irdm", nodes[0], loose_backward_rtol))
    results = {m: [] for m in modes}
    for _ in range(repeats):  # interleaved
        for mode, n, backward_rtol in modes:
            results[(mode, n, backward_rtol)].append(run_once(mode, func, y0, t, tol, n, backward_rtol))
    rows = []
    adjoint_time = statistics.median(r["seconds"] for r in results[("adjoint", 0, None)])
    adjoint_nfe = results[("adjoint", 0, None)][0]["nfe_bwd"]
    for (mode, n, backward_rtol), runs in results.items():
        label = mode
        if mode == "irdm":
            label = f"irdm ({n} nodes" + (f", bwd rtol {backward_rtol:g})" if backward_rtol else ")")
        seconds = statistics.median(r["seconds"] for r in runs)
        rows.append(
            {
                "problem": name,
                "method": label,
                "fwd NFE": runs[0]["nfe_fwd"],
                "bwd NFE": runs[0]["nfe_bwd"],
                "bwd NFE / adjoint": runs[0]["nfe_bwd"] / adjoint_nfe if mode != "backprop" else "-",
                "bwd ms": 1000 * seconds,
                "bwd time / adjoint": seconds / adjoint_time,
                "memory KiB": runs[0]["memory"] / 1024,
                "rel. grad error": relative_error(runs[0]["grads"], reference),
            }
        )
    print(format_table(rows), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nodes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument(
        "--loose_backward_rtol",
        type=float,
        default=1e-3,
        help="an extra IRDM row with this backward rtol: IRDM's backward tolerances are relative to the "
        "gradient's own scale, the adjoint's are absolute, so equal settings are not equal accuracy",
    )
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    y_mlp = torch.randn(128, 16, dtype=torch.float64, device=device)
    rows = benchmark(
        "dissipative MLP (rate 50)",
        DissipativeField(16, 50.0).double().to(device),
        y_mlp,
        args.tol,
        args.nodes,
        args.repeats,
        args.loose_backward_rtol,
    )
    rows += benchmark(
        "smooth MLP",
        MLPField(16).double().to(device),
        y_mlp,
        args.tol,
        args.nodes,
        args.repeats,
        args.loose_backward_rtol,
    )

    # An image classifier's ODE block on a real batch: 16 digits, lifted to 16 channels by a fixed conv stem.
    # Reference at 1e-9 (a 1e-10 solve of this block takes minutes on a CPU).
    from hf_reduce.data import image_tensors, load_image_classification

    digits = image_tensors(load_image_classification("digits")["test"], 1).tensors["pixel_values"][:16]
    stem = nn.Conv2d(1, 16, 3, padding=1)
    with torch.no_grad():
        features = torch.relu(stem(digits)).double().to(device)
    rows += benchmark(
        "conv ODE block, 16 digits",
        ConvField().double().to(device),
        features,
        args.tol,
        args.nodes,
        args.repeats,
        args.loose_backward_rtol,
        reference_tol=1e-9,
    )
    print()
    print(format_table(rows))


if __name__ == "__main__":
    main()
