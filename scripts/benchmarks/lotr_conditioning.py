"""Does the good learning rate of LoTR move with the model width? LoTR's initialisations vs PEFT's LoRA.

A teacher-student task whose difficulty does not depend on the width, so that only the parameterisation's
scaling can: ``layers`` frozen ``width x width`` linear layers, inputs that span a fixed 32-dimensional subspace
of the width (entries of order 1, as activations have), and a target update ``ΔW*_l = A* G*_l B*ᵀ`` of rank 8
shared across the layers (the structure LoTR assumes), ``B*`` inside the input subspace, scaled so that
``ΔW*_l x`` has entries of order 1. Each adapter is trained with AdamW to reproduce the target outputs; the
score is the last 20 steps' loss divided by the loss at step 0 (1 = nothing learnt, 0 = exact). A
width-independent parameterisation has the same curve (score against learning rate) at every width.

    python scripts/benchmarks/lotr_conditioning.py [--widths 384 1024 4096] [--steps 150]

Results: ``results/lotr_conditioning.json`` and ``results/lotr_conditioning.png``.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _measure import write_results
from peft import LoraConfig, get_peft_model
from torch import nn

import hf_reduce  # noqa: F401  (registers LoTR)
from hf_reduce.commands.common import format_table
from hf_reduce.lotr import LoTRConfig

SUBSPACE = 32  # dimension of the inputs' span
METHODS = {
    "LoTR zero_core (paper)": lambda r: LoTRConfig(r=r, target_modules=["proj"], init_lotr="zero_core"),
    "LoTR fan_in": lambda r: LoTRConfig(r=r, target_modules=["proj"], init_lotr="fan_in"),
    "LoTR tucker": lambda r: LoTRConfig(r=r, target_modules=["proj"], init_lotr="tucker"),
    "LoRA (alpha = 2r)": lambda r: LoraConfig(r=r, lora_alpha=2 * r, target_modules=["proj"]),
}


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width, bias=False)


class Stack(nn.Module):
    """``layers`` independent projections (inputs ``(layers, batch, width)``), so every layer sees fresh x."""

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(width) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([block.proj(x[i]) for i, block in enumerate(self.layers)])


def orthonormal(rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(rows, cols, generator=g))[0]


def run(method: str, width: int, layers: int, r: int, lr: float, steps: int, batch: int) -> float:
    g = torch.Generator().manual_seed(0)
    base = Stack(width, layers)
    with torch.no_grad():  # a pretrained-looking base for tucker's SVD (it cancels out of the loss)
        for block in base.layers:
            block.proj.weight.copy_(torch.randn(width, width, generator=g) / math.sqrt(width))
    subspace = orthonormal(width, SUBSPACE, g)  # where the inputs live, whatever the width
    a_star, b_star = orthonormal(width, r, g), subspace @ orthonormal(SUBSPACE, r, g)
    targets = [
        a_star @ torch.randn(r, r, generator=g) @ b_star.T * (math.sqrt(width) / r) for _ in range(layers)
    ]
    weights = [block.proj.weight.detach().clone() for block in base.layers]
    torch.manual_seed(1)
    model = get_peft_model(base, METHODS[method](r))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    data = torch.Generator().manual_seed(2)
    losses = []
    for _ in range(steps):
        x = torch.randn(layers, batch, SUBSPACE, generator=data) @ subspace.T * math.sqrt(width / SUBSPACE)
        with torch.no_grad():  # the frozen base's output plus the target update's
            wanted = torch.stack(
                [x[i] @ (w + t).T for i, (w, t) in enumerate(zip(weights, targets, strict=True))]
            )
        loss = (model(x) - wanted).pow(2).mean()
        if not torch.isfinite(loss):
            return float("nan")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses[-20:]) / 20 / losses[0]


def plot(rows: list[dict], widths: list[int], lrs: list[float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METHODS), figsize=(4 * len(METHODS), 3.4), sharey=True)
    for ax, method in zip(axes, METHODS, strict=True):
        for width in widths:
            ys = [
                next(
                    r["loss ratio"]
                    for r in rows
                    if r["method"] == method and r["width"] == width and r["lr"] == lr
                )
                for lr in lrs
            ]
            ax.plot(lrs, ys, marker="o", label=f"width {width}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("AdamW learning rate")
    axes[0].set_ylabel("final / initial loss")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--widths", type=int, nargs="+", default=[384, 1024, 4096])
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-3, 1e-2, 3e-2, 1e-1])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    rows = []
    for width in args.widths:
        for method in METHODS:
            for lr in args.lrs:
                started = time.perf_counter()
                ratio = run(method, width, args.layers, args.r, lr, args.steps, args.batch)
                rows.append(
                    {
                        "method": method,
                        "width": width,
                        "lr": lr,
                        "loss ratio": ratio,
                        "seconds": round(time.perf_counter() - started, 1),
                    }
                )
                print(rows[-1], flush=True)
    best = []
    for method in METHODS:
        for width in args.widths:
            mine = [
                r
                for r in rows
                if r["method"] == method and r["width"] == width and math.isfinite(r["loss ratio"])
            ]
            top = (
                min(mine, key=lambda r: r["loss ratio"]) if mine else {"lr": None, "loss ratio": float("nan")}
            )
            best.append(
                {
                    "method": method,
                    "width": width,
                    "best lr": top["lr"],
                    "loss ratio at best": top["loss ratio"],
                }
            )
    print(format_table(best))
    payload = {"settings": vars(args), "rows": rows, "best": best}
    print(write_results("lotr_conditioning", payload))
    from pathlib import Path

    figure = Path(__file__).resolve().parent / "results" / "lotr_conditioning.png"
    plot(rows, args.widths, args.lrs, str(figure))
    print(figure)


if __name__ == "__main__":
    main()
