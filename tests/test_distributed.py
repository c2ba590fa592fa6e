"""Two real gloo ranks on CPU through `accelerate launch`."""

import torch
from helpers import run_two_ranks


def _same_weights(tmp_path):
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_two_rank_ddp_identical_weights_and_gathered_metrics(tmp_path):
    reports = run_two_ranks("cnn", tmp_path)
    assert all(r["world"] == 2 for r in reports)
    # 101 samples, 8 per rank per step -> ceil(101 / 16) = 7 steps per epoch.
    assert all(r["step"] == 14 for r in reports)
    # gather_for_metrics drops the padding that evens out the last batch: each sample counts once.
    assert all(r["metrics"]["num_samples"] == 101 for r in reports)
    assert reports[0]["metrics"] == reports[1]["metrics"]
    _same_weights(tmp_path)


def test_two_rank_ddp_keeps_lotr_shared_factors_identical(tmp_path):
    reports = run_two_ranks("lotr", tmp_path)
    assert all(r["world"] == 2 and r["factors_moved"] for r in reports)
    _same_weights(tmp_path)


def test_two_rank_ddp_ode_classifier(tmp_path):
    reports = run_two_ranks("ode", tmp_path)
    assert all(r["world"] == 2 and r["step"] == 3 and r["nfe"]["forward"] == 8 for r in reports)
    _same_weights(tmp_path)


def test_finetune_lotr_launched_with_the_fsdp_config_saves_a_loadable_adapter(tmp_path):
    # accelerate launch with the documented FSDP2 config (scripts/configs/fsdp_lotr.yaml), 2 gloo ranks on CPU:
    # the adapter is saved once, consolidated, and reloads through PEFT to the accuracy the run reported.
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    import hf_reduce  # noqa: F401
    from hf_reduce.commands.common import HubArguments  # noqa: F401
    from hf_reduce.commands.finetune_lotr import TextDataArguments, bundled_minilm_path, tokenize
    from hf_reduce.training import evaluate_model

    root = Path(__file__).resolve().parent.parent
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(root / "scripts/configs/fsdp_lotr.yaml"),
        "--main_process_port", "0", str(root / "scripts/finetune_lotr.py"), "--max_train_samples", "64",
        "--max_test_samples", "32", "--max_steps", "4", "--per_device_train_batch_size", "8", "--output_dir",
        str(tmp_path), "--disable_tqdm", "true",
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # accelerate 1.15 turns an FSDP config into FSDP on accelerators only: on CPU the same launch runs the 2 gloo
    # ranks as MULTI_CPU (DDP). Before, both ranks ran alone, as rank 0 of 1, and rank 1 hit rank 0's run.lock.
    expected = "FSDP" if torch.cuda.is_available() else "MULTI_CPU"
    assert f"on 2 processes ({expected})" in proc.stderr, proc.stderr[-2000:]
    reported = json.loads((tmp_path / "all_results.json").read_text())["test_accuracy"]

    data = TextDataArguments(max_train_samples=64, max_test_samples=32).load("text")
    base = AutoModelForSequenceClassification.from_pretrained(bundled_minilm_path(), num_labels=5)
    model = PeftModel.from_pretrained(base, tmp_path / "adapter")
    from transformers import AutoTokenizer, DataCollatorWithPadding

    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm_path())
    test = tokenize(data, tokenizer, 128)["test"]
    metrics = evaluate_model(model, test, data_collator=DataCollatorWithPadding(tokenizer))
    assert metrics["accuracy"] == reported
