"""The solver-overfitting criterion (Gusak et al., 2021).

A neural ODE is meant to be an ODE: solving it more accurately must not change what it predicts. A model
trained with one coarse solver can instead fit that discrete map (which, unlike an ODE flow, may fold space),
and then loses accuracy when evaluated with more steps or another member of the family. The criterion
measures accuracy across test-time solvers and flags the model when a more accurate solve costs more than
``threshold`` accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .sampling import SolverSpec
from .tableau import FAMILIES

logger = logging.getLogger(__name__)


@dataclass
class OverfittingReport:
    """Accuracy per test-time solver, the largest drop from the training solver, and the verdict."""

    train_solver: SolverSpec
    rows: list[dict[str, object]] = field(default_factory=list)
    reference_accuracy: float = 0.0
    max_drop: float = 0.0
    threshold: float = 0.05
    overfits: bool = False

    def verdict(self) -> str:
        what = (
            "overfits to its training solver" if self.overfits else "does not overfit to its training solver"
        )
        return (
            f"the model {what}: accuracy {self.reference_accuracy:.4f} with {self.train_solver.label()}, "
            f"largest drop {self.max_drop:.4f} under more accurate solvers (threshold {self.threshold})"
        )


def default_test_solvers(
    train_solver: SolverSpec, step_multipliers: Sequence[int] = (2, 4, 8), members: Sequence[dict] = ()
) -> list[tuple[SolverSpec, str]]:
    """Test-time solvers: the same method with more steps, other family members, and a tight dopri5."""
    solvers: list[tuple[SolverSpec, str]] = [(train_solver, "training solver")]
    if not train_solver.adaptive:
        for m in step_multipliers:
            solvers.append((replace(train_solver, n_steps=train_solver.n_steps * m), f"{m}x steps"))
        for params in members:
            if train_solver.method in FAMILIES:
                solvers.append((replace(train_solver, **params), "other member"))
    solvers.append((SolverSpec("dopri5", rtol=1e-6, atol=1e-8), "reference (dopri5)"))
    return solvers


def solver_overfitting(
    evaluate: Callable[[SolverSpec], float],
    train_solver: SolverSpec,
    *,
    test_solvers: Sequence[tuple[SolverSpec, str]] | None = None,
    threshold: float = 0.05,
) -> OverfittingReport:
    """Evaluate ``evaluate(spec) -> accuracy`` for each test-time solver and decide.

    Only solvers more accurate than the training one count for the verdict (more steps, or the adaptive
    reference); other members of the family are reported alongside.
    """
    test_solvers = list(test_solvers or default_test_solvers(train_solver))
    report = OverfittingReport(train_solver=train_solver, threshold=threshold)
    reference = None
    for spec, role in test_solvers:
        accuracy = float(evaluate(spec))
        if reference is None:
            reference = accuracy
        report.rows.append(
            {"solver": spec.label(), "role": role, "accuracy": accuracy, "change": accuracy - reference}
        )
        if role != "other member" and role != "training solver":
            report.max_drop = max(report.max_drop, reference - accuracy)
        logger.debug("solver %s (%s): accuracy %.4f", spec.label(), role, accuracy)
    report.reference_accuracy = float(reference)
    report.overfits = report.max_drop > threshold
    return report
