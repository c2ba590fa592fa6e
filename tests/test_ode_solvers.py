import math
import random

import pytest
import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

import hf_reduce  # noqa: F401  (registers the solvers)
from hf_reduce.ode import FAMILIES, NFECounter, SolverParameterError, order_condition_residuals, tableau
from hf_reduce.ode.criterion import solver_overfitting
from hf_reduce.ode.sampling import SmoothingSolver, SolverEnsemble, SolverSpec, SwitchSolver

T64 = torch.float64


def _random_valid(name, rng):
    while True:
        u, v = rng.uniform(-3, 3), rng.uniform(-3, 3)
        try:
            return tableau(name, u, v if "v" in FAMILIES[name].params else None), (u, v)
        except SolverParameterError:
            continue


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_order_conditions_hold_for_random_parameters(name):
    rng = random.Random(0)
    for _ in range(20):
        tab, params = _random_valid(name, rng)
        residuals = order_condition_residuals(tab)
        assert len(residuals) == {2: 2, 3: 4, 4: 8}[tab.order] + tab.stages - 1
        worst = max(abs(r) for r in residuals.values())
        assert worst < 1e-12 * max(1.0, *(abs(float(x)) for row in tab.a for x in row)), (params, residuals)


def _measured_order(method, params, rhs, exact, t1, steps=(16, 32, 64)):
    y0 = torch.tensor([1.0], dtype=T64)
    t = torch.tensor([0.0, t1], dtype=T64)
    errors = []
    for n in steps:
        spec = SolverSpec(method, n_steps=n, **params)
        errors.append((odeint(rhs, y0, t, **spec.odeint_kwargs())[-1] - exact).abs().item())
    return [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]


@pytest.mark.parametrize(
    "method, params",
    [
        ("rk2_u", {"u": 0.5}),
        ("rk2_u", {"u": 0.9}),
        ("rk3_uv", {"u": 0.4, "v": 0.9}),
        ("rk3_uv", {"u": 1.0, "v": 0.3}),
        ("rk4_uv", {"u": 0.3, "v": 0.8}),
        ("rk4_u1", {"u": 0.2}),
        ("rk4_u2", {"u": 0.5}),
        ("rk4_u3", {"u": 0.4}),
    ],
)
def test_measured_convergence_order(method, params):
    # y' = cos(t)·y, y(0) = 1: linear, non-autonomous (so the nodes c matter), y(t) = exp(sin t).
    rhs, exact = (lambda t, y: torch.cos(t) * y), math.exp(math.sin(2.0))
    orders = _measured_order(method, params, rhs, exact, 2.0, steps=(64, 128, 256))
    expected = FAMILIES[method].order
    # log2 of successive error ratios; the finest pair is in the asymptotic regime.
    assert abs(orders[-1] - expected) < 0.15 and orders[-1] > orders[0] - 0.05, orders


@pytest.mark.parametrize(
    "ours, builtin",
    [("rk2_u", "midpoint"), ("rk2_u", "heun2"), ("rk4_uv", "rk4")],
)
def test_special_members_equal_torchdiffeq(ours, builtin):
    params = {"midpoint": {"u": 0.5}, "heun2": {"u": 1.0}, "rk4": {"u": 1 / 3, "v": 2 / 3}}[builtin]
    torch.manual_seed(0)
    field = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    y0 = torch.randn(5, 3, dtype=T64)
    t = torch.linspace(0, 1, 4, dtype=T64)
    a = odeint(lambda t, y: field(y), y0, t, method=ours, options={"step_size": 0.125, **params})
    b = odeint(lambda t, y: field(y), y0, t, method=builtin, options={"step_size": 0.125})
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_classic_rk4_member():
    # rk4_u2 at u = 1/3 is Kutta's classic RK4: compare one step with the textbook formula.
    f = lambda t, y: torch.sin(t) * y + y**2 / 4  # noqa: E731
    y0, h = torch.tensor([0.7], dtype=T64), 0.3
    t0 = torch.tensor(0.1, dtype=T64)
    k1 = f(t0, y0)
    k2 = f(t0 + h / 2, y0 + h / 2 * k1)
    k3 = f(t0 + h / 2, y0 + h / 2 * k2)
    k4 = f(t0 + h, y0 + h * k3)
    classic = y0 + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    ours = odeint(f, y0, torch.stack([t0, t0 + h]), method="rk4_u2", options={"u": 1 / 3})[-1]
    torch.testing.assert_close(ours, classic, rtol=0, atol=1e-14)


class _Field(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 4)).to(dtype)

    def forward(self, t, y):
        return self.net(y)


def _gradient_gap(dtype, step):
    """Largest difference between the gradients of backprop through the solver and of the adjoint."""
    func = _Field(dtype)
    y0 = torch.randn(8, 4, dtype=dtype, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=dtype)
    grads = []
    for integrate in (odeint, odeint_adjoint):
        func.zero_grad()
        y0.grad = None
        out = integrate(func, y0, t, method="rk3_uv", options={"u": 0.5, "v": 1.0, "step_size": step})
        out.pow(2).sum().backward()
        grads.append([y0.grad.clone()] + [p.grad.clone() for p in func.parameters()])
    return max((a - b).abs().max().item() for a, b in zip(*grads, strict=True))


def test_gradients_through_odeint_and_adjoint_agree():
    # The adjoint solves the continuous adjoint ODE backwards with the same 3rd-order method: it agrees with
    # the exact gradient of the discrete forward pass up to the discretisation error, O(h^3).
    coarse, fine = _gradient_gap(torch.float64, 0.05), _gradient_gap(torch.float64, 0.025)
    assert coarse < 1e-4
    assert fine < coarse / 5  # ~2^3 = 8 when halving h
    assert _gradient_gap(torch.float32, 0.05) < 1e-4


def test_tuple_states_and_batched_shapes():
    y0 = (torch.ones(3, 2), torch.zeros(3))
    out = odeint(
        lambda t, y: (-y[0], y[0].sum(-1)),
        y0,
        torch.tensor([0.0, 1.0]),
        method="rk4_u3",
        options={"u": 0.2, "step_size": 0.1},
    )
    assert out[0].shape == (2, 3, 2) and out[1].shape == (2, 3)
    torch.testing.assert_close(out[0][-1], torch.full((3, 2), math.exp(-1)), rtol=1e-6, atol=1e-6)


def test_differentiable_family_parameter():
    u = torch.tensor(0.7, dtype=T64, requires_grad=True)
    y = odeint(
        lambda t, y: torch.cos(t) * y,
        torch.ones(1, dtype=T64),
        torch.tensor([0.0, 1.0], dtype=T64),
        method="rk2_u",
        options={"u": u, "step_size": 0.5},
    )
    y.sum().backward()
    assert u.grad is not None and u.grad.abs() > 0


def test_nfe_counter_forward_and_backward():
    func = NFECounter(_Field(torch.float32))
    y0 = torch.randn(3, 4, requires_grad=True)
    t = torch.tensor([0.0, 1.0])
    out = odeint_adjoint(
        func,
        y0,
        t,
        method="rk4_u2",
        options={"u": 1 / 3, "step_size": 0.25},
        adjoint_params=tuple(func.parameters()),
    )
    assert func.nfe == {"forward": 16, "backward": 0}  # 4 steps x 4 stages
    out.sum().backward()
    assert func.nfe_backward == 16  # the adjoint solve: 4 steps x 4 stages backwards
    func.reset()
    odeint(func, y0, t, method="rk2_u", options={"u": 1.0, "step_size": 0.5}).sum().backward()
    assert func.nfe == {"forward": 4, "backward": 0}


def test_bad_solver_inputs():
    with pytest.raises(SolverParameterError, match=r"outside the family's domain \(u ≠ 0\)"):
        tableau("rk2_u", 0.0)
    with pytest.raises(SolverParameterError, match="u = 1/2"):
        tableau("rk4_uv", 0.5, 0.8)
    with pytest.raises(ValueError, match="unknown Runge-Kutta family 'rk5'"):
        tableau("rk5")
    with pytest.raises(SolverParameterError, match=r"takes parameters \['u'\], not \['v'\]"):
        tableau("rk2_u", 0.5, 0.5)
    with pytest.raises(ValueError, match="unknown solver method 'rk9'.*rk2_u"):
        SolverSpec("rk9")
    with pytest.raises(SolverParameterError):
        odeint(
            lambda t, y: y,
            torch.ones(1),
            torch.tensor([0.0, 1.0]),
            method="rk3_uv",
            options={"u": 2 / 3, "v": 0.2},
        )


# --------------------------------------------------------------------------------------- sampling


def test_switch_solver_frequencies():
    a, b = SolverSpec("rk2_u", u=0.5), SolverSpec("euler", n_steps=2)
    sampler = SwitchSolver([a, b], [0.8, 0.2], seed=1)
    draws = [sampler.sample() for _ in range(2000)]
    assert abs(draws.count(a) / 2000 - 0.8) < 0.03 and sampler.default == a


@pytest.mark.parametrize("distribution", ["normal", "cauchy"])
def test_smoothing_solver_stays_in_two_sigma(distribution):
    base = SolverSpec("rk4_uv", u=0.3, v=0.8, n_steps=2)
    sampler = SmoothingSolver(base, sigma_u=0.05, sigma_v=0.02, distribution=distribution, seed=0)
    draws = [sampler.sample() for _ in range(500)]
    assert all(abs(d.u - 0.3) <= 0.1 + 1e-12 and abs(d.v - 0.8) <= 0.04 + 1e-12 for d in draws)
    assert len({d.u for d in draws}) > 100  # really drawn
    resets = sum(d.u == 0.3 for d in draws) / len(draws)
    assert (resets < 0.1) if distribution == "normal" else (resets > 0.2)  # Cauchy's heavy tails reset often
    with pytest.raises(ValueError, match="parameterised family"):
        SmoothingSolver(SolverSpec("dopri5"), sigma_u=0.1)


def test_ensemble_is_a_weighted_average():
    specs = (SolverSpec("euler", n_steps=1), SolverSpec("rk4_u2", u=1 / 3, n_steps=1))
    values = {specs[0]: torch.tensor(1.0), specs[1]: torch.tensor(3.0)}
    assert SolverEnsemble(specs, (1.0, 3.0)).combine(values.__getitem__).item() == pytest.approx(2.5)


# --------------------------------------------------------------------------------------- overfitting criterion


class TinyODEClassifier(nn.Module):
    """2-D state, MLP dynamics, linear head: an ODE flow cannot separate a disk from a ring around it."""

    def __init__(self):
        super().__init__()
        self.field = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 2))
        self.head = nn.Linear(2, 2)
        self.spec = SolverSpec("euler", n_steps=1)

    def forward(self, x):
        t = torch.tensor([0.0, 1.0])
        z = odeint(lambda t, y: self.field(y), x, t, **self.spec.odeint_kwargs())[-1]
        return self.head(z)


def _rings(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=g) * 2 * math.pi
    inner = torch.rand(n, generator=g) < 0.5
    radius = torch.where(inner, torch.rand(n, generator=g) * 0.5, 1.0 + torch.rand(n, generator=g) * 0.5)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], 1), inner.long()


def _train(model, spec, x, y, steps=600):
    torch.manual_seed(0)
    model.spec = spec
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _accuracy(model, x, y):
    def evaluate(spec):
        model.spec = spec
        with torch.no_grad():
            return (model(x).argmax(-1) == y).float().mean().item()

    return evaluate


def test_criterion_flags_a_one_step_model():
    x, y = _rings()
    model = TinyODEClassifier()
    train_spec = SolverSpec("euler", n_steps=1)
    _train(model, train_spec, x, y)
    report = solver_overfitting(_accuracy(model, *_rings(seed=1)), train_spec)
    assert report.reference_accuracy > 0.9  # one Euler step folds the plane and separates the rings
    assert report.overfits and report.max_drop > 0.1, report.rows
    assert "overfits" in report.verdict()


def test_criterion_passes_a_well_resolved_model():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()  # separable: an ODE flow can do it
    model = TinyODEClassifier()
    train_spec = SolverSpec("rk4_uv", u=1 / 3, v=2 / 3, n_steps=4)
    _train(model, train_spec, x, y, steps=200)
    report = solver_overfitting(_accuracy(model, x, y), train_spec)
    assert report.reference_accuracy > 0.95 and not report.overfits, report.rows


@pytest.mark.parametrize(
    "family, params",
    [
        ("rk3_uv", {"u": 2 / 3 + 1e-5, "v": 1.0}),
        ("rk4_uv", {"u": 0.5 + 2e-6, "v": 2 / 3}),
        ("rk4_u2", {"u": 0.001}),
    ],
)
def test_ill_conditioned_members_are_warned_about(family, params):
    # The first two passed the 1e-6 singular cut-off silently and lost 10-100x accuracy.
    with pytest.warns(UserWarning, match=rf"{family} at .* is ill-conditioned: a tableau coefficient is"):
        tableau(family, **params)


def test_well_conditioned_members_are_not_warned_about():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for family in FAMILIES:
            tableau(family)
        tableau("rk2_u", u=2 / 3)
        tableau("rk4_u2", u=0.1)
        tableau("rk3_uv", u=0.5, v=0.9)
