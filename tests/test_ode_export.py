"""ODE classifiers through torch.export, ONNX (onnxruntime) and torch.compile(fullgraph=True): fixed-grid
solvers run a plain Runge-Kutta loop, bit-identical to torchdiffeq's ``odeint``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchdiffeq import odeint

import hf_reduce  # noqa: F401
from hf_reduce.ode import ODEConfig, ODEForImageClassification, SolverSpec


def _model(**overrides) -> ODEForImageClassification:
    torch.manual_seed(0)
    config = ODEConfig.from_preset("odenet_mnist", num_labels=10, image_size=12, **overrides)
    return ODEForImageClassification(config).eval()


@pytest.mark.parametrize("spec", [SolverSpec("rk4_u2", u=1 / 3, n_steps=4), SolverSpec("rk2_u", u=0.7, n_steps=3),
                                  SolverSpec("euler", n_steps=5)], ids=lambda s: s.method)  # fmt: skip
def test_plain_fixed_grid_blocks_equal_torchdiffeq(spec):
    model = _model()
    model.set_solver(spec)
    block = model.ode_blocks[0]
    x = torch.randn(2, block.func.func.conv1.conv.out_channels, 6, 6)
    with torch.no_grad():
        plain = block(x)
        t = torch.tensor([0.0, 1.0])
        reference = odeint(block.func, x, t, **spec.odeint_kwargs())[-1]
    assert torch.equal(plain, reference)


def test_export_onnx_and_compile_match_eager():
    import onnxruntime

    model = _model()
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        eager = model(pixel_values=x).logits
        exported = torch.export.export(model, (), {"pixel_values": x})
        torch.testing.assert_close(exported.module()(pixel_values=x).logits, eager, rtol=0, atol=1e-6)
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(pixel_values=x).logits, eager, rtol=0, atol=1e-6)
    program = torch.onnx.export(model, (), kwargs={"pixel_values": x}, dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString())
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})[:1]
    assert np.abs(logits - eager.numpy()).max() < 1e-5


def test_adaptive_solvers_say_they_are_eager_only():
    model = _model()
    model.set_solver(SolverSpec("dopri5"))
    with pytest.raises(NotImplementedError, match="eagerly only.*fixed-grid solver"):
        torch.export.export(model, (), {"pixel_values": torch.rand(1, 1, 12, 12)})
