"""Real SIGKILLs: a run killed at any moment and resumed with ``--resume_from_checkpoint latest`` publishes,
bit for bit, what the uninterrupted run publishes (tests/sigkill_run.py kills the process at the moment)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HARNESS = Path(__file__).with_name("sigkill_run.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _run(fault, command, out, *extra, expect_kill=False):
    argv = [sys.executable, str(HARNESS), fault, command, "--output_dir", str(out), "--disable_tqdm", "true"]
    proc = subprocess.run([*argv, *extra], capture_output=True, text=True, env=ENV, timeout=300)
    if expect_kill:
        assert proc.returncode == -9, f"expected a SIGKILL, got {proc.returncode}:\n{proc.stderr[-3000:]}"
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# Measured wall times differ from run to run; paths differ by folder.
TIMINGS = ("seconds", "runtime", "speed-up", "in words", "_dir")


def _published(out):
    """The published weights (model or adapter), the last checkpoint's weights and the final metrics."""
    out = Path(out)
    weights = next(p for folder in ("model", "adapter") for p in sorted((out / folder).glob("*.safetensors")))
    last = max((out / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    results = json.loads((out / "all_results.json").read_text())
    metrics = {k: v for k, v in results.items() if not any(t in k for t in TIMINGS)}
    return {
        **load_file(str(weights)),
        **{f"checkpoint.{k}": v for k, v in load_file(str(last / "model.safetensors")).items()},
    }, metrics


def _assert_same(reference, resumed):
    (ref_w, ref_m), (res_w, res_m) = _published(reference), _published(resumed)
    assert ref_w.keys() == res_w.keys()
    for name in ref_w:
        assert torch.equal(ref_w[name], res_w[name]), name
    assert ref_m == res_m


def _assert_no_torn_checkpoint(out):
    """Every folder that looks like a checkpoint is complete (its weights load)."""
    for folder in (Path(out) / "checkpoints").glob("step_*"):
        assert (folder / "trainer_state.json").is_file(), folder
        load_file(str(next(folder.glob("model*.safetensors"))))


# 192 training digits in batches of 32: 6 steps per epoch, 12 in all; a checkpoint every 4 steps, one kept.
CNN = [
    *("--dataset", "digits", "--max_train_samples", "192", "--max_test_samples", "64"),
    *("--num_train_epochs", "2", "--per_device_train_batch_size", "32", "--layers", "8", "M", "16", "M"),
    *("--checkpointing_steps", "4", "--save_total_limit", "1"),
]


@pytest.fixture(scope="module")
def cnn_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    _run("none", "train-cnn", out, *CNN)
    return out


@pytest.mark.parametrize(
    "fault",
    ["checkpoint:8", "checkpoint_write:8", "prune:8", "checkpoint:12"],
    ids=["mid-epoch", "while-writing-a-checkpoint", "while-deleting-an-old-checkpoint", "at-the-final-step"],
)
def test_train_cnn_killed_anywhere_resumes_to_the_same_model(tmp_path, cnn_reference, fault):
    _run(fault, "train-cnn", tmp_path, *CNN, expect_kill=True)
    assert not (tmp_path / "model").exists()
    _assert_no_torn_checkpoint(tmp_path)  # before: a kill mid-deletion left a step_4 without its weights
    _run("none", "train-cnn", tmp_path, *CNN, "--resume_from_checkpoint", "latest")
    _assert_same(cnn_reference, tmp_path)
    assert not list((tmp_path / "checkpoints").glob(".*")), "the killed run's leftovers are cleaned up"


# One kill in the middle of each other command and training regime (the slow suite: ~2 min).
REGIMES = {
    "finetune-lotr": (
        "finetune-lotr",
        [*("--max_train_samples", "96", "--max_test_samples", "32", "--max_steps", "8", "--r", "4")],
    ),
    "finetune-lora": (
        "finetune-lotr",
        [*("--method", "lora", "--max_train_samples", "96", "--max_test_samples", "32", "--max_steps", "8")],
    ),
    "train-ode-ensemble": (
        "train-ode",
        [*("--regime", "ensemble", "--member_u", "0.3", "0.6", "--channels", "8", "16")],
    ),
    "train-ode-adversarial": (
        "train-ode",
        [*("--adversarial_training", "true", "--train_eps", "0.05", "--channels", "8", "16")],
    ),
    "reduce-maxvol-distillation": ("reduce-maxvol", ["--finetune_epochs", "1"]),
}
ODE_COMMON = [
    *("--dataset", "digits", "--max_train_samples", "192", "--max_test_samples", "64", "--max_steps", "8"),
    *("--per_device_train_batch_size", "32", "--max_attack_samples", "16", "--step_multipliers", "2"),
]


@pytest.mark.slow
@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_every_command_killed_mid_run_resumes_to_the_same_model(tmp_path, regime, cnn_reference):
    command, extra = REGIMES[regime]
    extra = [*extra, "--checkpointing_steps", "4"]
    if command == "train-ode":
        extra = [*ODE_COMMON, *extra]
    if command == "reduce-maxvol":
        extra = [*extra, "--model_name_or_path", str(cnn_reference / "model"), "--dataset", "digits"]
        extra += [
            "--max_train_samples",
            "192",
            "--max_test_samples",
            "64",
            "--per_device_train_batch_size",
            "32",
        ]
    _run("none", command, tmp_path / "reference", *extra)
    _run("checkpoint:4", command, tmp_path / "killed", *extra, expect_kill=True)
    _run("none", command, tmp_path / "killed", *extra, "--resume_from_checkpoint", "latest")
    _assert_same(tmp_path / "reference", tmp_path / "killed")
