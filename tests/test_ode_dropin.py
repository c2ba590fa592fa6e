"""hf_reduce's solvers and ``odeint_irdm`` as drop-ins for torchdiffeq: the properties its own suites check
(forward accuracy on its problems, gradients equal to direct backprop, gradcheck, ``perturb``, ``jump_t``,
tuple / complex / float64 states) and the options meaning what they mean there."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

import hf_reduce  # noqa: F401
from hf_reduce.ode import FAMILIES, NFECounter
from hf_reduce.ode.fixed_grid import FIXED_GRID_METHODS, fixed_grid_odeint
from hf_reduce.ode.irdm import IRDMInterpolationError, IRDMStats, odeint_irdm
from hf_reduce.ode.problems import T64, ForcedStiffField, gradients, problem, relative_error

ADAPTIVE = ["dopri5", "bosh3", "fehlberg2", "adaptive_heun"]
FAMILY_PARAMS = {
    "rk2_u": {"u": 0.4},
    "rk3_uv": {"u": 0.4, "v": 0.9},
    "rk4_uv": {"u": 0.3, "v": 0.8},
    "rk4_u1": {"u": 0.2},
    "rk4_u2": {"u": 0.25},
    "rk4_u3": {"u": 0.3},
}


# ------------------------------------------------------------------------------------------- IRDM, adaptive


@pytest.mark.parametrize("name", ["constant", "linear", "sine", "cubic"])
def test_irdm_gradients_within_10x_of_the_adjoint_at_defaults(name):
    # Before: the backward evaluated the interpolant beyond its interval (dopri5 overshoots) and crashed on
    # "constant"; on "cubic" the default 16 nodes gave a 0.42 relative gradient error, silently.
    func, y0, t = problem(name)
    settings = {"method": "dopri5", "rtol": 1e-6, "atol": 1e-8}
    reference = gradients(odeint, func, y0, t, method="dopri5", rtol=1e-12, atol=1e-12)
    adjoint = relative_error(gradients(odeint_adjoint, func, y0, t, **settings), reference)
    stats = IRDMStats()
    irdm = relative_error(gradients(odeint_irdm, func, y0, t, stats=stats, **settings), reference)
    assert irdm <= 10 * adjoint + 1e-9, (irdm, adjoint)
    assert stats.nodes > 0 and 0 < stats.max_error_ratio <= 10


@pytest.mark.parametrize("method", ADAPTIVE)
def test_irdm_gradcheck_with_every_adaptive_method(method):
    # Before: the backward crashed ("underflow in dt") on torchdiffeq's constant problem at the default
    # tolerances, for each of these methods.
    func, y0, t = problem("constant")

    def solve(y, tt):
        return odeint_irdm(func, y, tt, method=method)

    y = y0.clone().requires_grad_(True)
    tt = t.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(solve, (y, tt), eps=1e-6, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_irdm_forward_is_odeint(method):
    func, y0, t = problem("sine")
    with torch.no_grad():
        expected = odeint(func, y0, t, method=method, rtol=1e-6, atol=1e-8)
    got = odeint_irdm(func, y0, t, method=method, rtol=1e-6, atol=1e-8)
    assert torch.equal(got.detach(), expected)
    exact = func.y_exact(t).reshape(got.shape)
    assert (got.detach() - exact).abs().max() / exact.abs().max() < 1e-3  # torchdiffeq's accuracy check


def test_backward_never_evaluates_the_interpolant_outside_its_interval():
    func, y0, t = problem("constant")
    seen = []

    class Recording(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = func

        def forward(self, tt, y):
            if torch.is_grad_enabled() and y.requires_grad:  # the backward's evaluations
                seen.append(float(tt))
            return self.inner(tt, y)

    gradients(odeint_irdm, Recording(), y0, t, method="dopri5", rtol=1e-6, atol=1e-8)
    assert seen and float(t[0]) <= min(seen) and max(seen) <= float(t[-1])


def test_unreachable_interpolation_accuracy_is_an_error():
    func, y0, t = problem("cubic")
    with pytest.raises(
        IRDMInterpolationError, match=r"could not interpolate .* raise n_nodes \(irdm_nodes in an ODEConfig\)"
    ):
        odeint_irdm(func, y0, t[[0, -1]], method="dopri5", rtol=1e-12, atol=1e-14, n_nodes=3)


def test_irdm_stays_cheaper_and_as_accurate_on_stiff_dynamics_at_defaults():
    func = NFECounter(ForcedStiffField().double())
    y0 = torch.randn(8, 3, dtype=T64, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.0, 1.0], dtype=T64)
    reference = gradients(odeint, func, y0, t, method="dopri5", rtol=1e-10, atol=1e-12)
    settings = {"method": "dopri5", "rtol": 1e-6, "atol": 1e-8, "adjoint_options": {"norm": "seminorm"}}
    func.reset()
    irdm = relative_error(gradients(odeint_irdm, func, y0, t, **settings), reference)
    irdm_nfe = func.nfe_backward
    func.reset()
    adjoint = relative_error(gradients(odeint_adjoint, func, y0, t, **settings), reference)
    assert 0 < irdm_nfe <= 0.5 * func.nfe_backward
    assert irdm <= adjoint


def test_irdm_jump_t_discontinuity():
    # A field that switches at t = 0.5; jump_t tells the solver, as in torchdiffeq's tests.
    class Switch(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([0.7, -0.3], dtype=T64))

        def forward(self, tt, y):
            return torch.where(tt < 0.5, -y * self.w[0], torch.sin(y) * self.w[1])

    func = Switch()
    y0 = torch.tensor([1.0, 2.0], dtype=T64)
    t = torch.tensor([0.0, 1.0], dtype=T64)
    options = {"jump_t": torch.tensor([0.5], dtype=T64)}
    kwargs = {"method": "dopri5", "rtol": 1e-8, "atol": 1e-10, "options": options}
    with torch.no_grad():
        assert torch.equal(odeint_irdm(func, y0, t, **kwargs), odeint(func, y0, t, **kwargs))
    reference = gradients(odeint, func, y0, t, **{**kwargs, "rtol": 1e-12, "atol": 1e-13})
    assert relative_error(gradients(odeint_irdm, func, y0, t, **kwargs), reference) < 1e-5


# ----------------------------------------------------------------------------------------- IRDM, fixed grid


def test_irdm_fixed_grid_forward_equals_odeint_and_uses_its_grid():
    # Before: without step_size the forward stepped on the node grid (150 evaluations instead of 8) and the
    # grid_constructor received the node times.
    func = NFECounter(problem("sine")[0])
    _, y0, t = problem("sine")
    received = []

    def grid(f, y, tt):
        received.append(tt.clone())
        return torch.linspace(float(tt[0]), float(tt[-1]), 15, dtype=tt.dtype)

    for options in ({}, {"step_size": 0.25}, {"grid_constructor": grid}):
        with torch.no_grad():
            func.reset()
            expected = odeint(func, y0, t, method="rk4", options=options)
            nfe = func.nfe_forward
            func.reset()
            got = odeint_irdm(func, y0, t, method="rk4", options=options)
        assert torch.equal(got, expected), options
        assert func.nfe_forward == nfe + 1  # + the slope at the end, for the last step's dense output
    assert all(torch.equal(r, t) for r in received)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_irdm_fixed_grid_gradients_match_backprop(family):
    func, y0, t = problem("sine")
    options = {**FAMILY_PARAMS[family], "step_size": 0.01}
    reference = _without_t(gradients(odeint, func, y0, t, method=family, options=options))
    irdm = _without_t(gradients(odeint_irdm, func, y0, t, method=family, options=options))
    order = FAMILIES[family].order
    assert relative_error(irdm, reference) < {2: 1e-3, 3: 1e-5, 4: 1e-6}[order]


def _without_t(grads):
    # Backprop differentiates odeint's *linear* interpolation at output times between grid points: its
    # t-gradient is the chord slope, O(h) away from f(t_i), which continuous adjoints return.
    return [grads[0], *grads[2:]]


# -------------------------------------------------------------------------------------- IRDM, API parity


def test_adjoint_callbacks_are_called_and_event_fn_is_refused():
    calls = {"callback_step": 0, "callback_step_adjoint": 0, "callback_accept_step_adjoint": 0}

    class WithCallbacks(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2).double()

        def forward(self, tt, y):
            return torch.tanh(self.lin(y))

        def callback_step(self, t0, y0, dt):
            calls["callback_step"] += 1

        def callback_step_adjoint(self, t0, y0, dt):
            calls["callback_step_adjoint"] += 1

        def callback_accept_step_adjoint(self, t0, y0, dt):
            calls["callback_accept_step_adjoint"] += 1

    func = WithCallbacks()
    y0 = torch.ones(3, 2, dtype=T64, requires_grad=True)
    odeint_irdm(func, y0, torch.tensor([0.0, 1.0], dtype=T64), method="dopri5").sum().backward()
    assert all(n > 0 for n in calls.values()), calls
    with pytest.raises(NotImplementedError, match="event_fn"):
        odeint_irdm(func, y0, torch.tensor([0.0, 1.0], dtype=T64), event_fn=lambda t, y: y.sum())


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_irdm_tuple_complex_and_float32_states(method):
    torch.manual_seed(0)
    lin = nn.Linear(3, 3)
    t = torch.tensor([0.0, 0.5, 1.0])
    options = {"step_size": 0.05} if method == "rk4" else {}
    kwargs = {"method": method, "options": options, "rtol": 1e-6, "atol": 1e-8}

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, tt, y):
            return (torch.tanh(self.lin(y[1])), -y[0])

    pair = Pair()
    y0 = (torch.randn(4, 3), torch.randn(4, 3))
    ref = [y.clone().requires_grad_(True) for y in y0]
    irdm = [y.clone().requires_grad_(True) for y in y0]
    sum(o.square().sum() for o in odeint(pair, tuple(ref), t, **kwargs)).backward()
    sum(o.square().sum() for o in odeint_irdm(pair, tuple(irdm), t, **kwargs)).backward()
    for a, b in zip(ref, irdm, strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=2e-3, atol=2e-4)

    class Rotation(nn.Module):
        def __init__(self):
            super().__init__()
            self.omega = nn.Parameter(torch.tensor(1.3, dtype=T64))

        def forward(self, tt, z):
            return 1j * self.omega * z

    rotation = Rotation()
    z0 = torch.tensor([1.0 + 0.5j, -0.2 + 1j], dtype=torch.complex128)
    tz = t.double()
    out = odeint_irdm(rotation, z0, tz, **{**kwargs, "rtol": 1e-9, "atol": 1e-11})
    exact = z0 * torch.exp(1j * 1.3 * tz)[:, None]
    assert out.dtype == torch.complex128 and (out.detach() - exact).abs().max() < 1e-5
    out[-1].real.sum().backward()
    # d/dω Re Σ z0 e^{iωT} = Re Σ iT z0 e^{iωT}
    expected = (1j * 1.0 * z0 * torch.exp(torch.tensor(1j * 1.3))).real.sum()
    assert abs(rotation.omega.grad.item() - expected.item()) < 1e-4


# ---------------------------------------------------------------------------------- solvers and perturb


class _JumpAtHalf(nn.Module):
    """f = 0 before t = 1/2, 1 after, and 7 at t = 1/2 itself: only one-sided limits integrate it right."""

    def forward(self, tt, y):
        value = torch.where(tt == 0.5, 7.0, (tt > 0.5).to(y.dtype))
        return torch.ones_like(y) * value


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("tensor_params", [False, True], ids=["float", "tensor"])
def test_perturb_takes_one_sided_limits_at_every_grid_stage(family, tensor_params):
    # Before: rk4_u1's stage at c = 0 and, with tensor u / v, stages at c = 1 were not perturbed.
    params = dict(FAMILY_PARAMS[family])
    if family == "rk4_u1":
        params = {"u": 0.2}
    if family == "rk2_u":
        params = {"u": 1.0}  # the c = 1 stage
    if tensor_params:
        params = {k: torch.tensor(v, dtype=T64) for k, v in params.items()}
    y0 = torch.zeros(1, dtype=T64)
    t = torch.tensor([0.0, 1.0], dtype=T64)
    out = odeint(_JumpAtHalf(), y0, t, method=family, options={**params, "step_size": 0.25, "perturb": True})
    # Piecewise-constant f integrated with one-sided limits at the grid points is exact: y(1) = 1/2.
    torch.testing.assert_close(out[-1], torch.tensor([0.5], dtype=T64), rtol=0, atol=1e-14)


class _Decay(nn.Module):
    def __init__(self):
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(1.0, dtype=T64))

    def forward(self, tt, y):
        return -self.rate * y


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("interp", ["linear", "cubic"])
def test_events_stop_every_family_where_torchdiffeq_does(family, interp):
    # Before: integrate_until_event passes dt as a Python float and every family crashed in addcmul.
    from torchdiffeq import odeint_event

    decay = _Decay()  # y' = -k y, y(0) = 1, k = 1: y = 1/2 at t = ln 2
    y0, t0 = torch.ones(1, dtype=T64), torch.tensor(0.0, dtype=T64)
    options = {**FAMILY_PARAMS[family], "step_size": 0.05, "interp": interp}

    def half(tt, y):
        return y.sum() - 0.5

    found = {}
    for name, method, opts in (
        ("ours", family, options),
        ("rk4", "rk4", {"step_size": 0.05, "interp": interp}),
    ):
        event_t, solution = odeint_event(decay, y0, t0, event_fn=half, method=method, options=opts)
        found[name] = event_t
        assert solution.shape == (2, 1) and abs(solution[-1].item() - 0.5) < 1e-6
    # The event time is off ln 2 by the interpolant's error (linear: O(h^2)) or the family's own (h^order).
    tolerance = 2e-3 if interp == "linear" else 10 * 0.05 ** FAMILIES[family].order
    assert abs(found["ours"].item() - math.log(2)) < tolerance
    assert abs(found["ours"].item() - found["rk4"].item()) < 2e-3
    # Through the adjoint, the event time is differentiable in the parameters.
    event_t, _ = odeint_event(decay, y0, t0, event_fn=half, odeint_interface=odeint_adjoint, method=family,
                              options=options, adjoint_params=tuple(decay.parameters()))  # fmt: skip
    (grad,) = torch.autograd.grad(event_t, decay.rate)
    assert abs(grad.item() + math.log(2)) < 1e-2  # t* = ln 2 / k: d t* / d k = -ln 2 at k = 1


@pytest.mark.parametrize("method", sorted(FIXED_GRID_METHODS))
def test_plain_fixed_grid_path_is_bit_identical_to_odeint(method):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3))

    def func(tt, y):
        return net(y) * torch.cos(tt)

    params = FAMILY_PARAMS.get(method, {})
    y0 = torch.randn(4, 3)
    for t in (torch.linspace(0, 1, 5), torch.tensor([0.0, 0.37, 1.0]), torch.tensor([1.0, 0.3, 0.0])):
        for extra in ({}, {"step_size": 0.1}, {"step_size": 0.1, "interp": "cubic"}, {"perturb": True}):
            options = {**params, **extra}
            expected = odeint(func, y0, t, method=method, options=options)
            assert torch.equal(fixed_grid_odeint(func, y0, t, method=method, options=options), expected)
            # With the output times and grid as Python floats nothing depends on tensor values.
            if "step_size" not in extra:
                got = fixed_grid_odeint(func, y0, t.tolist(), method=method, options=options)
                assert torch.equal(got, expected)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_families_as_torchdiffeq_methods(family):
    # torchdiffeq's own checks for a fixed-grid method: accuracy on its problems, gradient through the adjoint
    # equal to direct backprop, gradcheck, tuple states.
    params = FAMILY_PARAMS[family]
    func, y0, t = problem("sine")
    options = {**params, "step_size": 0.01}
    out = odeint(func, y0, t, method=family, options=options)
    exact = func.y_exact(t).reshape(out.shape)
    assert (out - exact).abs().max() / exact.abs().max() < 1e-3
    reference = _without_t(gradients(odeint, func, y0, t, method=family, options=options))
    adjoint = _without_t(gradients(odeint_adjoint, func, y0, t, method=family, options=options))
    assert relative_error(adjoint, reference) < 1e-3
    lin = problem("linear")[0]
    y = torch.ones(10, dtype=T64, requires_grad=True)
    short = torch.tensor([0.0, 0.5], dtype=T64)
    assert torch.autograd.gradcheck(
        lambda y: odeint(lin, y, short, method=family, options={**params, "step_size": 0.1}), (y,)
    )
    pair = odeint(lambda tt, y: (y[1], -y[0]), (torch.ones(2), torch.zeros(2)), t[:3], method=family,
                  options={**params, "step_size": 0.01})  # fmt: skip
    torch.testing.assert_close(pair[0][-1], torch.cos(t[2] - t[0]).float().expand(2), rtol=1e-3, atol=1e-3)


class _Counting(nn.Module):
    """torchdiffeq's callback protocol, counting calls (as its test_callback does)."""

    def __init__(self):
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(1.0, dtype=T64))
        self.calls = {"callback_step": 0, "callback_step_adjoint": 0}

    def forward(self, tt, y):
        return -self.rate * y

    def callback_step(self, t0, y0, dt):
        self.calls["callback_step"] += 1

    def callback_step_adjoint(self, t0, y0, dt):
        self.calls["callback_step_adjoint"] += 1


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_callbacks_are_called_once_per_step_for_every_family(family):
    t = torch.tensor([0.0, 1.0], dtype=T64)
    options = {**FAMILY_PARAMS[family], "step_size": 0.125}
    func = _Counting()
    odeint(func, torch.ones(1, dtype=T64), t, method=family, options=options)
    assert func.calls == {"callback_step": 8, "callback_step_adjoint": 0}
    func = _Counting()
    odeint_adjoint(func, torch.ones(1, dtype=T64), t, method=family, options=options).sum().backward()
    assert func.calls == {"callback_step": 8, "callback_step_adjoint": 8}
