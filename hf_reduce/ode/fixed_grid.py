"""A plain fixed-grid Runge-Kutta loop: the steps of ``torchdiffeq.odeint``, without its input checks.

torchdiffeq validates its inputs with data-dependent asserts (``_check_timelike`` compares time values) and
picks the output times with data-dependent comparisons, so ``torch.export``, ``torch.onnx.export(dynamo=True)``
and ``torch.compile(fullgraph=True)`` cannot trace ``odeint``, even for fixed-grid methods. Here the grid and
the output times are Python floats, known when the graph is traced, and every step calls the solver class's
own ``_step_func`` (torchdiffeq's built-ins or hf_reduce's families) with the same time wrapper that
``odeint`` uses, so the outputs are bit-identical to ``odeint``'s. With ``record=True`` it also returns the
grid trajectory (states and first stages), which IRDM turns into a dense output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torchdiffeq._impl.misc import Perturb, _nextafter

from .solvers import runge_kutta_kind
from .tableau import FAMILIES

#: The single-step fixed-grid methods of torchdiffeq and hf_reduce (any registered subclass works too;
#: multistep Adams methods keep a history and are left to ``odeint``).
FIXED_GRID_METHODS: tuple[str, ...] = ("euler", "midpoint", "heun2", "heun3", "rk4", *FAMILIES)

TimeLike = torch.Tensor | Sequence[float]


def _real_dtype(y: torch.Tensor) -> torch.dtype:
    return y.real.dtype if y.is_complex() else y.dtype


class _Dynamics:
    """``func`` as torchdiffeq's solvers call it: time cast to the state's dtype, optional perturbation and
    time reversal, in the order of ``odeint``'s ``_PerturbFunc(_ReverseFunc(func))``."""

    def __init__(self, func: Any, reverse: bool) -> None:
        self.func, self.reverse = func, reverse

    def __call__(self, t: torch.Tensor, y: torch.Tensor, *, perturb: Perturb = Perturb.NONE) -> torch.Tensor:
        t = t.to(_real_dtype(y))
        if perturb is Perturb.NEXT:
            t = _nextafter(t, t + 1)
        elif perturb is Perturb.PREV:
            t = _nextafter(t, t - 1)
        if self.reverse:
            return -1.0 * self.func(-t, y)
        return self.func(t, y)


@dataclass
class FixedGridTrajectory:
    """The grid of a fixed-grid solve (in the caller's time), the state at every grid point and the first
    stage ``f(t_k, y_k)`` of every step (the right limit when perturbing)."""

    grid: list[float]
    states: list[torch.Tensor] = field(default_factory=list)
    first_stages: list[torch.Tensor] = field(default_factory=list)


def _floats(x: TimeLike) -> list[float]:
    return x.detach().tolist() if torch.is_tensor(x) else [float(v) for v in x]


def fixed_grid_odeint(
    func: Any,
    y0: torch.Tensor,
    t: TimeLike,
    *,
    method: str,
    options: dict[str, Any] | None = None,
    grid: TimeLike | None = None,
    record: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, FixedGridTrajectory]:
    """``odeint(func, y0, t, method=method, options=options)`` for a single-step fixed-grid method.

    ``t`` and ``grid`` may be tensors (read once with ``tolist()``) or Python floats (then nothing depends on
    tensor values: the loop traces under ``torch.export``). Without ``grid`` the grid comes from ``options``
    exactly as in torchdiffeq (``step_size``, ``grid_constructor``, or ``t`` itself). Options mean what they
    mean there (``perturb``, ``interp``, the family's ``u`` / ``v``); ``func.callback_step`` is called.
    """
    from torchdiffeq._impl.odeint import SOLVERS

    if runge_kutta_kind(method) != "fixed_grid":
        raise ValueError(f"the plain fixed-grid path runs fixed-grid methods, not the adaptive {method!r}")
    if not torch.is_tensor(y0):
        raise TypeError(f"y0 must be a tensor (flatten tuple states first), got {type(y0).__name__}")
    options = dict(options or {})
    time_dtype = t.dtype if torch.is_tensor(t) else _real_dtype(y0)
    times = _floats(t)
    if len(times) < 2:
        raise ValueError(f"t must hold at least 2 times, got {times}")
    reverse = times[1] < times[0]
    sign = -1.0 if reverse else 1.0
    dynamics = _Dynamics(func, reverse)
    solver = SOLVERS[method](func=dynamics, y0=y0, atol=0.0, **options)

    solve_times = [sign * v for v in times]  # increasing, as torchdiffeq integrates
    if any(b <= a for a, b in zip(solve_times, solve_times[1:], strict=False)):
        raise ValueError(f"t must be strictly increasing or strictly decreasing, got {times}")
    if grid is not None:
        solve_grid = [sign * v for v in _floats(grid)]
    else:
        t_solve = torch.tensor(solve_times, dtype=time_dtype, device=y0.device)
        constructor = solver.grid_constructor
        if reverse and "grid_constructor" in options:  # as odeint's _check_inputs wraps it
            user = options["grid_constructor"]
            constructor = lambda f, y, tt: -user(f, y, -tt)  # noqa: E731
        solve_grid = _floats(constructor(dynamics, y0, t_solve))
    if solve_grid[0] != solve_times[0] or solve_grid[-1] != solve_times[-1]:
        raise ValueError(
            f"the grid must start at t[0] and end at t[-1], got {solve_grid[0]} .. {solve_grid[-1]}"
        )

    grid_t = torch.tensor(solve_grid, dtype=time_dtype, device=y0.device)
    out_t = torch.tensor(solve_times, dtype=time_dtype, device=y0.device)
    callback = getattr(func, "callback_step", None)
    trajectory = FixedGridTrajectory(grid=[sign * v for v in solve_grid])
    outputs, j, y = [y0], 1, y0
    for k in range(len(solve_grid) - 1):
        t0, t1 = grid_t[k], grid_t[k + 1]
        dt = t1 - t0
        if callback is not None:
            callback(-t0 if reverse else t0, y, dt)
        dy, f0 = solver._step_func(dynamics, t0, dt, t1, y)
        y1 = y + dy
        if record:
            trajectory.states.append(y)
            trajectory.first_stages.append(f0)
        while j < len(solve_times) and solve_grid[k + 1] >= solve_times[j]:
            outputs.append(_output(solver, dynamics, solve_grid[k], solve_grid[k + 1], solve_times[j],
                                   t0, t1, out_t[j], y, f0, y1))  # fmt: skip
            j += 1
        y = y1
    if record:
        trajectory.states.append(y)
    solution = torch.stack(outputs)
    return (solution, trajectory) if record else solution


def _output(solver, dynamics, g0: float, g1: float, tj: float, t0, t1, t_out, y0, f0, y1) -> torch.Tensor:
    """The value at output time ``tj`` inside step [g0, g1], as ``FixedGridODESolver.integrate`` computes it
    (the comparisons done on floats, the arithmetic on the same tensors)."""
    if solver.interp == "linear":
        if tj == g0:
            return y0
        if tj == g1:
            return y1
        slope = (t_out - t0) / (t1 - t0)
        return y0 + slope * (y1 - y0)
    if solver.interp == "cubic":
        f1 = dynamics(t1, y1)
        return solver._cubic_hermite_interp(t0, y0, f0, t1, y1, f1, t_out)
    raise ValueError(f"unknown interpolation {solver.interp!r}; torchdiffeq's are 'linear' and 'cubic'")
