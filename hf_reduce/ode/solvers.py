"""The parameterised Runge-Kutta families as torchdiffeq fixed-grid solvers.

After ``import hf_reduce`` they are methods of ``torchdiffeq.odeint`` / ``odeint_adjoint`` like the built-ins::

    odeint(func, y0, t, method="rk2_u", options={"u": 0.5, "step_size": 0.1})

torchdiffeq has no public solver registry; its maintainers' suggested route is to subclass
``FixedGridODESolver`` and add the class to ``torchdiffeq._impl.odeint.SOLVERS``, which is what this does.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torchdiffeq._impl.misc import Perturb
from torchdiffeq._impl.solvers import FixedGridODESolver

from .tableau import FAMILIES, ButcherTableau, Scalar, tableau


def _is_zero(x: Scalar) -> bool:
    return isinstance(x, (int, float)) and x == 0


def _terms(coefficients: tuple[Scalar, ...]) -> list[tuple[int, Scalar]]:
    """The non-zero ``(stage index, coefficient)`` pairs of a tableau row, found once per solver."""
    return [(j, a) for j, a in enumerate(coefficients) if not _is_zero(a)]


def _combine(terms: list[tuple[int, Scalar]], ks: list[torch.Tensor]) -> torch.Tensor | None:
    """``Σ coefficient_j · k_j``; fused multiply-adds for float coefficients."""
    if not terms:
        return None
    (j0, a0), rest = terms[0], terms[1:]
    total = ks[j0] if isinstance(a0, (int, float)) and a0 == 1 else ks[j0] * a0
    for j, a in rest:
        total = torch.add(total, ks[j], alpha=a) if isinstance(a, (int, float)) else total + a * ks[j]
    return total


def _axpy(y0: torch.Tensor, k: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """``y0 + scale · k`` in one kernel. ``scale`` is a Python float where torchdiffeq passes ``dt`` as one
    (``integrate_until_event`` uses ``self.step_size``), which ``addcmul`` does not take."""
    if isinstance(scale, torch.Tensor):
        return torch.addcmul(y0, k, scale)
    return torch.add(y0, k, alpha=scale)


def _stage_input(y0: torch.Tensor, dt: torch.Tensor | float, terms, ks: list[torch.Tensor]) -> torch.Tensor:
    """``y0 + dt · Σ a_j k_j`` in as few full-size kernels as the built-ins use: ``dt`` is folded into a lone
    coefficient (``y0 + k · (dt a)``, as ``midpoint`` does with ``dt / 2``) and one fused add does the rest."""
    if not terms:
        return y0
    if len(terms) == 1:
        j, a = terms[0]
        return _axpy(y0, ks[j], dt * a)
    return _axpy(y0, _combine(terms, ks), dt)


def _node_position(c: Scalar) -> str:
    """``start`` (c = 0), ``end`` (c = 1) or ``inside``; a tensor parameter is read once, at solver set-up."""
    value = float(c.detach()) if isinstance(c, torch.Tensor) else float(c)
    return "start" if value == 0 else "end" if value == 1 else "inside"


class ParametricRungeKutta(FixedGridODESolver):
    """A fixed-grid explicit Runge-Kutta solver whose tableau comes from a parameterised family.

    Options (besides torchdiffeq's ``step_size`` / ``grid_constructor`` / ``perturb``): ``u`` and, for
    two-parameter families, ``v``; floats or 0-dim tensors (differentiable through ``odeint``). With
    ``perturb=True`` every stage at ``c = 0`` sees the right limit at ``t0`` and every stage at ``c = 1`` the
    left limit at ``t1``, as torchdiffeq's own Runge-Kutta steps do, whatever the parameters' type.
    """

    family: str = ""

    def __init__(
        self, func: Any, y0: torch.Tensor, u: Scalar | None = None, v: Scalar | None = None, **kwargs: Any
    ):
        # torchdiffeq warns about options it does not know: take ours out before the base class sees them.
        self.tableau: ButcherTableau = tableau(self.family, u, v)
        self.order = self.tableau.order
        tab = self.tableau
        # Per stage after the first: (c, where c lies, the non-zero a_ij), and the non-zero weights.
        self._stages = [(tab.c[i], _node_position(tab.c[i]), _terms(tab.a[i])) for i in range(1, tab.stages)]
        self._weights = _terms(tab.b)
        super().__init__(func, y0, **kwargs)

    def _step_func(self, func, t0, dt, t1, y0):
        perturb = self.perturb
        ks = [func(t0, y0, perturb=Perturb.NEXT if perturb else Perturb.NONE)]
        for c, position, terms in self._stages:
            y_i = _stage_input(y0, dt, terms, ks)
            float_c = isinstance(c, (int, float))
            if position == "end":
                # Like torchdiffeq: evaluate just before t1 when perturbing, in case of discontinuities.
                t_i = t1 if float_c else t0 + c * dt
                ks.append(func(t_i, y_i, perturb=Perturb.PREV if perturb else Perturb.NONE))
            elif position == "start":
                t_i = t0 if float_c else t0 + c * dt
                ks.append(func(t_i, y_i, perturb=Perturb.NEXT if perturb else Perturb.NONE))
            else:
                ks.append(func(t0 + c * dt, y_i))
        return dt * _combine(self._weights, ks), ks[0]


def _solver_class(name: str) -> type[ParametricRungeKutta]:
    family = FAMILIES[name]
    doc = f"torchdiffeq solver ``{name}``: order {family.order}, parameters {family.params}, domain {family.domain}."
    # type() through ABCMeta would take __module__ from abc's frame; a saved model's copy of this file must
    # name its own module, which is how a clash is reported.
    namespace = {"family": name, "order": family.order, "__doc__": doc, "__module__": __name__}
    return type(f"RK_{name}", (ParametricRungeKutta,), namespace)


SOLVER_CLASSES: dict[str, type[ParametricRungeKutta]] = {name: _solver_class(name) for name in FAMILIES}


def solver_signature(cls: type) -> tuple | None:
    """What a family solver computes: its order and tableaux at the defaults and at two other points, each
    built by the ``tableau`` of the module that defined ``cls``. A saved model's remote code carries its own
    copy of these modules, so two copies are compared by what they compute, not by identity; ``None`` for a
    solver that is not one of these families."""
    family = getattr(cls, "family", None)
    build = getattr(sys.modules.get(cls.__module__), "tableau", None)
    if not family or build is None:
        return None
    spec = FAMILIES.get(family)
    points = [spec.defaults] if spec else [{}]
    points += [{k: x + 0.0137 * (i + 1) for k, x in points[0].items()} for i in range(2)]
    tabs = [build(family, **point) for point in points]
    return (family, cls.order, [(t.c, t.a, t.b, t.order) for t in tabs])


def register_solvers() -> None:
    """Add the families to torchdiffeq's solver table; done by ``import hf_reduce`` and by a saved model's
    remote code. Registering a solver that computes the same method again is a no-op (remote code, then
    ``import hf_reduce``); a different method under a taken name is refused, naming both."""
    from torchdiffeq._impl.odeint import SOLVERS

    for name, cls in SOLVER_CLASSES.items():
        existing = SOLVERS.get(name)
        if existing is None:
            SOLVERS[name] = cls
        elif existing is not cls and solver_signature(existing) != solver_signature(cls):
            raise RuntimeError(
                f"torchdiffeq's solver {name!r} is already {_qualified(existing)}, a different method from "
                f"{_qualified(cls)}; load models whose solvers differ in separate processes"
            )


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def runge_kutta_kind(method: str) -> str:
    """``"adaptive"`` or ``"fixed_grid"`` for an explicit single-step Runge-Kutta solver in torchdiffeq's table
    (the built-ins, hf_reduce's families, a user's subclass of either), told apart by class, not by name; a
    one-line ``ValueError`` saying what anything else is."""
    from torchdiffeq._impl.fixed_adams import AdamsBashforthMoulton
    from torchdiffeq._impl.odeint import SOLVERS
    from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver

    cls = SOLVERS.get(method)
    if cls is None:
        raise ValueError(f"unknown method {method!r}; torchdiffeq's solvers are {sorted(SOLVERS)}")
    if issubclass(cls, RKAdaptiveStepsizeODESolver):
        return "adaptive"
    if issubclass(cls, AdamsBashforthMoulton):
        raise ValueError(
            f"{method!r} ({_qualified(cls)}) is a multistep Adams method, whose steps depend on earlier ones; "
            "use an explicit Runge-Kutta method (fixed-grid or adaptive)"
        )
    if issubclass(cls, FixedGridODESolver):
        return "fixed_grid"
    raise ValueError(
        f"{method!r} ({_qualified(cls)}) is not an explicit Runge-Kutta solver (a subclass of torchdiffeq's "
        "FixedGridODESolver or RKAdaptiveStepsizeODESolver)"
    )


def available_methods() -> list[str]:
    """Every method name ``odeint`` accepts now (torchdiffeq's own and hf_reduce's)."""
    from torchdiffeq._impl.odeint import SOLVERS

    return sorted(SOLVERS)
