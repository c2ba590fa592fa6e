"""Butcher tableaux of explicit Runge-Kutta families parameterised by at most two scalars (pure maths).

Every family is the complete set of explicit methods of its stage count and order with the given node pattern
(Hairer, Nørsett, Wanner, "Solving ODEs I", II.1), written as exact rational functions of the parameters so
that they also work on (differentiable) torch scalars:

==========  ======  =====  ==========================  ==============================================
name        stages  order  nodes c                     parameters and special members
==========  ======  =====  ==========================  ==============================================
``rk2_u``   2       2      (0, u)                      u ≠ 0; 1/2 midpoint, 1 Heun, 2/3 Ralston
``rk3_uv``  3       3      (0, u, v)                   u, v ≠ 0, u ≠ v, u ≠ 2/3; (1/2, 1) Kutta's RK3
``rk4_uv``  4       4      (0, u, v, 1)                u ∉ {0, 1/2, 1}, v ∉ {0, 1, u}, D ≠ 0; (1/3, 2/3) 3/8 rule
``rk4_u1``  4       4      (0, 1/2, 0, 1)              u = b3 ≠ 0
``rk4_u2``  4       4      (0, 1/2, 1/2, 1)            u = b3 ≠ 0; 1/3 classic RK4
``rk4_u3``  4       4      (0, 1, 1/2, 1)              u = b4 ≠ 0
==========  ======  =====  ==========================  ==============================================

with ``D = 6uv - 4u - 4v + 3`` for ``rk4_uv``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Scalar = Any  # float or a 0-dim torch tensor

#: A parameter closer than this to an excluded value is rejected (the tableau entries blow up there).
SINGULARITY_TOL = 1e-6
#: Past this largest |coefficient| a member is warned about. On a forced pendulum (h = 0.1, 0.01; float32, 64),
#: 53 % of the members above it were over 10x less accurate than their family's default (median 15x, up to
#: 2.3e4x), against 9 % below it (at most 62x), whose members are ordinary ones like rk4_uv (0.3, 0.8) at 15
#: (scripts/benchmarks/solver_conditioning.py). The defaults have 1 or 2.
ILL_CONDITIONED = 100.0


@dataclass(frozen=True)
class ButcherTableau:
    """``c`` (nodes), ``a`` (lower-triangular rows, ``a[i]`` has ``i`` entries) and ``b`` (weights)."""

    c: tuple[Scalar, ...]
    a: tuple[tuple[Scalar, ...], ...]
    b: tuple[Scalar, ...]
    order: int

    @property
    def stages(self) -> int:
        return len(self.b)


@dataclass(frozen=True)
class Family:
    """A parameterised family: its name, parameters, order, domain description and tableau builder."""

    name: str
    params: tuple[str, ...]
    order: int
    domain: str
    excluded: Callable[[float, float], list[str]]
    build: Callable[..., ButcherTableau]
    defaults: dict[str, float]


class SolverParameterError(ValueError):
    """A parameter outside its family's domain."""


def _near(x: float, value: float) -> bool:
    return abs(x - value) < SINGULARITY_TOL


# ----------------------------------------------------------------------------------------------- families


def _rk2(u: Scalar) -> ButcherTableau:
    return ButcherTableau(c=(0.0, u), a=((), (u,)), b=(1 - 1 / (2 * u), 1 / (2 * u)), order=2)


def _rk3(u: Scalar, v: Scalar) -> ButcherTableau:
    a32 = v * (v - u) / (u * (2 - 3 * u))
    b2 = (2 - 3 * v) / (6 * u * (u - v))
    b3 = (2 - 3 * u) / (6 * v * (v - u))
    return ButcherTableau(c=(0.0, u, v), a=((), (u,), (v - a32, a32)), b=(1 - b2 - b3, b2, b3), order=3)


def _rk4_uv(u: Scalar, v: Scalar) -> ButcherTableau:
    d = 6 * u * v - 4 * u - 4 * v + 3
    a32 = v * (v - u) / (2 * u * (1 - 2 * u))
    a42 = (1 - u) * (u + v - 1 - (2 * v - 1) ** 2) / (2 * u * (v - u) * d)
    a43 = (1 - 2 * u) * (1 - u) * (1 - v) / (v * (v - u) * d)
    b2 = (2 * v - 1) / (12 * u * (1 - u) * (v - u))
    b3 = (1 - 2 * u) / (12 * v * (1 - v) * (v - u))
    b4 = d / (12 * (1 - u) * (1 - v))
    return ButcherTableau(
        c=(0.0, u, v, 1.0),
        a=((), (u,), (v - a32, a32), (1 - a42 - a43, a42, a43)),
        b=(1 - b2 - b3 - b4, b2, b3, b4),
        order=4,
    )


def _rk4_u1(u: Scalar) -> ButcherTableau:
    # c = (0, 1/2, 0, 1), u = b3.
    return ButcherTableau(
        c=(0.0, 0.5, 0.0, 1.0),
        a=((), (0.5,), (-1 / (12 * u), 1 / (12 * u)), (-0.5 - 6 * u, 1.5, 6 * u)),
        b=(1 / 6 - u, 2 / 3, u, 1 / 6),
        order=4,
    )


def _rk4_u2(u: Scalar) -> ButcherTableau:
    # c = (0, 1/2, 1/2, 1), u = b3; u = 1/3 is the classic RK4.
    return ButcherTableau(
        c=(0.0, 0.5, 0.5, 1.0),
        a=((), (0.5,), (0.5 - 1 / (6 * u), 1 / (6 * u)), (0.0, 1 - 3 * u, 3 * u)),
        b=(1 / 6, 2 / 3 - u, u, 1 / 6),
        order=4,
    )


def _rk4_u3(u: Scalar) -> ButcherTableau:
    # c = (0, 1, 1/2, 1), u = b4.
    return ButcherTableau(
        c=(0.0, 1.0, 0.5, 1.0),
        a=((), (1.0,), (0.375, 0.125), (1 - 1 / (4 * u), -1 / (12 * u), 1 / (3 * u))),
        b=(1 / 6, 1 / 6 - u, 2 / 3, u),
        order=4,
    )


def _excluded_rk2(u: float, v: float) -> list[str]:
    return ["u = 0"] if _near(u, 0) else []


def _excluded_rk3(u: float, v: float) -> list[str]:
    bad = [
        f"{n}"
        for n, hit in (
            ("u = 0", _near(u, 0)),
            ("v = 0", _near(v, 0)),
            ("u = v", _near(u, v)),
            ("u = 2/3", _near(u, 2 / 3)),
        )
        if hit
    ]
    return bad


def _excluded_rk4_uv(u: float, v: float) -> list[str]:
    d = 6 * u * v - 4 * u - 4 * v + 3
    checks = (
        ("u = 0", _near(u, 0)),
        ("u = 1/2", _near(u, 0.5)),
        ("u = 1", _near(u, 1)),
        ("v = 0", _near(v, 0)),
        ("v = 1", _near(v, 1)),
        ("v = u", _near(u, v)),
        ("6uv - 4u - 4v + 3 = 0", abs(d) < SINGULARITY_TOL),
    )
    return [name for name, hit in checks if hit]


def _excluded_u_nonzero(u: float, v: float) -> list[str]:
    return ["u = 0"] if _near(u, 0) else []


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("rk2_u", ("u",), 2, "u ≠ 0", _excluded_rk2, _rk2, {"u": 0.5}),
        Family(
            "rk3_uv", ("u", "v"), 3, "u ≠ 0, v ≠ 0, u ≠ v, u ≠ 2/3", _excluded_rk3, _rk3, {"u": 0.5, "v": 1.0}
        ),
        Family(
            "rk4_uv",
            ("u", "v"),
            4,
            "u ∉ {0, 1/2, 1}, v ∉ {0, 1, u}, 6uv - 4u - 4v + 3 ≠ 0",
            _excluded_rk4_uv,
            _rk4_uv,
            {"u": 1 / 3, "v": 2 / 3},
        ),
        Family("rk4_u1", ("u",), 4, "u ≠ 0", _excluded_u_nonzero, _rk4_u1, {"u": 1 / 3}),
        Family("rk4_u2", ("u",), 4, "u ≠ 0", _excluded_u_nonzero, _rk4_u2, {"u": 1 / 3}),
        Family("rk4_u3", ("u",), 4, "u ≠ 0", _excluded_u_nonzero, _rk4_u3, {"u": 1 / 6}),
    )
}


def _as_float(x: Scalar) -> float:
    return float(x.detach()) if hasattr(x, "detach") else float(x)


def check_parameters(family: str, u: Scalar | None = None, v: Scalar | None = None) -> dict[str, Scalar]:
    """Fill in defaults and validate ``u`` / ``v`` for ``family``; returns the parameters to build with."""
    if family not in FAMILIES:
        raise ValueError(f"unknown Runge-Kutta family {family!r}; available: {sorted(FAMILIES)}")
    spec = FAMILIES[family]
    given = {"u": u, "v": v}
    extra = [name for name, value in given.items() if value is not None and name not in spec.params]
    if extra:
        raise SolverParameterError(f"{family} takes parameters {list(spec.params)}, not {extra}")
    params = {name: spec.defaults[name] if given[name] is None else given[name] for name in spec.params}
    values = {name: _as_float(value) for name, value in params.items()}
    if not all(math.isfinite(x) for x in values.values()):
        raise SolverParameterError(f"{family}: parameters must be finite, got {values}")
    hits = spec.excluded(values.get("u", 0.0), values.get("v", 0.0))
    if hits:
        raise SolverParameterError(
            f"{family}: parameters {values} are outside the family's domain ({spec.domain}): {', '.join(hits)}"
        )
    return params


def largest_coefficient(tab: ButcherTableau) -> float:
    """``max |a_ij|, |b_i|``: it grows like 1 / distance near a family's singular parameters."""
    return max(abs(_as_float(x)) for row in (*tab.a, tab.b) for x in row)


def tableau(family: str, u: Scalar | None = None, v: Scalar | None = None) -> ButcherTableau:
    """The Butcher tableau of ``family`` at ``(u, v)`` (defaults: each family's best-known member).

    Warns when a coefficient exceeds :data:`ILL_CONDITIONED`: the member keeps its order on paper but loses
    up to 10^4x accuracy to its error constant and to roundoff."""
    params = check_parameters(family, u, v)
    tab = FAMILIES[family].build(**params)
    largest = largest_coefficient(tab)
    if largest > ILL_CONDITIONED:
        values = {name: round(_as_float(value), 8) for name, value in params.items()}
        warnings.warn(
            f"{family} at {values} is ill-conditioned: a tableau coefficient is {largest:.3g} (over "
            f"{ILL_CONDITIONED:g}), which can cost 10-10000x accuracy; move away from {FAMILIES[family].domain}",
            stacklevel=2,
        )
    return tab


def order_condition_residuals(tab: ButcherTableau) -> dict[str, float]:
    """Residuals of the order conditions up to ``tab.order`` (rows summing to c included); all ~0 if valid."""
    s, a, b, c = tab.stages, tab.a, tab.b, tab.c

    def A(i: int, j: int) -> float:
        return float(a[i][j]) if j < i else 0.0

    bf, cf = [float(x) for x in b], [float(x) for x in c]
    ac = [sum(A(i, j) * cf[j] for j in range(s)) for i in range(s)]  # (A c)_i
    res = {f"row {i}: Σa = c": sum(A(i, j) for j in range(s)) - cf[i] for i in range(1, s)}
    res["Σb = 1"] = sum(bf) - 1
    if tab.order >= 2:
        res["Σbc = 1/2"] = sum(bf[i] * cf[i] for i in range(s)) - 1 / 2
    if tab.order >= 3:
        res["Σbc² = 1/3"] = sum(bf[i] * cf[i] ** 2 for i in range(s)) - 1 / 3
        res["ΣbAc = 1/6"] = sum(bf[i] * ac[i] for i in range(s)) - 1 / 6
    if tab.order >= 4:
        res["Σbc³ = 1/4"] = sum(bf[i] * cf[i] ** 3 for i in range(s)) - 1 / 4
        res["Σb c Ac = 1/8"] = sum(bf[i] * cf[i] * ac[i] for i in range(s)) - 1 / 8
        ac2 = [sum(A(i, j) * cf[j] ** 2 for j in range(s)) for i in range(s)]
        res["ΣbAc² = 1/12"] = sum(bf[i] * ac2[i] for i in range(s)) - 1 / 12
        aac = [sum(A(i, j) * ac[j] for j in range(s)) for i in range(s)]
        res["ΣbAAc = 1/24"] = sum(bf[i] * aac[i] for i in range(s)) - 1 / 24
    return res
