"""The parameterised Runge-Kutta families as torchdiffeq fixed-grid solvers.

After ``import hf_reduce`` they are methods of ``torchdiffeq.odeint`` / ``odeint_adjoint`` like the built-ins::

    odeint(func, y0, t, method="rk2_u", options={"u": 0.5, "step_size": 0.1})

torchdiffeq has no public solver registry; its maintainers' suggested route is to subclass
``FixedGridODESolver`` and add the class to ``torchdiffeq._impl.odeint.SOLVERS``, which is what this does.
"""

from __future__ import annotations

from typing import Any

import torch
from torchdiffeq._impl.misc import Perturb
from torchdiffeq._impl.solvers import FixedGridODESolver

from .tableau import FAMILIES, ButcherTableau, Scalar, tableau


def _is_zero(x: Scalar) -> bool:
    return isinstance(x, (int, float)) and x == 0


def _combine(coefficients: tuple[Scalar, ...], ks: list[torch.Tensor]) -> torch.Tensor | None:
    """``Σ coefficient_j · k_j`` skipping zero coefficients; fused multiply-adds for float coefficients."""
    terms = [(a, k) for a, k in zip(coefficients, ks, strict=False) if not _is_zero(a)]
    if not terms:
        return None
    (a0, k0), rest = terms[0], terms[1:]
    total = k0 if isinstance(a0, (int, float)) and a0 == 1 else k0 * a0
    for a, k in rest:
        total = torch.add(total, k, alpha=a) if isinstance(a, (int, float)) else total + a * k
    return total


class ParametricRungeKutta(FixedGridODESolver):
    """A fixed-grid explicit Runge-Kutta solver whose tableau comes from a parameterised family.

    Options (besides torchdiffeq's ``step_size`` / ``grid_constructor`` / ``perturb``): ``u`` and, for
    two-parameter families, ``v``; floats or 0-dim tensors (differentiable through ``odeint``).
    """

    family: str = ""

    def __init__(
        self, func: Any, y0: torch.Tensor, u: Scalar | None = None, v: Scalar | None = None, **kwargs: Any
    ):
        # torchdiffeq warns about options it does not know: take ours out before the base class sees them.
        self.tableau: ButcherTableau = tableau(self.family, u, v)
        self.order = self.tableau.order
        super().__init__(func, y0, **kwargs)

    def _step_func(self, func, t0, dt, t1, y0):
        tab, perturb = self.tableau, self.perturb
        k0 = func(t0, y0, perturb=Perturb.NEXT if perturb else Perturb.NONE)
        ks = [k0]
        for i in range(1, tab.stages):
            increment = _combine(tab.a[i], ks)
            y_i = y0 if increment is None else y0 + dt * increment
            if isinstance(tab.c[i], (int, float)) and tab.c[i] == 1:
                # Like torchdiffeq: evaluate just before t1 when perturbing, in case of discontinuities.
                ks.append(func(t1, y_i, perturb=Perturb.PREV if perturb else Perturb.NONE))
            else:
                ks.append(func(t0 + tab.c[i] * dt, y_i))
        return dt * _combine(tab.b, ks), k0


def _solver_class(name: str) -> type[ParametricRungeKutta]:
    family = FAMILIES[name]
    doc = f"torchdiffeq solver ``{name}``: order {family.order}, parameters {family.params}, domain {family.domain}."
    return type(
        f"RK_{name}", (ParametricRungeKutta,), {"family": name, "order": family.order, "__doc__": doc}
    )


SOLVER_CLASSES: dict[str, type[ParametricRungeKutta]] = {name: _solver_class(name) for name in FAMILIES}


def register_solvers() -> None:
    """Add the families to torchdiffeq's solver table (idempotent; done by ``import hf_reduce``)."""
    from torchdiffeq._impl.odeint import SOLVERS

    for name, cls in SOLVER_CLASSES.items():
        existing = SOLVERS.get(name)
        if existing is not None and not issubclass(existing, ParametricRungeKutta):
            raise RuntimeError(
                f"torchdiffeq already has a solver named {name!r}; hf_reduce will not replace it"
            )
        SOLVERS[name] = cls


def available_methods() -> list[str]:
    """Every method name ``odeint`` accepts now (torchdiffeq's own and hf_reduce's)."""
    from torchdiffeq._impl.odeint import SOLVERS

    return sorted(SOLVERS)
