"""Tiny random models under the ids of PEFT's model test suites, built from configs (no Hub access).

transformers loads a local folder of the given name before it asks the Hub, so saving a model as
``<cwd>/peft-internal-testing/tiny-random-OPTForCausalLM`` makes PEFT's ``from_pretrained(model_id)`` load it
offline. The architectures and model types are those of the ids; the sizes are tiny (hidden 32, 2 layers,
vocabulary 1000), as the Hub's tiny-random models are.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as tf

_COMMON = dict(vocab_size=1000, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_DECODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
_ENCODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=64)  # fmt: skip

#: model id -> (model class, config)
MODELS = {
    # test_decoder_models.py
    "peft-internal-testing/tiny-random-OPTForCausalLM": (
        tf.OPTForCausalLM,
        lambda: tf.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                             word_embed_proj_dim=32, max_position_embeddings=64, **_COMMON),
    ),
    "peft-internal-testing/tiny-random-GPT2LMHeadModel": (
        tf.GPT2LMHeadModel, lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **_COMMON)
    ),
    "hf-internal-testing/tiny-random-gpt2": (
        tf.GPT2LMHeadModel, lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **_COMMON)
    ),
    "peft-internal-testing/tiny-random-GPTJForCausalLM": (
        tf.GPTJForCausalLM,
        lambda: tf.GPTJConfig(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=64, **_COMMON),
    ),
    "peft-internal-testing/tiny-random-LlamaForCausalLM": (
        # as many key/value heads as heads, as the Hub model has (LoRA's SVD-based add_weighted_adapter needs it)
        tf.LlamaForCausalLM, lambda: tf.LlamaConfig(num_key_value_heads=4, **_DECODER, **_COMMON)
    ),
    "hf-internal-testing/tiny-random-MistralForCausalLM": (
        tf.MistralForCausalLM, lambda: tf.MistralConfig(num_key_value_heads=2, **_DECODER, **_COMMON)
    ),
    "peft-internal-testing/tiny-dummy-qwen2": (
        tf.Qwen2ForCausalLM, lambda: tf.Qwen2Config(num_key_value_heads=2, **_DECODER, **_COMMON)
    ),
    "hf-internal-testing/tiny-random-Gemma3ForCausalLM": (
        tf.Gemma3ForCausalLM,
        lambda: tf.Gemma3TextConfig(num_key_value_heads=2, head_dim=8, **_DECODER, **_COMMON),
    ),
    # test_encoder_decoder_models.py
    "peft-internal-testing/tiny-random-T5ForConditionalGeneration-calibrated": (
        tf.T5ForConditionalGeneration,
        lambda: tf.T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8, decoder_start_token_id=0,
                            **_COMMON),
    ),
    "peft-internal-testing/tiny-random-BartForConditionalGeneration": (
        tf.BartForConditionalGeneration,
        lambda: tf.BartConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                              decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                              max_position_embeddings=64, decoder_start_token_id=2,
                              # BartConfig forces EOS at the last step: generate(max_new_tokens=1) would score
                              # one token only and test_disable_adapter see no change
                              forced_eos_token_id=None, **_COMMON),
    ),
    # test_feature_extraction_models.py
    "peft-internal-testing/tiny-random-BertModel": (tf.BertModel, lambda: tf.BertConfig(**_ENCODER, **_COMMON)),
    "peft-internal-testing/tiny-random-RobertaModel": (
        tf.RobertaModel, lambda: tf.RobertaConfig(**{**_ENCODER, "max_position_embeddings": 66}, **_COMMON)
    ),
    "peft-internal-testing/tiny-random-DebertaModel": (
        tf.DebertaModel, lambda: tf.DebertaConfig(**_ENCODER, **_COMMON)
    ),
    "peft-internal-testing/tiny-random-DebertaV2Model": (
        tf.DebertaV2Model, lambda: tf.DebertaV2Config(**_ENCODER, **_COMMON)
    ),
}  # fmt: skip


def build(root: Path) -> list[str]:
    """Save every model of :data:`MODELS` under ``root/<model id>`` (skipping those present); returns the ids."""
    for model_id, (model_class, config) in MODELS.items():
        folder = root / model_id
        if (folder / "config.json").exists():
            continue
        torch.manual_seed(0)
        model_class(config()).save_pretrained(folder)
    return list(MODELS)
