"""Which solver integrates the ODE: one fixed solver, or a solver drawn per batch while training.

Meta-solver training regimes (Gusak et al., 2021): ``fixed``; ``switch`` (a solver drawn per batch from a
list, with probabilities); ``smoothing`` (the family parameters drawn per batch from a Normal or Cauchy law
around (u0, v0), reset to (u0, v0) when a draw falls outside ±2σ); and solver ensembles (a weighted average of
the outputs of several solvers).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .tableau import FAMILIES, SolverParameterError, check_parameters

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


@dataclass(frozen=True)
class SolverSpec:
    """A solver choice: a torchdiffeq method (ours or built-in), its family parameters and its grid.

    Fixed-grid methods take ``n_steps`` equal steps over the integration interval; adaptive methods
    (``dopri5``...) use ``rtol`` / ``atol``.
    """

    method: str = "rk4_uv"
    u: float | None = None
    v: float | None = None
    n_steps: int = 1
    rtol: float = 1e-3
    atol: float = 1e-4

    def __post_init__(self) -> None:
        from .solvers import available_methods

        methods = available_methods()
        if self.method not in methods:
            raise ValueError(f"unknown solver method {self.method!r}; available: {methods}")
        if self.method in FAMILIES:
            check_parameters(self.method, self.u, self.v)
        elif self.u is not None or self.v is not None:
            raise ValueError(
                f"method {self.method!r} takes no u / v; parameterised families: {sorted(FAMILIES)}"
            )
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {self.n_steps}")
        if not self.adaptive:  # computed now, eagerly, so that traced forwards (export, compile) only read it
            for dtype in (torch.float32, torch.float64):
                uniform_grid_values(self.n_steps, dtype)

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE_METHODS

    def odeint_kwargs(self) -> dict[str, Any]:
        """``method``, ``options`` (and tolerances) for ``torchdiffeq.odeint``."""
        if self.adaptive:
            return {"method": self.method, "rtol": self.rtol, "atol": self.atol}
        options: dict[str, Any] = {"grid_constructor": _uniform_grid(self.n_steps)}
        if self.u is not None:
            options["u"] = self.u
        if self.v is not None:
            options["v"] = self.v
        return {"method": self.method, "options": options}

    def plain_options(self) -> dict[str, Any]:
        """The family parameters only: the options of :func:`~hf_reduce.ode.fixed_grid.fixed_grid_odeint` given
        the grid of :func:`uniform_grid_values`."""
        return {k: getattr(self, k) for k in ("u", "v") if getattr(self, k) is not None}

    def label(self) -> str:
        params = ", ".join(f"{k}={getattr(self, k):.4g}" for k in ("u", "v") if getattr(self, k) is not None)
        grid = (
            f"tol={self.rtol:g}" if self.adaptive else f"{self.n_steps} step{'s' if self.n_steps > 1 else ''}"
        )
        return f"{self.method}({params}) {grid}" if params else f"{self.method} {grid}"


_GRIDS: dict[tuple[int, torch.dtype], list[float]] = {}


def uniform_grid_values(n_steps: int, dtype: torch.dtype) -> list[float]:
    """``n_steps`` equal steps over [0, 1] as Python floats, exactly the values of :func:`_uniform_grid`."""
    key = (n_steps, dtype)
    if key not in _GRIDS:
        # On the CPU whatever the default device is: under torch.device("meta") (big-model loading) the
        # values would not exist.
        _GRIDS[key] = torch.linspace(0.0, 1.0, n_steps + 1, dtype=dtype, device="cpu").tolist()
    return _GRIDS[key]


def _uniform_grid(n_steps: int) -> Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]:
    # An explicit grid: torchdiffeq's step_size rounds (t1 - t0) / step_size up and can add a sliver step.
    def grid(func: Any, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.linspace(float(t[0]), float(t[-1]), n_steps + 1, dtype=t.dtype, device=t.device)

    return grid


class SolverSampler:
    """Yields the solver for the next training batch.

    ``state_dict()`` / ``load_state_dict()`` hold its random generator (JSON-able), so that a checkpointed run
    draws the same solvers after a resume as without the interruption."""

    rng: random.Random | None = None

    def sample(self) -> SolverSpec:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        if self.rng is None:
            return {}
        version, internal, gauss = self.rng.getstate()
        return {"rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.rng is not None:
            version, internal, gauss = state["rng"]
            self.rng.setstate((version, tuple(internal), gauss))

    @property
    def default(self) -> SolverSpec:
        """The solver to evaluate with."""
        raise NotImplementedError


class FixedSolver(SolverSampler):
    """Always the same solver."""

    def __init__(self, spec: SolverSpec) -> None:
        self.spec = spec

    def sample(self) -> SolverSpec:
        return self.spec

    @property
    def default(self) -> SolverSpec:
        return self.spec


class SwitchSolver(SolverSampler):
    """One solver per batch, drawn from ``specs`` with ``probabilities`` (uniform by default)."""

    def __init__(
        self, specs: Sequence[SolverSpec], probabilities: Sequence[float] | None = None, seed: int = 0
    ):
        if not specs:
            raise ValueError("SwitchSolver needs at least one solver")
        probabilities = list(probabilities) if probabilities is not None else [1.0] * len(specs)
        if len(probabilities) != len(specs) or min(probabilities) < 0 or sum(probabilities) <= 0:
            raise ValueError(
                f"need {len(specs)} non-negative probabilities with a positive sum, got {probabilities}"
            )
        self.specs = list(specs)
        self.probabilities = [p / sum(probabilities) for p in probabilities]
        self.rng = random.Random(seed)

    def sample(self) -> SolverSpec:
        return self.rng.choices(self.specs, weights=self.probabilities)[0]

    @property
    def default(self) -> SolverSpec:
        return self.specs[max(range(len(self.specs)), key=self.probabilities.__getitem__)]


class SmoothingSolver(SolverSampler):
    """The family parameters drawn per batch around ``base`` (u0, v0) from a Normal or Cauchy law.

    A draw more than ``2σ`` away from the centre, or outside the family's domain, is reset to the centre
    (the paper's rule), so the sampled solvers stay near the one the model is evaluated with.
    """

    def __init__(
        self,
        base: SolverSpec,
        sigma_u: float,
        sigma_v: float | None = None,
        distribution: str = "normal",
        seed: int = 0,
    ) -> None:
        if base.method not in FAMILIES:
            raise ValueError(
                f"smoothing needs a parameterised family, got {base.method!r}; use one of {sorted(FAMILIES)}"
            )
        if distribution not in ("normal", "cauchy"):
            raise ValueError(f"distribution must be 'normal' or 'cauchy', got {distribution!r}")
        if sigma_u <= 0 or (sigma_v is not None and sigma_v <= 0):
            raise ValueError(f"sigmas must be positive, got sigma_u={sigma_u}, sigma_v={sigma_v}")
        params = check_parameters(base.method, base.u, base.v)
        self.base = replace(base, **{k: float(v) for k, v in params.items()})
        self.sigma = {"u": sigma_u, "v": sigma_v if sigma_v is not None else sigma_u}
        self.distribution = distribution
        self.rng = random.Random(seed)

    def _draw(self, centre: float, sigma: float) -> float:
        if self.distribution == "normal":
            x = self.rng.gauss(centre, sigma)
        else:  # Cauchy by inverse CDF
            x = centre + sigma * math.tan(math.pi * (self.rng.random() - 0.5))
        return centre if abs(x - centre) > 2 * sigma else x

    def sample(self) -> SolverSpec:
        draws = {
            name: self._draw(getattr(self.base, name), self.sigma[name])
            for name in FAMILIES[self.base.method].params
        }
        try:
            return replace(self.base, **draws)
        except SolverParameterError:  # landed on a singular member: use the centre
            return self.base

    @property
    def default(self) -> SolverSpec:
        return self.base


@dataclass(frozen=True)
class SolverEnsemble:
    """Several solvers whose outputs are averaged with ``weights`` (normalised to sum to one)."""

    specs: tuple[SolverSpec, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.specs or len(self.specs) != len(self.weights):
            raise ValueError(
                f"need as many weights as solvers, got {len(self.specs)} solvers, {len(self.weights)} weights"
            )
        if min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {self.weights}")

    def combine(self, solve: Callable[[SolverSpec], torch.Tensor]) -> torch.Tensor:
        """``Σ_i w_i · solve(spec_i)`` with normalised weights."""
        total = sum(self.weights)
        outputs = [
            solve(spec) * (w / total) for spec, w in zip(self.specs, self.weights, strict=True) if w > 0
        ]
        return torch.stack(outputs).sum(0)
