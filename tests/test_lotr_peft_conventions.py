"""LoTR behaves as PEFT's tuners do where users and PEFT's own tests rely on it: several adapters from one
config, trainability of inactive adapters, mixed-adapter batches, ``init_weights``."""

import pytest
import torch
from lotr_models import logits, randomize_cores, tiny_bert, tiny_llama, tokens
from peft import PeftModel, get_peft_model

import hf_reduce  # noqa: F401
from hf_reduce.lotr import LoTRConfig, LoTRLayer


def _config(**kw):
    kw.setdefault("target_modules", ["query", "value"])
    return LoTRConfig(r=4, **kw)


def _requires_grad_by_adapter(model):
    """{adapter: ({requires_grad of its cores}, {requires_grad of its shared factors})}."""
    tuner = model.base_model
    out = {}
    for module in model.modules():
        if isinstance(module, LoTRLayer):
            for name, core in module.lotr_G.items():
                out.setdefault(name, (set(), set()))[0].add(core.requires_grad)
    for name in tuner.lotr_A:
        out.setdefault(name, (set(), set()))[1].update(
            p.requires_grad for p in tuner._shared_parameters(name)
        )
    return out


def test_add_adapter_with_a_config_already_in_use_leaves_the_first_adapter_alone():
    # Before: _prepare_model found its adapter by identity, re-initialised the default adapter's shared factors
    # (output changed by 3.6), then failed with KeyError: 'other'.
    config = _config()
    model = get_peft_model(tiny_bert(), config)
    randomize_cores(model)
    before = logits(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.add_adapter("other", config)
    assert torch.equal(logits(model), before)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert set(model.base_model.lotr_A) == {"default", "other"}
    model.set_adapter("other")
    assert torch.equal(logits(model), logits(tiny_bert()))  # the new adapter starts as the identity


def test_shared_factors_train_exactly_when_their_cores_do(tmp_path):
    # Before: adding or loading another adapter froze the A/B of a trainable inactive adapter while its cores
    # stayed trainable, so training it updated the cores only.
    model = get_peft_model(tiny_bert(), _config())
    model.add_adapter("b", _config())
    model.base_model.set_requires_grad("b", True)  # inactive, but trainable
    model.add_adapter("c", _config(share_by="shape"))
    states = _requires_grad_by_adapter(model)
    assert states["b"] == ({True}, {True}) and states["default"] == ({True}, {True})
    assert states["c"] == ({False}, {False})
    for name, (cores, factors) in states.items():
        assert cores == factors, name

    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_bert(), tmp_path, is_trainable=True)
    loaded.load_adapter(tmp_path / "c", adapter_name="c")  # inference-mode load of another adapter
    for name, (cores, factors) in _requires_grad_by_adapter(loaded).items():
        assert cores == factors, name
    assert _requires_grad_by_adapter(loaded)["default"] == ({True}, {True})


def _mixed_model():
    model = get_peft_model(tiny_llama(), _config(target_modules=["q_proj", "v_proj"]))
    model.add_adapter("other", _config(target_modules=["q_proj", "v_proj"], init_weights=False))
    randomize_cores(model)
    return model.eval()


def test_mixed_adapter_batches_run_each_row_with_its_adapter():
    # Before: adapter_names was silently ignored; every row ran with the active adapter.
    model = _mixed_model()
    ids = tokens(batch=4)
    names = ["default", "other", "__base__", "other"]
    expected = []
    for row, name in enumerate(names):
        if name == "__base__":
            with model.disable_adapter():
                expected.append(logits(model, ids[row : row + 1]))
        else:
            model.set_adapter(name)
            expected.append(logits(model, ids[row : row + 1]))
    model.set_adapter("default")
    with torch.no_grad():
        mixed = model(input_ids=ids, adapter_names=names).logits
    torch.testing.assert_close(mixed, torch.cat(expected), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(expected[0], expected[1])  # the rows really differ by adapter


def test_mixed_adapter_batches_refuse_what_lora_refuses():
    model = _mixed_model()
    ids = tokens(batch=2)
    with pytest.raises(ValueError, match="Length of `adapter_names` should be the same"):
        model(input_ids=ids, adapter_names=["default"])
    with pytest.raises(ValueError, match="non-existing adapter"):
        model(input_ids=ids, adapter_names=["default", "typo"])
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        model(input_ids=ids, adapter_names=["default", "other"])
    model.eval()
    model.merge_adapter()
    with pytest.raises(ValueError, match="merged adapters"):
        model(input_ids=ids, adapter_names=["default", "other"])


@pytest.mark.parametrize("init_lotr", ["zero_core", "tucker"])
def test_init_weights_false_starts_away_from_the_identity(init_lotr):
    # Before: LoTRConfig(init_weights=False), as PEFT's test helpers write it, was a TypeError.
    base = logits(tiny_bert())
    assert torch.equal(logits(get_peft_model(tiny_bert(), _config(init_lotr=init_lotr))), base)
    changed = logits(get_peft_model(tiny_bert(), _config(init_lotr=init_lotr, init_weights=False)))
    assert torch.isfinite(changed).all() and not torch.allclose(changed, base)


class _Stack(torch.nn.Module):
    def __init__(self, width, layers=2):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(width, width, bias=False) for _ in range(layers))

    def forward(self, x):
        return torch.stack([layer(x) for layer in self.layers])


def _first_adamw_step_output_change(width, lr=1e-2, **config):
    """RMS change of the layers' outputs after one AdamW step, per unit learning rate."""
    torch.manual_seed(0)
    model = get_peft_model(_Stack(width), LoTRConfig(r=8, target_modules=["0", "1"], **config))
    x = torch.randn(64, width, generator=torch.Generator().manual_seed(1))
    direction = torch.randn(2, 64, width, generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0)
    before = model(x).detach()
    (model(x) * direction).mean().backward()
    optimizer.step()
    return ((model(x).detach() - before).pow(2).mean().sqrt() / lr).item()


def test_the_default_update_size_does_not_grow_with_the_width():
    # Before: A and B started as unscaled N(0, 1), so one AdamW step moved the outputs ∝ sqrt(d_in) (x4 from width
    # 64 to 1024) and the good learning rate moved with the width; the cores went NaN under SGD lr 0.5 (PEFT's test).
    narrow, wide = (_first_adamw_step_output_change(width) for width in (64, 1024))
    assert 0.67 < wide / narrow < 1.5, (narrow, wide)
    paper = [_first_adamw_step_output_change(width, init_lotr="zero_core") for width in (64, 1024)]
    assert paper[1] / paper[0] > 3  # the authors' initialisation, still available, is not width-independent


def test_sgd_at_a_high_learning_rate_stays_finite():
    # PEFT's test_parameters_after_loading_model: SGD lr 0.5 on sum(outputs), 3 steps, both layers adapted.
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 2), torch.nn.LogSoftmax(-1)
    )
    model = get_peft_model(mlp, LoTRConfig(r=2, target_modules=["0", "2"]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.arange(90).view(9, 10).float()
    for _ in range(3):
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_peft_generic_lora_conversion_works_on_lotr():
    # PEFT's convert_to_lora (SVD of get_delta_weight, in float32) gives the rank-r LoRA to float32 rounding;
    # hf_reduce.lotr.lotr_to_lora stays the exact one (no SVD: float64 agreement to 1e-12, test_lotr.py).
    from peft import set_peft_model_state_dict
    from peft.tuners.lora.conversion import convert_to_lora

    model = get_peft_model(tiny_llama(), _config(target_modules=["q_proj", "v_proj"]))
    randomize_cores(model)
    config, state = convert_to_lora(model, rank=4)
    lora = get_peft_model(tiny_llama(), config)
    assert not set_peft_model_state_dict(lora, state).unexpected_keys
    torch.testing.assert_close(logits(lora), logits(model), rtol=0, atol=1e-5)


def test_the_lotr_package_imports_one_way_as_peft_tuners_do():
    # Before: config -> registration -> (config, model), a circle; registration ran at config import.
    import ast
    from pathlib import Path

    import hf_reduce.lotr as package

    folder = Path(package.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        if path.stem == "__init__":
            continue
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):  # function-level imports count too
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                targets.add(node.module.split(".")[0])
        graph[path.stem] = targets
    # The layers, bottom up: PEFT type and config, layer, tuner model, registration with PEFT at the top.
    order = ["peft_type", "config", "layer", "model", "conversion", "registration"]
    assert sorted(graph) == sorted(order)
    for module, targets in graph.items():
        below = set(order[: order.index(module)])
        assert targets <= below, f"{module} imports {sorted(targets - below)} from its own layer or above"


def test_merging_into_a_tied_lm_head_is_refused_and_changes_nothing():
    # Before: merge_and_unload() moved the logits by 2e-2 (the delta landed in the shared embedding matrix).
    import pytest
    import torch
    from lotr_models import tiny_llama
    from peft import get_peft_model

    from hf_reduce.lotr import LoTRConfig

    model = tiny_llama()
    model.config.tie_word_embeddings = True
    model.tie_weights()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    config = LoTRConfig(target_modules=["lm_head", "q_proj"], r=2, init_weights=False)
    peft_model = get_peft_model(model, config).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(0))
    adapted = peft_model(input_ids=ids).logits
    for merge in (peft_model.merge_and_unload, peft_model.merge_adapter):
        with pytest.raises(ValueError, match=r"lm_head's weight is tied to model.embed_tokens.weight"):
            merge()
    assert not any(getattr(m, "merged_adapters", None) for m in peft_model.modules())
    torch.testing.assert_close(peft_model(input_ids=ids).logits, adapted, rtol=0, atol=0)


def test_peft_022_conventions_additive_delta_dtype_and_unsupported_targets():
    # Found by PEFT 0.22's test_custom_models.py: convert_to_lora's additive delta must be in the adapter's dtype
    # (fp32 beside a bf16 base), and an unsupported target type is reported in PEFT's wording.
    import pytest
    import torch
    from peft import get_peft_model
    from torch import nn

    from hf_reduce.lotr import LoTRConfig, LoTRLayer

    base = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 10)).to(torch.bfloat16)
    model = get_peft_model(base, LoTRConfig(target_modules=["0", "2"], r=2, init_weights=False))
    deltas = [m.get_additive_delta() for m in model.modules() if isinstance(m, LoTRLayer)]
    assert deltas and all(d.dtype == torch.float32 for d in deltas)

    class Unknown(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(10, 10))

    holder = nn.Module()
    holder.lin0 = Unknown()
    with pytest.raises(ValueError, match=r"Target module .* not supported"):
        get_peft_model(holder, LoTRConfig(target_modules=["lin0"], r=2))
