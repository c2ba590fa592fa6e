"""LoTR on quantized bases (QLoRA-style) through PEFT's generic quantization support, on CPU.

bitsandbytes 4-bit (nf4) and 8-bit, and torchao int8 weight-only, each loaded through transformers'
``quantization_config`` as a user does. On the code before quantization support, merging added a float delta
to bitsandbytes' int8 storage (silently wrong outputs) and crashed for 4-bit and torchao.
"""

import warnings

import pytest
import torch
from lotr_models import VOCAB, logits, tokens
from peft import PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from hf_reduce.lotr import LoTRConfig, LoTRLayer

TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj"]


def quantization_config(kind: str):
    from transformers import BitsAndBytesConfig, TorchAoConfig

    if kind.startswith("bnb"):
        pytest.importorskip("bitsandbytes")
        if kind == "bnb-4bit":
            return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
        return BitsAndBytesConfig(load_in_8bit=True)
    pytest.importorskip("torchao")
    from torchao.quantization import Int8WeightOnlyConfig

    return TorchAoConfig(Int8WeightOnlyConfig())


# Largest ||merged weight - (weight + delta)|| / ||delta|| a merge may leave: the backend's requantization
# error. nf4 keeps 16 levels per block of 64, int8 256 per row.
REQUANT_TOLERANCE = {"bnb-4bit": 0.35, "bnb-8bit": 0.05, "torchao-int8": 0.05}
KINDS = list(REQUANT_TOLERANCE)


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    # Wider than lotr_models' tiny_llama: bitsandbytes' CPU 4-bit kernels need rows of >= 64 inputs.
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def quantized_llama(folder, kind):
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bitsandbytes' "inputs will be cast to float16" and the like
        model = AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=quantization_config(kind), device_map="cpu"
        )
    return model.eval()


def lotr_layers(model):
    return [m for m in model.modules() if isinstance(m, LoTRLayer)]


def large_cores(model, std=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lotr_layers(model):
            core = layer.lotr_G["default"]
            core.copy_(torch.randn(core.shape, generator=g) * std)


@pytest.mark.parametrize("kind", KINDS)
def test_lotr_trains_on_a_quantized_base_and_leaves_it_frozen(base_folder, kind):
    # No eval-mode forward before training: bitsandbytes 0.50 on CPUs with AVX512-BF16 then repacks 4-bit
    # weights for inference, and later backward passes through them give zero gradients (LoRA too).
    model = get_peft_model(quantized_llama(base_folder, kind), LoTRConfig(r=4, target_modules=TARGETS))
    layers = lotr_layers(model)
    assert layers and all(layer.quantization_backend is not None for layer in layers)
    large_cores(model, std=0.5)  # non-zero cores: the shared factors get gradients too
    base_weights = [layer.get_base_weight().clone() for layer in layers]
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    ids = tokens()
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(trainable[n], p)]
    assert not unchanged
    for layer, weight in zip(layers, base_weights, strict=True):
        torch.testing.assert_close(layer.get_base_weight(), weight, rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_merge_on_a_quantized_base_dequantizes_adds_and_requantizes(base_folder, kind):
    base = quantized_llama(base_folder, kind)
    base_logits = logits(base)
    model = get_peft_model(base, LoTRConfig(r=4, target_modules=TARGETS))
    torch.testing.assert_close(logits(model), base_logits)  # identity start
    large_cores(model)
    layers = lotr_layers(model)
    adapted = logits(model)
    before = {id(layer): layer.get_base_weight().clone().float() for layer in layers}
    deltas = {id(layer): layer.get_delta_weight("default").float() for layer in layers}
    model.merge_adapter()
    for layer in layers:
        expected = before[id(layer)] + deltas[id(layer)]
        error = (layer.get_base_weight().float() - expected).norm() / deltas[id(layer)].norm()
        assert error < REQUANT_TOLERANCE[kind], (kind, float(error))
    if kind != "bnb-4bit":  # nf4's requantization error on this tiny random model is as large as the effect
        effect = (adapted - base_logits).abs().max()
        assert (logits(model) - adapted).abs().max() < 0.2 * effect
    model.unmerge_adapter()
    for layer in layers:
        error = (layer.get_base_weight().float() - before[id(layer)]).norm() / deltas[id(layer)].norm()
        assert error < 2 * REQUANT_TOLERANCE[kind], (kind, float(error))


@pytest.mark.parametrize("kind", ["bnb-4bit", "torchao-int8"])
def test_safe_merge_on_a_quantized_base_refuses_a_broken_adapter_and_keeps_the_weights(base_folder, kind):
    model = get_peft_model(quantized_llama(base_folder, kind), LoTRConfig(r=4, target_modules=TARGETS))
    layer = lotr_layers(model)[0]
    weight = layer.get_base_weight().clone()
    with torch.no_grad():
        layer.lotr_G["default"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaNs detected in the merged weights. The adapter default"):
        model.merge_adapter(safe_merge=True)
    assert not layer.merged
    torch.testing.assert_close(layer.get_base_weight(), weight, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["bnb-4bit", "bnb-8bit"])
def test_tucker_initialisation_reads_the_dequantized_weights(base_folder, kind):
    model = get_peft_model(
        quantized_llama(base_folder, kind), LoTRConfig(r=4, target_modules=["q_proj"], init_lotr="tucker")
    )
    layers = lotr_layers(model)
    unfolding = torch.cat([layer.get_base_weight().float().T for layer in layers], dim=1)
    left = torch.linalg.svd(unfolding, full_matrices=False)[0][:, :4]
    B = next(iter(model.base_model.lotr_B["default"].values())).detach()
    # The same subspace (singular vectors are defined up to sign).
    torch.testing.assert_close((left.T @ B).abs(), torch.eye(4), atol=1e-4, rtol=0)


def test_an_adapter_trained_on_a_quantized_base_reloads_onto_one(base_folder, tmp_path):
    model = get_peft_model(quantized_llama(base_folder, "bnb-4bit"), LoTRConfig(r=4, target_modules=TARGETS))
    large_cores(model, std=0.5)
    expected = logits(model)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(quantized_llama(base_folder, "bnb-4bit"), tmp_path)
    torch.testing.assert_close(logits(loaded), expected)
