"""Building blocks of neural-ODE classifiers: a norm factory, ResNet blocks, the ODE function and ODE block."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrizations
from torchdiffeq import odeint, odeint_adjoint

from .fixed_grid import fixed_grid_odeint
from .irdm import DEFAULT_NODES, odeint_irdm
from .nfe import NFECounter
from .sampling import ADAPTIVE_METHODS, SolverSpec, uniform_grid_values


def make_norm(kind: str, channels: int, groups: int = 32) -> nn.Module:
    """``batch`` | ``layer`` (GroupNorm(1, C), the paper's LN) | ``group`` | ``instance`` | ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "group":
        g = min(groups, channels)
        while channels % g:
            g -= 1
        return nn.GroupNorm(g, channels)
    if kind == "instance":
        return nn.GroupNorm(channels, channels)  # per-channel statistics of each sample, with affine
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose from batch, layer, group, instance, none")


class ResNetBlock(nn.Module):
    """Basic pre-activation-free ResNet block; ``stride=2`` (or a channel change) adds a 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=norm == "none")
        self.norm1 = make_norm(norm, out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=norm == "none")
        self.norm2 = make_norm(norm, out_channels, groups)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                make_norm(norm, out_channels, groups),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class TimeConv2d(nn.Module):
    """A 3x3 convolution that optionally sees ``t`` as one more input channel."""

    def __init__(self, channels: int, time_concat: bool, param_norm: str) -> None:
        super().__init__()
        self.time_concat = time_concat
        self.conv = nn.Conv2d(channels + int(time_concat), channels, 3, padding=1)
        if param_norm == "weight":
            parametrizations.weight_norm(self.conv)
        elif param_norm == "spectral":
            parametrizations.spectral_norm(self.conv)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.time_concat:
            x = torch.cat([x, torch.ones_like(x[:, :1]) * t.to(x.dtype)], 1)
        return self.conv(x)


class ODEFunc(nn.Module):
    """``f(t, x) = norm(conv(t, relu(norm(conv(t, relu(norm(x)))))))`` as in Chen et al.'s ODENets."""

    def __init__(self, channels: int, norm: str, groups: int, time_concat: bool, param_norm: str) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, channels, groups)
        self.conv1 = TimeConv2d(channels, time_concat, param_norm)
        self.norm2 = make_norm(norm, channels, groups)
        self.conv2 = TimeConv2d(channels, time_concat, param_norm)
        self.norm3 = make_norm(norm, channels, groups)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, torch.relu(self.norm1(x)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


class ODEBlock(nn.Module):
    """Integrates ``dx/dt = f(t, x)`` over [0, 1] with a :class:`SolverSpec` and a gradient mode.

    ``self.solver`` can be replaced at any time (solver sampling while training, other solvers at test time);
    ``self.ensemble`` (a :class:`~hf_reduce.ode.sampling.SolverEnsemble`) averages several solvers' outputs.
    """

    def __init__(
        self,
        func: ODEFunc,
        solver: SolverSpec,
        gradient_mode: str = "backprop",
        irdm_nodes: int = DEFAULT_NODES,
    ):
        super().__init__()
        self.func = NFECounter(func)
        self.solver = solver
        self.gradient_mode = gradient_mode
        self.irdm_nodes = irdm_nodes
        self.ensemble: Any = None

    def _solve(self, x: torch.Tensor, spec: SolverSpec) -> torch.Tensor:
        if not spec.adaptive and (self.gradient_mode == "backprop" or not torch.is_grad_enabled()):
            # The plain loop: the same steps and outputs as odeint, and traceable (export, compile).
            grid = uniform_grid_values(spec.n_steps, x.dtype)
            return fixed_grid_odeint(
                self.func, x, (0.0, 1.0), method=spec.method, options=spec.plain_options(), grid=grid
            )[-1]
        if spec.adaptive and torch.compiler.is_compiling():
            raise NotImplementedError(
                f"adaptive solvers ({spec.method}) run eagerly only: their step count depends on the data. "
                "Export or compile with a fixed-grid solver, e.g. model.set_solver(SolverSpec('rk4', n_steps=4))"
            )
        t = torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device)
        kwargs = spec.odeint_kwargs()
        if spec.method in ADAPTIVE_METHODS and self.gradient_mode != "backprop":
            # Error control on the adjoint only, not on the parameter-gradient integrals (fewer backward steps).
            kwargs["adjoint_options"] = {"norm": "seminorm"}
        if self.gradient_mode == "adjoint":
            return odeint_adjoint(self.func, x, t, **kwargs)[-1]
        if self.gradient_mode == "irdm" and torch.is_grad_enabled():
            return odeint_irdm(self.func, x, t, n_nodes=self.irdm_nodes, **kwargs)[-1]
        return odeint(self.func, x, t, **kwargs)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ensemble is not None:
            return self.ensemble.combine(lambda spec: self._solve(x, spec))
        return self._solve(x, self.solver)
