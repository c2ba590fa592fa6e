"""Neural-ODE tools: parameterised Runge-Kutta solvers for torchdiffeq, solver sampling, the solver-overfitting
criterion, IRDM gradients, NFE counting."""

from .criterion import OverfittingReport, solver_overfitting
from .irdm import odeint_irdm
from .nfe import NFECounter
from .sampling import FixedSolver, SmoothingSolver, SolverEnsemble, SolverSampler, SolverSpec, SwitchSolver
from .solvers import SOLVER_CLASSES, ParametricRungeKutta, available_methods, register_solvers
from .tableau import FAMILIES, ButcherTableau, SolverParameterError, order_condition_residuals, tableau

register_solvers()

__all__ = [
    "FAMILIES",
    "SOLVER_CLASSES",
    "ButcherTableau",
    "FixedSolver",
    "NFECounter",
    "OverfittingReport",
    "SmoothingSolver",
    "SolverEnsemble",
    "SolverSampler",
    "SolverSpec",
    "SwitchSolver",
    "ParametricRungeKutta",
    "SolverParameterError",
    "available_methods",
    "odeint_irdm",
    "order_condition_residuals",
    "register_solvers",
    "solver_overfitting",
    "tableau",
]
