"""hf_reduce's parameterised Runge-Kutta solvers vs torchdiffeq's built-in fixed-grid methods.

Each pair integrates with the same tableau and the same grid (``midpoint`` = ``rk2_u(1/2)``, ``heun2`` =
``rk2_u(1)``, ``heun3`` = ``rk3_uv(1/3, 2/3)``, ``rk4`` (the 3/8 rule) = ``rk4_uv(1/3, 2/3)``) on a small conv
ODE function and on an MLP. Timings are medians over interleaved repeats; the ratio column is ours / built-in.
"plain / odeint" times hf_reduce's plain fixed-grid loop (``fixed_grid_odeint``, the traceable path of the ODE
models, bit-identical outputs) against ``odeint`` with our method. Results: ``results/solvers.json``.

    python scripts/benchmarks/solvers.py [--repeats 30] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _measure import write_results
from torch import nn
from torchdiffeq import odeint

import hf_reduce  # noqa: F401  (registers the solvers)
from hf_reduce.commands.common import format_table
from hf_reduce.ode.fixed_grid import fixed_grid_odeint

PAIRS = [
    ("midpoint", "rk2_u", {"u": 0.5}),
    ("heun2", "rk2_u", {"u": 1.0}),
    ("heun3", "rk3_uv", {"u": 1 / 3, "v": 2 / 3}),
    ("rk4", "rk4_uv", {"u": 1 / 3, "v": 2 / 3}),
]


class ConvField(nn.Module):
    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(4, channels)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.norm(self.conv1(y))))


class MLPField(nn.Module):
    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 256), nn.Tanh(), nn.Linear(256, dim))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


def timed(fn, device: torch.device, *args) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(
    name: str, field: nn.Module, y0: torch.Tensor, steps: int, repeats: int, device: torch.device
) -> list[dict]:
    t = torch.tensor([0.0, 1.0], device=device)
    rows = []
    for builtin, ours, params in PAIRS:
        runs = {
            builtin: (builtin, {"step_size": 1.0 / steps}),
            ours: (ours, {"step_size": 1.0 / steps, **params}),
        }
        with torch.no_grad():
            reference = odeint(field, y0, t, method=builtin, options=runs[builtin][1])
            mine = odeint(field, y0, t, method=ours, options=runs[ours][1])
            plain = fixed_grid_odeint(field, y0, t, method=ours, options=runs[ours][1])
        max_diff = (reference - mine).abs().max().item()
        assert torch.equal(plain, mine), "the plain loop must reproduce odeint bit for bit"
        runs["plain"] = (ours, runs[ours][1])

        def forward(method, options, plain=False):
            with torch.no_grad():
                (fixed_grid_odeint if plain else odeint)(field, y0, t, method=method, options=options)

        def forward_backward(method, options):
            field.zero_grad(set_to_none=True)
            odeint(field, y0, t, method=method, options=options)[-1].square().mean().backward()

        times = {(m, kind): [] for m in runs for kind in ("fwd", "fwd+bwd")}
        for _ in range(3):  # warm-up
            for m, (method, options) in runs.items():
                forward(method, options, m == "plain")
                forward_backward(method, options)
        for r in range(repeats):  # interleaved, the order alternating (no position bias)
            for m, (method, options) in list(runs.items())[:: 1 if r % 2 else -1]:
                times[(m, "fwd")].append(timed(forward, device, method, options, m == "plain"))
                if m != "plain":
                    times[(m, "fwd+bwd")].append(timed(forward_backward, device, method, options))
        med = {k: 1000 * statistics.median(v) for k, v in times.items() if v}
        rows.append(
            {
                "field": name,
                "built-in": builtin,
                "ours": f"{ours}{tuple(round(v, 4) for v in params.values())}",
                "max |diff|": max_diff,
                "fwd ms (built-in)": med[(builtin, "fwd")],
                "fwd ms (ours)": med[(ours, "fwd")],
                "fwd ratio": med[(ours, "fwd")] / med[(builtin, "fwd")],
                "fwd+bwd ms (built-in)": med[(builtin, "fwd+bwd")],
                "fwd+bwd ms (ours)": med[(ours, "fwd+bwd")],
                "fwd+bwd ratio": med[(ours, "fwd+bwd")] / med[(builtin, "fwd+bwd")],
                "plain / odeint": med[("plain", "fwd")] / med[(ours, "fwd")],
            }
        )
        print(format_table(rows[-1:]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    conv = ConvField().to(device)
    mlp = MLPField().to(device)
    rows = bench(
        "conv 16x16x16, batch 32",
        conv,
        torch.randn(32, 16, 16, 16, device=device),
        args.steps,
        args.repeats,
        device,
    )
    rows += bench(
        "MLP 64, batch 256", mlp, torch.randn(256, 64, device=device), args.steps, args.repeats, device
    )
    print()
    print(format_table(rows))
    ratios = [r["fwd ratio"] for r in rows] + [r["fwd+bwd ratio"] for r in rows]
    plain = [r["plain / odeint"] for r in rows]
    summary = {
        "ours / built-in median": statistics.median(ratios),
        "ours / built-in worst": max(ratios),
        "plain / odeint median": statistics.median(plain),
        "plain / odeint worst": max(plain),
        "device": str(device),
    }
    print(f"\n{summary}")
    print(write_results("solvers", {"args": vars(args), "rows": rows, "summary": summary}))


if __name__ == "__main__":
    main()
