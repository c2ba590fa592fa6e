import math

import pytest
import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

import hf_reduce  # noqa: F401
from hf_reduce.ode.interpolation import (
    BarycentricInterpolant,
    chebyshev_lobatto_nodes,
    chebyshev_lobatto_weights,
)
from hf_reduce.ode.irdm import odeint_irdm

T64 = torch.float64


def _smooth(t):
    return torch.exp(torch.sin(3 * t))


def _interp_error(n, weights=None):
    nodes = chebyshev_lobatto_nodes(n, 0.0, 2.0)
    values = torch.stack([_smooth(nodes), _smooth(nodes) ** 2], 1)  # a "batch" of two functions
    interp = BarycentricInterpolant(nodes, values, weights)
    tt = torch.linspace(0, 2, 2001, dtype=T64)
    exact = torch.stack([_smooth(tt), _smooth(tt) ** 2], 1)
    return (interp(tt) - exact).abs().max().item()


def test_interpolation_converges_spectrally():
    errors = {n: _interp_error(n) for n in (16, 24, 32, 40)}
    # Observed here: 1.3e-2, 8.8e-5, 3.2e-7, 6.5e-10, i.e. a factor 150-500 per 8 extra nodes (geometric
    # convergence, faster and faster); algebraic convergence would give a constant, small factor.
    for a, b in ((16, 24), (24, 32), (32, 40)):
        assert errors[b] < errors[a] / 50, errors
    assert errors[40] < 1e-8


def test_first_kind_weights_on_lobatto_nodes_stall():
    # The pairing the IRDM authors used: no longer converges once n passes ~24.
    def first_kind(n):
        j = torch.arange(n, dtype=T64)
        return (-1) ** j * torch.sin((2 * j + 1) * math.pi / (2 * n))

    stalled, matched = _interp_error(40, first_kind(40)), _interp_error(40)
    assert stalled > 1e-6 and stalled > 1000 * matched, (stalled, matched)


def test_interpolant_is_exact_at_nodes_and_vectorised():
    nodes = chebyshev_lobatto_nodes(7, -1.0, 3.0)
    assert nodes[0].item() == 3.0 and nodes[-1].item() == -1.0
    values = torch.randn(7, 4, 5, dtype=T64)
    interp = BarycentricInterpolant(nodes, values)
    assert torch.equal(interp(nodes), values)
    assert interp(0.3).shape == (4, 5) and interp(torch.tensor([0.1, 0.2])).shape == (2, 4, 5)
    # The scalar (solver) path and the vectorised path are the same formula.
    torch.testing.assert_close(interp(0.3), interp(torch.tensor([0.3], dtype=T64))[0], rtol=1e-14, atol=1e-14)
    assert torch.equal(interp(float(nodes[2]) + 1e-300), values[2])  # next to a node: its value, no NaN
    assert chebyshev_lobatto_weights(4).tolist() == [0.5, -1.0, 1.0, -0.5]


class Field(nn.Module):
    def __init__(self, dim=3, damping=0.0, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim, 32), nn.Tanh(), nn.Linear(32, dim))
        self.damping = damping

    def forward(self, t, y):
        return self.net(y) * torch.cos(t) - self.damping * y


def _gradients(integrate, func, y0, t, **kwargs):
    func.zero_grad()
    y0 = y0.detach().requires_grad_(True)
    t = t.detach().requires_grad_(True)
    out = integrate(func, y0, t, **kwargs)
    (out[1:] ** 2).sum().backward()
    return [y0.grad, t.grad] + [p.grad for p in func.parameters()]


def _relative_error(grads, reference):
    num = math.sqrt(sum(((g - r) ** 2).sum().item() for g, r in zip(grads, reference, strict=True)))
    den = math.sqrt(sum((r**2).sum().item() for r in reference))
    return num / den


@pytest.mark.parametrize("damping", [0.0, 10.0], ids=["smooth", "dissipative"])
def test_irdm_gradients_match_backprop(damping):
    func = Field(damping=damping).double()
    y0 = torch.randn(6, 3, dtype=T64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 0.4, 1.0], dtype=T64)
    reference = _gradients(odeint, func, y0, t, method="dopri5", rtol=1e-11, atol=1e-12)
    irdm = _gradients(odeint_irdm, func, y0, t, method="dopri5", rtol=1e-9, atol=1e-10, n_nodes=24)
    # Stated tolerance: 1e-6 relative over all gradients (observed ~1e-9 to 1e-8).
    assert _relative_error(irdm, reference) < 1e-6


def test_irdm_with_a_fixed_grid_parameterised_solver():
    func = Field().double()
    y0 = torch.randn(4, 3, dtype=T64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.0, 1.0], dtype=T64)
    options = {"u": 1 / 3, "step_size": 0.02}
    reference = _gradients(odeint, func, y0, t, method="rk4_u2", options=options)
    irdm = _gradients(odeint_irdm, func, y0, t, method="rk4_u2", options=options, n_nodes=16)
    assert _relative_error(irdm, reference) < 1e-5  # both discretisation errors are O(h^4) ~ 1e-7


def test_same_api_as_odeint_adjoint():
    func = Field(dim=2)
    y0 = torch.randn(5, 2)
    t = torch.linspace(0, 1, 4)
    a = odeint_adjoint(func, y0, t, method="dopri5", rtol=1e-6, atol=1e-8)
    b = odeint_irdm(func, y0, t, method="dopri5", rtol=1e-6, atol=1e-8)
    assert a.shape == b.shape == (4, 5, 2)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # adjoint_params: only the listed parameters get gradients.
    first = list(func.parameters())[:2]
    func.zero_grad()
    odeint_irdm(func, y0, t, method="dopri5", adjoint_params=first).sum().backward()
    assert all(p.grad is not None for p in first)
    assert all(p.grad is None for p in list(func.parameters())[2:])
    # tuple states
    pair = odeint_irdm(
        lambda t, y: (-y[0], y[0]), (torch.ones(3), torch.zeros(3)), t, method="dopri5", adjoint_params=()
    )
    assert isinstance(pair, tuple) and pair[0].shape == (4, 3)


def test_backward_tolerance_is_relative_to_the_gradient_scale():
    # The adjoint system is linear, so IRDM integrates it normalised: a loss scaled by 2^-40 gives gradients
    # scaled by exactly 2^-40, instead of drowning in the absolute tolerance.
    func = Field(damping=2.0).double()
    y0 = torch.randn(4, 3, dtype=T64, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0.0, 1.0], dtype=T64)
    grads = []
    for scale in (1.0, 2.0**-40):
        y = y0.clone().requires_grad_(True)
        func.zero_grad()
        (scale * odeint_irdm(func, y, t, method="dopri5", rtol=1e-6, atol=1e-8)[-1].sum()).backward()
        grads.append([y.grad] + [p.grad for p in func.parameters()])
    for g, g_small in zip(*grads, strict=True):
        torch.testing.assert_close(g_small * 2.0**40, g, rtol=1e-12, atol=0)


def test_bad_inputs():
    func = Field()
    y0 = torch.randn(2, 3)
    with pytest.raises(ValueError, match="n_nodes must be an int >= 3"):
        odeint_irdm(func, y0, torch.tensor([0.0, 1.0]), n_nodes=1)
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        odeint_irdm(func, y0, torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="at least 2 times"):
        odeint_irdm(func, y0, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="nn.Module"):
        odeint_irdm(lambda t, y: y, y0, torch.tensor([0.0, 1.0]))


class _Ralston(hf_reduce.ode.SOLVER_CLASSES["rk2_u"]):
    """A user's solver: hf_reduce's rk2_u family pinned at Ralston's u = 2/3."""

    def __init__(self, func, y0, **kwargs):
        super().__init__(func, y0, u=2 / 3, **kwargs)


def _registered(name, cls):
    from torchdiffeq._impl.odeint import SOLVERS

    SOLVERS[name] = cls
    return name


@pytest.fixture
def user_solvers():
    from torchdiffeq._impl.dopri5 import Dopri5Solver
    from torchdiffeq._impl.odeint import SOLVERS

    names = [
        _registered("user_ralston", _Ralston),
        _registered("user_dopri5", type("D5", (Dopri5Solver,), {})),
    ]
    yield names
    for name in names:
        del SOLVERS[name]


@pytest.mark.parametrize("which", [0, 1], ids=["fixed-grid-subclass", "adaptive-subclass"])
def test_any_registered_explicit_runge_kutta_solver_is_accepted(user_solvers, which):
    method = user_solvers[which]
    func = Field().double()
    y0 = torch.randn(4, 3, dtype=T64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.0, 1.0], dtype=T64)
    # rk2 is second order: a fine grid keeps the discrete and continuous gradients within 1e-5
    kwargs = {"options": {"step_size": 0.005}} if which == 0 else {"rtol": 1e-9, "atol": 1e-10}
    reference = _gradients(odeint, func, y0, t, method=method, **kwargs)
    irdm = _gradients(odeint_irdm, func, y0, t, method=method, **kwargs)
    assert _relative_error(irdm, reference) < 1e-5


@pytest.mark.parametrize(
    "method, what",
    [
        ("explicit_adams", "multistep"),
        ("implicit_adams", "multistep"),
        ("fixed_adams", "multistep"),
        ("scipy_solver", "not an explicit Runge-Kutta"),
        ("no_such_method", "unknown method"),
    ],
)
def test_other_solvers_are_refused_by_what_they_are(method, what):
    with pytest.raises(ValueError, match=what) as error:
        odeint_irdm(Field(), torch.randn(2, 3), torch.tensor([0.0, 1.0]), method=method)
    assert len(str(error.value).splitlines()) == 1
