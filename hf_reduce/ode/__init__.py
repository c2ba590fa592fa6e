"""Neural-ODE tools: parameterised Runge-Kutta solvers for torchdiffeq, solver sampling, NFE counting."""

from .nfe import NFECounter
from .solvers import SOLVER_CLASSES, ParametricRungeKutta, available_methods, register_solvers
from .tableau import FAMILIES, ButcherTableau, SolverParameterError, order_condition_residuals, tableau

register_solvers()

__all__ = [
    "FAMILIES",
    "SOLVER_CLASSES",
    "ButcherTableau",
    "NFECounter",
    "ParametricRungeKutta",
    "SolverParameterError",
    "available_methods",
    "order_condition_residuals",
    "register_solvers",
    "tableau",
]
