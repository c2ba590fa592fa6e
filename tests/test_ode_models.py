import math

import pytest
import torch
from helpers import BLOCK_HF_REDUCE, run_python
from transformers import AutoModelForImageClassification

import hf_reduce  # noqa: F401
from hf_reduce.ode import (
    ODEConfig,
    ODEForImageClassification,
    SolverEnsemble,
    SolverParameterError,
    SolverSpec,
)


def tiny_config(**kw):
    base = dict(
        channels=[4, 8], ode_stages=[True, True], image_size=8, num_labels=3, n_steps=2, group_norm_groups=2
    )
    base.update(kw)
    return ODEConfig(**base)


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize(
    "norms",
    [
        dict(norm_stem="batch", norm_resnet="batch", norm_ode="batch"),
        dict(norm_stem="layer", norm_resnet="layer", norm_ode="layer"),
        dict(norm_stem="group", norm_resnet="group", norm_ode="group"),
        dict(norm_stem="instance", norm_resnet="instance", norm_ode="instance"),
        dict(norm_stem="none", norm_resnet="none", norm_ode="none"),
        dict(norm_ode="none", ode_param_norm="weight"),
        dict(norm_ode="none", ode_param_norm="spectral"),
    ],
    ids=["bn", "ln", "gn", "in", "none", "wn", "sn"],
)
def test_every_norm_trains_a_step_and_round_trips(tmp_path, norms):
    torch.manual_seed(0)
    model = ODEForImageClassification(tiny_config(**norms))
    x, y = _batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    model(pixel_values=x, labels=y).loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    model.eval()
    expected = model(pixel_values=x).logits
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is ODEForImageClassification
    _assert_same(model, reloaded, expected, reloaded(pixel_values=x).logits)


def _assert_same(model, reloaded, expected, logits):
    """Bit-identical weights; identical outputs, up to the last bits for spectral norm, whose matrix-vector
    products take a BLAS path that depends on the memory alignment of the loaded weights."""
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    if model.config.ode_param_norm == "spectral":
        torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-7)
    else:
        assert torch.equal(logits, expected)


def test_trust_remote_code_carries_the_solvers(tmp_path):
    torch.manual_seed(0)
    model = ODEForImageClassification(
        tiny_config(method="rk4_uv", u=0.3, v=0.8, ode_param_norm="spectral")
    ).eval()
    x, _ = _batch()
    model.save_pretrained(tmp_path)
    torch.save({"x": x, "logits": model(pixel_values=x).logits.detach()}, tmp_path / "expected.pt")
    code = (
        BLOCK_HF_REDUCE
        + f"""
import torch
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
assert not type(model).__module__.startswith("hf_reduce")
expected = torch.load({str(tmp_path / "expected.pt")!r})
# spectral norm: equal up to BLAS alignment effects, see _assert_same
torch.testing.assert_close(model(pixel_values=expected["x"]).logits, expected["logits"], rtol=1e-6, atol=1e-7)
print("remote-ode-ok", model.nfe)
"""
    )
    assert "remote-ode-ok" in run_python(code)


def _gradients(mode):
    # A fixed grid keeps this cheap: backprop gives the exact gradient of the discrete solve, the adjoint and
    # IRDM the continuous one, equal up to the O(h^4) discretisation error of RK4 with 8 steps.
    torch.manual_seed(0)
    config = tiny_config(
        channels=[4],
        ode_stages=[True],
        image_size=4,
        method="rk4_u2",
        n_steps=8,
        gradient_mode=mode,
        norm_ode="layer",
        norm_stem="layer",
        irdm_nodes=12,
    )
    model = ODEForImageClassification(config).double()
    x, y = _batch()
    x = x[:, :, :4, :4]
    model(pixel_values=x.double(), labels=y).loss.backward()
    return [p.grad for p in model.parameters()], model.nfe


def test_backprop_adjoint_and_irdm_gradients_agree():
    reference, nfe_backprop = _gradients("backprop")
    for mode in ("adjoint", "irdm"):
        grads, nfe = _gradients(mode)
        num = math.sqrt(sum(((g - r) ** 2).sum().item() for g, r in zip(grads, reference, strict=True)))
        den = math.sqrt(sum((r**2).sum().item() for r in reference))
        assert num / den < 1e-4, (mode, num / den)
        assert nfe["backward"] > 0
    assert nfe_backprop["backward"] == 0


def test_solver_override_at_inference():
    torch.manual_seed(0)
    model = ODEForImageClassification(tiny_config(method="euler", n_steps=1)).eval()
    x, _ = _batch()
    coarse = model(pixel_values=x).logits
    assert model.nfe["forward"] == 2  # two ODE blocks, one Euler step each
    model.set_solver(SolverSpec("rk4_u2", u=1 / 3, n_steps=8))
    fine = model(pixel_values=x).logits
    assert model.nfe["forward"] == 2 * 8 * 4 and not torch.allclose(coarse, fine)
    model.set_solver()
    assert torch.equal(model(pixel_values=x).logits, coarse)
    ensemble = SolverEnsemble(
        (SolverSpec("euler", n_steps=1), SolverSpec("rk4_u2", u=1 / 3, n_steps=8)), (0.5, 0.5)
    )
    model.set_solver(ensemble=ensemble)
    assert model(pixel_values=x).logits.shape == coarse.shape


def test_bad_inputs():
    with pytest.raises(
        ValueError, match=r"norm_ode must be one of \['batch', 'layer', 'group', 'instance', 'none'\]"
    ):
        tiny_config(norm_ode="weight")
    with pytest.raises(ValueError, match="gradient_mode must be one of"):
        tiny_config(gradient_mode="reverse")
    with pytest.raises(ValueError, match="unknown solver method 'rk5'"):
        ODEForImageClassification(tiny_config(method="rk5"))
    with pytest.raises(SolverParameterError, match="outside the family's domain"):
        ODEForImageClassification(tiny_config(method="rk4_uv", u=0.5, v=0.7))
    with pytest.raises(ValueError, match="unknown preset"):
        ODEConfig.from_preset("odenet50")
    model = ODEForImageClassification(tiny_config())
    with pytest.raises(ValueError, match=r"expected pixel_values of shape \(batch, 1, 8, 8\)"):
        model(pixel_values=torch.rand(2, 1, 16, 16))


def test_presets_build():
    for name in ("odenet_mnist", "resnet_mnist"):
        model = ODEForImageClassification(ODEConfig.from_preset(name, num_labels=10))
        assert model(pixel_values=torch.rand(2, 1, 28, 28)).logits.shape == (2, 10)


def _ode_folders(tmp_path):
    """Three saved rk2_u models: ``a``, ``same`` (identical remote code) and ``other`` (whose remote tableau.py
    builds a different method under the same name)."""
    import shutil

    torch.manual_seed(0)
    model = ODEForImageClassification(tiny_config(method="rk2_u")).eval()
    model.save_pretrained(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "same")
    shutil.copytree(tmp_path / "a", tmp_path / "other")
    tableau_py = tmp_path / "other" / "tableau.py"
    text = tableau_py.read_text()
    changed = text.replace("b=(1 - 1 / (2 * u), 1 / (2 * u)), order=2", "b=(1.0, 0.0), order=1")
    assert changed != text
    tableau_py.write_text(changed)
    return {name: str(tmp_path / name) for name in ("a", "same", "other")}


_LOAD = """
import torch
from transformers import AutoModelForImageClassification
def load(folder):
    return AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
"""


def test_remote_code_then_import_hf_reduce_shares_the_solver_table(tmp_path):
    folders = _ode_folders(tmp_path)
    code = (
        _LOAD
        + f"""
load({folders["a"]!r}); load({folders["same"]!r})
import hf_reduce
from torchdiffeq import odeint
y = odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), method="rk2_u", options={{"step_size": 0.1}})
assert abs(float(y[-1]) - 0.3679) < 1e-3, y
print("shared-ok")
"""
    )
    assert "shared-ok" in run_python(code)


def test_a_different_solver_under_a_taken_name_is_refused_naming_both(tmp_path):
    folders = _ode_folders(tmp_path)
    code = (
        BLOCK_HF_REDUCE
        + _LOAD
        + f"""
load({folders["a"]!r})
try:
    load({folders["other"]!r})
except RuntimeError as error:
    message = str(error)
    assert "'rk2_u'" in message and "hf_reduce" not in message, message
    assert message.count("transformers_modules") == 2, message
    print("refused-ok")
"""
    )
    assert "refused-ok" in run_python(code)


def test_irdm_models_keep_odeint_irdms_default_nodes():
    import inspect

    from hf_reduce.ode import odeint_irdm

    default = inspect.signature(odeint_irdm).parameters["n_nodes"].default
    assert ODEConfig().irdm_nodes == default  # was 16 against odeint_irdm's 33
    model = ODEForImageClassification(tiny_config(gradient_mode="irdm"))
    assert {block.irdm_nodes for block in model.modules() if hasattr(block, "irdm_nodes")} == {default}
