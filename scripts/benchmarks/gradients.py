"""IRDM vs torchdiffeq's adjoint vs backprop through the solver, side by side in one run.

Same forward solver (dopri5) and tolerances for all three. Per problem: backward NFE, backward wall time
(median of interleaved repeats), memory held for the backward pass, and the relative error of all gradients
(y0 and parameters) against backprop through a tight-tolerance solve. Memory: on a GPU the peak allocated
during forward+backward; on a CPU the bytes kept for backward (autograd's saved tensors, plus the stored
Chebyshev nodes for IRDM).

    python scripts/benchmarks/gradients.py [--repeats 5] [--nodes 8 16 24]
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
    """``f(t, z) = MLP(z) - damping · z``: damping 0 is smooth, large damping dissipative (stiff backwards)."""

    def __init__(self, dim: int, damping: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 64), nn.Tanh(), nn.Linear(64, dim))
        self.damping = damping

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z) - self.damping * z


class ConvField(nn.Module):
    """The dynamics of an ODE block of an image classifier: conv, GroupNorm, ReLU, conv."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(4, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.norm(self.conv1(z))))


def run_once(mode: str, func: NFECounter, y0: torch.Tensor, t: torch.Tensor, tol: float, nodes: int) -> dict:
    func.reset()
    func.zero_grad(set_to_none=True)
    y0 = y0.detach().requires_grad_(True)
    kwargs = {"method": "dopri5", "rtol": tol, "atol": tol * 1e-2}
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
    name: str, field: nn.Module, y0: torch.Tensor, tol: float, nodes: list[int], repeats: int
) -> list[dict]:
    func = NFECounter(field)
    t = torch.tensor([0.0, 1.0], dtype=y0.dtype, device=y0.device)
    reference = run_once("backprop", func, y0, t, tol * 1e-4, 0)["grads"]
    modes = [("backprop", 0), ("adjoint", 0)] + [("irdm", n) for n in nodes]
    results = {m: [] for m in modes}
    for _ in range(repeats):  # interleaved
        for mode, n in modes:
            results[(mode, n)].append(run_once(mode, func, y0, t, tol, n))
    rows = []
    adjoint_time = statistics.median(r["seconds"] for r in results[("adjoint", 0)])
    adjoint_nfe = results[("adjoint", 0)][0]["nfe_bwd"]
    for (mode, n), runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        rows.append(
            {
                "problem": name,
                "method": f"irdm ({n} nodes)" if mode == "irdm" else mode,
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
    parser.add_argument("--nodes", type=int, nargs="+", default=[8, 16, 24])
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    y_mlp = torch.randn(128, 16, dtype=torch.float64, device=device)
    rows = benchmark(
        "dissipative MLP (damping 20)",
        MLPField(16, 20.0).double().to(device),
        y_mlp,
        args.tol,
        args.nodes,
        args.repeats,
    )
    rows += benchmark(
        "smooth MLP", MLPField(16, 0.0).double().to(device), y_mlp, args.tol, args.nodes, args.repeats
    )

    # An image classifier's ODE block on a real batch: 64 digits, lifted to 16 channels by a fixed conv stem.
    from hf_reduce.data import image_tensors, load_image_classification

    digits = image_tensors(load_image_classification("digits")["test"], 1).tensors["pixel_values"][:64]
    stem = nn.Conv2d(1, 16, 3, padding=1)
    with torch.no_grad():
        features = torch.relu(stem(digits)).double().to(device)
    rows += benchmark(
        "conv ODE block, 64 digits",
        ConvField().double().to(device),
        features,
        args.tol,
        args.nodes,
        args.repeats,
    )
    print()
    print(format_table(rows))


if __name__ == "__main__":
    main()
