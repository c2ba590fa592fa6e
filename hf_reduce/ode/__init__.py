"""Neural-ODE tools: parameterised Runge-Kutta solvers for torchdiffeq, solver sampling, the solver-overfitting
criterion, IRDM gradients, NFE counting."""

from .criterion import OverfittingReport, solver_overfitting
from .fixed_grid import FIXED_GRID_METHODS, fixed_grid_odeint
from .irdm import IRDMInterpolationError, IRDMStats, odeint_irdm
from .nfe import NFECounter
from .sampling import FixedSolver, SmoothingSolver, SolverEnsemble, SolverSampler, SolverSpec, SwitchSolver
from .solvers import SOLVER_CLASSES, ParametricRungeKutta, available_methods, register_solvers
from .tableau import FAMILIES, ButcherTableau, SolverParameterError, order_condition_residuals, tableau

register_solvers()

from ..auto_classes import register_image_family  # noqa: E402
from .configuration_ode import ODEConfig  # noqa: E402
from .modeling_ode import ODEForImageClassification, ODEModel, ODEPreTrainedModel  # noqa: E402

# save_pretrained copies the modelling file and its relative imports: trust_remote_code works without hf_reduce.
register_image_family(ODEConfig, ODEModel, ODEForImageClassification)

__all__ = [
    "FAMILIES",
    "FIXED_GRID_METHODS",
    "SOLVER_CLASSES",
    "ButcherTableau",
    "FixedSolver",
    "IRDMInterpolationError",
    "IRDMStats",
    "NFECounter",
    "ODEConfig",
    "ODEForImageClassification",
    "ODEModel",
    "ODEPreTrainedModel",
    "OverfittingReport",
    "SmoothingSolver",
    "SolverEnsemble",
    "SolverSampler",
    "SolverSpec",
    "SwitchSolver",
    "ParametricRungeKutta",
    "SolverParameterError",
    "available_methods",
    "fixed_grid_odeint",
    "odeint_irdm",
    "order_condition_residuals",
    "register_solvers",
    "solver_overfitting",
    "tableau",
]
