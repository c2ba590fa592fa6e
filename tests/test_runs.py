"""One run per output folder: no silent adoption of another run's checkpoints, no shared writers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hf_reduce.commands.train_cnn import main as train_cnn
from hf_reduce.runs import RUN_FILE, RunFolderError


def _train(out, *extra):
    return train_cnn(
        ["--dataset", "digits", "--output_dir", str(out), "--max_steps", "4", "--checkpointing_steps", "2",
         "--layers", "8", "M", "16", "--classifier_hidden_sizes", "16", "--disable_tqdm", "true",
         "--logging_steps", "0", *extra]
    )  # fmt: skip


def test_a_fresh_run_never_adopts_another_runs_folder(tmp_path):
    # Before: the second run's checkpoints were deleted right after writing (the old step_N outranked them)
    # and --resume_from_checkpoint latest restored the *other* run.
    _train(tmp_path)
    recorded = json.loads((tmp_path / RUN_FILE).read_text())
    assert recorded["arguments"]["learning_rate"] == 1e-3 and "output_dir" not in recorded["arguments"]
    with pytest.raises(
        RunFolderError, match=r"already holds a run's checkpoints, model; pass --overwrite_output_dir"
    ):
        _train(tmp_path, "--learning_rate", "3e-3")
    with pytest.raises(
        RunFolderError, match=r"belong to another run \(different arguments \['learning_rate'\]\)"
    ):
        _train(tmp_path, "--learning_rate", "3e-3", "--resume_from_checkpoint", "latest")
    _train(tmp_path, "--resume_from_checkpoint", "latest")  # the same run continues
    _train(tmp_path, "--learning_rate", "3e-3", "--overwrite_output_dir", "true")
    assert json.loads((tmp_path / RUN_FILE).read_text())["arguments"]["learning_rate"] == 3e-3
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_2", "step_4"]
    assert not (tmp_path / ".staging").exists()


def test_the_cli_refuses_with_exit_2(tmp_path):
    _train(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "hf_reduce.cli", "train-cnn", "--dataset", "digits", "--output_dir", str(tmp_path),
         "--max_steps", "1"], capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(tmp_path) in proc.stderr and "--resume_from_checkpoint latest" in proc.stderr


def test_report_to_tensorboard_and_all_results(tmp_path):
    summary = _train(tmp_path, "--report_to", "tensorboard", "--logging_steps", "1")
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events, sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert {"train/loss", "train/learning_rate", "eval/accuracy"} <= set(tags), tags
    results = json.loads((tmp_path / "all_results.json").read_text())
    assert results["test_accuracy"] == summary["test_accuracy"]
    with pytest.raises(ValueError, match="report_to must be among"):
        _train(tmp_path / "other", "--report_to", "tensorbored")
