"""Reference ODE problems for checking solvers and gradient methods (pure torch).

The ODEs torchdiffeq's own test suites use (``constant``, ``linear``, ``sine``, with known solutions), its
demo's cubic spiral, and the neural fields hf_reduce's benchmarks use: a smooth MLP, a stiff field pulled onto a
moving manifold, and an image classifier's conv ODE block. Written here from their equations, so tests and
``scripts/benchmarks/gradients.py`` measure the same problems.
"""

from __future__ import annotations

import math

import torch
from torch import nn

T64 = torch.float64


class ConstantODE(nn.Module):
    """``y' = a + (y - (a t + b))^5``, solution ``a t + b`` (attracting only to fifth order)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.2, dtype=T64))
        self.b = nn.Parameter(torch.tensor(3.0, dtype=T64))

    def forward(self, t, y):
        return self.a + (y - (self.a * t + self.b)) ** 5

    def y_exact(self, t):
        return self.a * t + self.b


class SineODE(nn.Module):
    """``y' = 2y/t + t^4 sin 2t - t^2 + 4t^3`` on [1, 8]."""

    def forward(self, t, y):
        return 2 * y / t + t**4 * torch.sin(2 * t) - t**2 + 4 * t**3

    def y_exact(self, t):
        return (
            -0.5 * t**4 * torch.cos(2 * t)
            + 0.5 * t**3 * torch.sin(2 * t)
            + 0.25 * t**2 * torch.cos(2 * t)
            - t**3
            + 2 * t**4
            + (math.pi - 0.25) * t**2
        )


class LinearODE(nn.Module):
    """``y' = A y`` with ``A = U - Uᵀ`` (skew: rotations), solution ``expm(A t) y0``."""

    def __init__(self, dim: int = 10) -> None:
        super().__init__()
        u = torch.randn(dim, dim, dtype=T64, generator=torch.Generator().manual_seed(0)) * 0.1
        self.A = nn.Parameter(u - u.T)

    def forward(self, t, y):
        return self.A @ y

    def y_exact(self, t):
        return torch.stack([torch.matrix_exp(self.A * ti) @ torch.ones(len(self.A), dtype=T64) for ti in t])


class CubicODE(nn.Module):
    """``y' = y³ A``: torchdiffeq's demo spiral."""

    def __init__(self) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=T64))

    def forward(self, t, y):
        return (y**3) @ self.A


class ForcedStiffField(nn.Module):
    """Pulled at ``rate`` onto a moving manifold: integrating the state backwards (the adjoint) amplifies every
    error by ~e^rate per unit time, while the trajectory keeps changing."""

    def __init__(self, dim: int = 3, rate: float = 50.0, hidden: int = 32, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        self.rate = rate

    def forward(self, t, y):
        forcing = torch.sin(2 * math.pi * t).expand(*y.shape[:-1], 1)
        return self.rate * (self.net(torch.cat([y, forcing], -1)) - y)


class SmoothMLPField(nn.Module):
    """A smooth autonomous field ``f(t, z) = MLP(z)``."""

    def __init__(self, dim: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim, 64), nn.Tanh(), nn.Linear(64, dim))

    def forward(self, t, z):
        return self.net(z)


class ConvField(nn.Module):
    """The dynamics of an ODE block of an image classifier: conv, GroupNorm, ReLU, conv."""

    def __init__(self, channels: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(4, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, t, z):
        return self.conv2(torch.relu(self.norm(self.conv1(z))))


def problem(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``(func, y0, t)`` as torchdiffeq's tests build them (10 points on [1, 8]; the spiral on [0, 5])."""
    if name == "cubic":
        return CubicODE(), torch.tensor([[2.0, 0.0]], dtype=T64), torch.linspace(0, 5, 6, dtype=T64)
    func = {"constant": ConstantODE, "linear": LinearODE, "sine": SineODE}[name]()
    t = torch.linspace(1, 8, 10, dtype=T64)
    with torch.no_grad():
        y0 = func.y_exact(t[:1])[0] if name != "linear" else torch.ones(10, dtype=T64)
        if name == "constant":
            y0 = y0.reshape(1)
    return func, y0.detach().reshape(-1), t


def gradients(integrate, func, y0, t, **kwargs) -> list[torch.Tensor]:
    """Gradients of ``Σ_i |y(t_i)|²`` w.r.t. ``y0``, ``t`` and the parameters."""
    func.zero_grad(set_to_none=True)
    y0 = y0.detach().clone().requires_grad_(True)
    t = t.detach().clone().requires_grad_(True)
    out = integrate(func, y0, t, **kwargs)
    (out[1:] ** 2).sum().backward()
    params = [p.grad if p.grad is not None else torch.zeros_like(p) for p in func.parameters()]
    return [y0.grad, t.grad, *params]


def relative_error(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    num = math.sqrt(sum(((g - r) ** 2).sum().item() for g, r in zip(grads, reference, strict=True)))
    return num / math.sqrt(sum((r**2).sum().item() for r in reference))
