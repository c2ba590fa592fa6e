"""How close to a family's singular parameters its members stay accurate: the measurement behind the
``ILL_CONDITIONED`` warning threshold in ``hf_reduce/ode/tableau.py``.

Near an excluded value (``rk3_uv`` at u = 2/3, ``rk4_uv`` at u = 1/2, ``rk4_u2`` at u = 0, ...) some tableau
coefficients grow like 1 / distance. The method keeps its formal order, but its error constant and its
roundoff amplification grow with the largest coefficient ``K = max |a_ij|, |b_i|``. For each singularity,
members at distances 1e-1 ... 2e-6 integrate a forced pendulum over [0, 2] (steps 0.1 and 0.01, float64 and
float32); the table gives ``K`` and the global error relative to the family's default member's.

    python scripts/benchmarks/solver_conditioning.py

Writes ``results/solver_conditioning.json``; takes seconds.
"""

from __future__ import annotations

import platform

import torch
from _measure import write_results
from torchdiffeq import odeint

import hf_reduce
from hf_reduce.commands.common import format_table
from hf_reduce.ode.tableau import FAMILIES, ILL_CONDITIONED, largest_coefficient, tableau

#: (family, the singular point, the parameter moved away from it)
SINGULARITIES = [
    ("rk2_u", {"u": 0.0}, "u"),
    ("rk3_uv", {"u": 2 / 3, "v": 1.0}, "u"),
    ("rk3_uv", {"u": 0.5, "v": 0.5}, "v"),
    ("rk4_uv", {"u": 0.5, "v": 2 / 3}, "u"),
    ("rk4_uv", {"u": 1 / 3, "v": 1.0}, "v"),
    ("rk4_u2", {"u": 0.0}, "u"),
    ("rk4_u3", {"u": 0.0}, "u"),
]
DISTANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 2e-6)
STEPS = (0.1, 0.01)
DTYPES = (torch.float64, torch.float32)


def pendulum(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], -torch.sin(y[0]) + 0.1 * torch.cos(3 * t)])


def main() -> None:
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    exact = odeint(pendulum, y0, t, method="dopri8", rtol=1e-13, atol=1e-14)[-1]

    def error(family: str, params: dict, step: float, dtype: torch.dtype) -> float:
        options = {**params, "step_size": step}
        y = odeint(pendulum, y0.to(dtype), t.to(dtype), method=family, options=options)[-1]
        return float((y.double() - exact).abs().max())

    rows = []
    for family, point, moved in SINGULARITIES:
        for step in STEPS:
            for dtype in DTYPES:
                reference = error(family, FAMILIES[family].defaults, step, dtype)
                for distance in DISTANCES:
                    params = {**point, moved: point[moved] + distance}
                    rows.append(
                        {
                            "family": family,
                            "near": f"{moved} = {point[moved]:.4g}",
                            "distance": distance,
                            "step": step,
                            "dtype": str(dtype).removeprefix("torch."),
                            "largest_coefficient": largest_coefficient(tableau(family, **params)),
                            "error_vs_default": error(family, params, step, dtype) / reference,
                        }
                    )
    above = [r["error_vs_default"] for r in rows if r["largest_coefficient"] > ILL_CONDITIONED]
    below = [r["error_vs_default"] for r in rows if r["largest_coefficient"] <= ILL_CONDITIONED]
    summary = {
        "threshold": ILL_CONDITIONED,
        "members_above": len(above),
        "members_below": len(below),
        "share_10x_worse_above": sum(r >= 10 for r in above) / len(above),
        "share_10x_worse_below": sum(r >= 10 for r in below) / len(below),
        "error_ratio_above_median": sorted(above)[len(above) // 2],
        "error_ratio_above_max": max(above),
        "error_ratio_below_max": max(below),
    }
    print(
        format_table(
            [
                {**r, "distance": f"{r['distance']:g}", "largest_coefficient": f"{r['largest_coefficient']:.1e}",
                 "error_vs_default": f"{r['error_vs_default']:.1f}"}
                for r in rows
            ]
        )
    )  # fmt: skip
    print(summary)
    environment = {
        "torch": torch.__version__,
        "hf_reduce": hf_reduce.__version__,
        "cpu": platform.processor(),
    }
    write_results("solver_conditioning", {"environment": environment, "summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
