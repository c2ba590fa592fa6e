"""The run folder under races, mistakes and damaged files (hf_reduce.runs): one holder at a time, an overwrite
that loses nothing, verified checkpoints with fallback, the checkpoint's fingerprint as the authority and
``--resume_from_checkpoint auto``."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_reduce.commands.train_cnn import main as train_cnn
from hf_reduce.runs import (
    JOURNAL,
    LOCK_FILE,
    MANIFEST_FILE,
    RUN_FILE,
    STAGING,
    CheckpointError,
    RunFolderError,
    fingerprint,
    resolve_checkpoint,
    run_folder,
    write_manifest,
)

TINY = [
    "--layers",
    "8",
    "M",
    "16",
    "--classifier_hidden_sizes",
    "16",
    "--disable_tqdm",
    "true",
    "--logging_steps",
    "0",
]
# 1437 training digits in batches of 256: 6 steps per epoch; 4 steps, a checkpoint every 2, both kept.
RUN = [*TINY, "--dataset", "digits", "--max_steps", "4", "--per_device_train_batch_size", "256",
       "--checkpointing_steps", "2", "--save_total_limit", "2"]  # fmt: skip


def _train(out, *extra):
    return train_cnn([*RUN, "--output_dir", str(out), *extra])


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a run folder and its bytes (the lock aside: it is no part of the result)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model" / "model.safetensors"))


def _cli(capsys, *argv) -> tuple[int, str]:
    from hf_reduce_cli import main

    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


# ------------------------------------------------------------------------------------------------ the lock


def _contend(folder, barrier, results, hold):
    barrier.wait()
    attempted = time.monotonic()
    try:
        with run_folder(folder, fingerprint("race", None)):
            got = time.monotonic()
            time.sleep(hold)
            results.put(("held", attempted, got, time.monotonic()))
    except RunFolderError:
        results.put(("refused", attempted, None, None))


@pytest.mark.parametrize("start", ["fresh", "over-a-stale-lock"])
def test_processes_released_by_one_barrier_never_hold_a_folder_together(tmp_path, start):
    # Before: 2 fresh runs both held the folder in 2 of 60 trials, 2 over a stale lock in 29 of 60.
    context = multiprocessing.get_context("fork")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for trial in range(20):
        folder = tmp_path / str(trial)
        if start == "over-a-stale-lock":
            folder.mkdir()
            (folder / LOCK_FILE).write_text(str(dead.pid))  # the pid of a process that is gone
        barrier, results = context.Barrier(3), context.Queue()
        workers = [context.Process(target=_contend, args=(folder, barrier, results, 0.15)) for _ in range(3)]
        for w in workers:
            w.start()
        reports = [results.get(timeout=60) for _ in workers]
        for w in workers:
            w.join()
        holds = sorted(
            (got, released, attempted) for kind, attempted, got, released in reports if kind == "held"
        )
        assert holds, reports
        for (_, released, _), (got, _, attempted) in zip(holds, holds[1:], strict=False):
            # A later holder asked only after the earlier one let go; never two at once.
            assert attempted > released and got > released, f"trial {trial}: overlapping holds {holds}"


def test_a_live_holder_refuses_others_and_a_killed_one_frees_the_folder_at_once(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hf_reduce.runs import run_folder, fingerprint\n"
         f"with run_folder({str(tmp_path)!r}, fingerprint('x', None)):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = pytest.raises(RunFolderError, match=f"being written by process {holder.pid}")
        with refused, run_folder(tmp_path, fingerprint("x", None)):
            pass
        os.kill(holder.pid, signal.SIGKILL)  # no finally, no cleanup: the kernel drops the lock
        holder.wait()
        with run_folder(tmp_path, fingerprint("x", None)):
            assert (tmp_path / LOCK_FILE).read_text() == str(os.getpid())
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------------ overwrite, no loss


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished run (model + 2 checkpoints) to be replaced by mistakes."""
    out = tmp_path_factory.mktemp("finished")
    _train(out)
    return out


def _bad_inputs(root: Path) -> dict[str, list[str]]:
    from PIL import Image

    png = root / "png"
    for name in ("a", "b"):
        (png / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), color=40 * i).save(png / name / f"{i}.png")
    (png / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    idx = root / "idx"
    idx.mkdir()
    (idx / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03abc")
    (idx / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\x01\x01")
    (root / "a-file").write_text("not a model")
    return {
        "a dataset typo": ["--dataset", "digts"],
        "a corrupt png": ["--dataset", str(png)],
        "a 7-byte idx header": ["--dataset", str(idx)],
        "an out-of-range seed": ["--seed", str(2**70)],
        "a model path that is a file": ["--model_name_or_path", str(root / "a-file")],
        "a diverging run": ["--learning_rate", "1e12", "--max_steps", "6"],
    }


def test_an_overwrite_that_fails_leaves_the_previous_run_byte_identical(tmp_path, finished_run, capsys):
    # Before: 5 of these 6 left the folder with neither the old model nor a new one.
    before = _files(finished_run)
    for mistake, argv in _bad_inputs(tmp_path).items():
        code, err = _cli(capsys, "train-cnn", *RUN, "--output_dir", str(finished_run), "--overwrite_output_dir",
                         "true", *argv)  # fmt: skip
        assert code == 2 and len(err.splitlines()) <= 2, (mistake, err)
        assert _files(finished_run) == before, mistake
        assert not (finished_run / STAGING).exists(), mistake


def test_an_overwrite_replaces_the_run_only_when_the_new_one_is_complete(tmp_path):
    _train(tmp_path)
    old = _weights(tmp_path)
    summary = _train(
        tmp_path, "--overwrite_output_dir", "true", "--learning_rate", "3e-3", "--max_steps", "2"
    )
    assert summary["model_dir"] == str(tmp_path / "model")
    assert json.loads((tmp_path / RUN_FILE).read_text())["arguments"]["learning_rate"] == 3e-3
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_2"]  # none of the old run's
    assert any(not torch.equal(old[k], v) for k, v in _weights(tmp_path).items())
    assert not (tmp_path / STAGING).exists() and not (tmp_path / JOURNAL).exists()


@pytest.mark.parametrize("renames_before_the_kill", [0, 1, 3, 6])
def test_a_publish_killed_between_any_two_renames_is_completed_by_the_next_run(
    tmp_path, monkeypatch, renames_before_the_kill
):
    import hf_reduce.runs as runs

    _train(tmp_path)
    real_replace, calls = os.replace, {"n": 0}

    def replace(src, dst):
        if (tmp_path / JOURNAL).exists():  # the publish has begun: count its renames
            if calls["n"] == renames_before_the_kill:
                raise KeyboardInterrupt  # as a kill: nothing after it runs
            calls["n"] += 1
        return real_replace(src, dst)

    monkeypatch.setattr(runs.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "--overwrite_output_dir", "true", "--learning_rate", "3e-3")
    monkeypatch.setattr(runs.os, "replace", real_replace)
    assert (tmp_path / JOURNAL).exists()
    # The next run in the folder completes the publish first (and then refuses: the folder holds a run).
    with (
        pytest.raises(RunFolderError, match="already holds"),
        run_folder(tmp_path, fingerprint("other", None)),
    ):
        pass
    assert json.loads((tmp_path / RUN_FILE).read_text())["arguments"]["learning_rate"] == 3e-3
    for step in (2, 4):
        manifest = json.loads((tmp_path / "checkpoints" / f"step_{step}" / MANIFEST_FILE).read_text())
        assert manifest["run"]["arguments"]["learning_rate"] == 3e-3
    assert (tmp_path / "model" / "model.safetensors").is_file() and (tmp_path / "all_results.json").is_file()
    for leftover in (JOURNAL, runs.REPLACED, STAGING):
        assert not (tmp_path / leftover).exists(), leftover


# ---------------------------------------------------------------------------------- verified checkpoints


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    _train(out)
    return out


def _flip_a_bit(path: Path, offset_from_end: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def _interrupted_copy(reference: Path, out: Path) -> Path:
    """``out`` as the reference run's folder looked when it was killed right after its last checkpoint."""
    import shutil

    shutil.copytree(reference, out, dirs_exist_ok=True)
    for name in ("model", "all_results.json"):
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return out


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.bin", "trainer_state.json"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one_and_ends_bit_identical(
    tmp_path, reference, caplog, damaged
):
    # Before: one flipped bit was resumed silently (final weights off by 2e-3 / 2e-6); an edited
    # trainer_state.json ended with other weights.
    out = _interrupted_copy(reference, tmp_path)
    target = out / "checkpoints" / "step_4" / damaged
    if damaged == "trainer_state.json":
        state = json.loads(target.read_text())
        target.write_text(json.dumps({**state, "batches_in_epoch": 2}))
    else:
        _flip_a_bit(target)
    with caplog.at_level("INFO"):
        _train(out, "--resume_from_checkpoint", "latest")
    assert (
        f"skipping checkpoint {out / 'checkpoints' / 'step_4'}: {damaged} does not match its manifest"
        in caplog.text
    )
    assert "resumed from" in caplog.text and "step_2" in caplog.text
    for name, tensor in _weights(reference).items():
        assert torch.equal(tensor, _weights(out)[name]), name


def test_a_named_damaged_checkpoint_is_refused_in_one_line(tmp_path, reference, capsys):
    out = _interrupted_copy(reference, tmp_path)
    weights = out / "checkpoints" / "step_4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # truncated
    code, err = _cli(capsys, "train-cnn", *RUN, "--output_dir", str(out), "--resume_from_checkpoint",
                     str(weights.parent))  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "model.safetensors has" in err and "truncated" in err and str(weights.parent) in err


def test_counters_that_disagree_are_refused_even_with_a_matching_manifest(tmp_path, reference):
    out = _interrupted_copy(reference, tmp_path)
    checkpoint = out / "checkpoints" / "step_4"
    for edit in ({"global_step": 3}, {"batches_in_epoch": 3}, {"scheduler": {"last_epoch": 5}}):
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        scheduler = {**state["scheduler"], **edit.pop("scheduler", {})}
        (checkpoint / "trainer_state.json").write_text(json.dumps({**state, **edit, "scheduler": scheduler}))
        manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
        write_manifest(checkpoint, manifest["run"])  # consistent with the edited files
        with pytest.raises(CheckpointError):
            _train(out, "--resume_from_checkpoint", str(checkpoint))
        (checkpoint / "trainer_state.json").write_text(json.dumps(state))
        write_manifest(checkpoint, manifest["run"])


def test_the_checkpoints_fingerprint_is_the_authority_when_run_json_is_gone(tmp_path, reference):
    # Before: with run.json deleted a resume at another learning rate was accepted and reported that rate.
    out = _interrupted_copy(reference, tmp_path)
    (out / RUN_FILE).unlink()
    with pytest.raises(RunFolderError, match=r"another run \(different arguments \['learning_rate'\]\)"):
        _train(out, "--resume_from_checkpoint", "latest", "--learning_rate", "3e-3")
    (out / RUN_FILE).write_text("[1, 2]")
    with pytest.raises(RunFolderError, match=r"another run"):
        _train(out, "--resume_from_checkpoint", "auto", "--learning_rate", "3e-3")


# ------------------------------------------------------------------------------------------------- auto


def test_auto_starts_afresh_resumes_the_same_run_and_refuses_another(tmp_path, reference):
    fresh = tmp_path / "fresh"
    _train(fresh, "--resume_from_checkpoint", "auto")  # before: 'latest' here exits 2 before a checkpoint
    for name, tensor in _weights(reference).items():
        assert torch.equal(tensor, _weights(fresh)[name]), name
    resumed = _interrupted_copy(reference, tmp_path / "resumed")
    _train(resumed, "--resume_from_checkpoint", "auto")
    assert _files(resumed)["model/model.safetensors"] == _files(reference)["model/model.safetensors"]
    with pytest.raises(RunFolderError, match="another run"):
        _train(resumed, "--resume_from_checkpoint", "auto", "--learning_rate", "3e-3")


HARNESS = Path(__file__).with_name("sigkill_run.py")
CLI_RUN = [*RUN, "--max_steps", "8", "--max_train_samples", "512", "--per_device_train_batch_size", "64"]


def _until_done(out, delays):
    """Start the same run with ``auto`` again after each SIGKILL (after each delay), then once to the end."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, str(HARNESS), "none", "train-cnn", *CLI_RUN, "--output_dir", str(out),
            "--resume_from_checkpoint", "auto"]  # fmt: skip
    for delay in delays:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize(
    "seed, kills",
    [(0, 2), pytest.param(1, 3, marks=pytest.mark.slow), pytest.param(2, 3, marks=pytest.mark.slow)],
)
def test_auto_under_sigkill_at_random_moments_ends_bit_identical(tmp_path, seed, kills):
    import random

    reference_dir, killed = tmp_path / "reference", tmp_path / "killed"
    _until_done(reference_dir, [])
    _until_done(killed, [random.Random(seed).uniform(2.0, 9.0) for _ in range(kills)])
    assert _files(killed)["model/model.safetensors"] == _files(reference_dir)["model/model.safetensors"]


# -------------------------------------------------------------------------------------- one-line errors


def test_user_fixable_errors_are_one_line_naming_the_file_or_flag(tmp_path, reference, capsys):
    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "empty.csv").write_bytes(b"")
    (csv / "latin1.csv").write_bytes("text,label\ncaf\xe9,a\nbar,b\n".encode("latin-1"))
    (csv / "holes.csv").write_text("text,label\nhello,a\nworld,\nfoo,b\nbar,a\n")
    (csv / "topics.csv").write_text("text,topic\nhello,a\nworld,b\n")
    single = tmp_path / "single" / "cat"
    single.mkdir(parents=True)
    from PIL import Image

    Image.new("L", (8, 8)).save(single / "a.png")
    model = tmp_path / "model"
    import shutil

    shutil.copytree(reference / "model", model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "image_size": "8"}))
    run_list = tmp_path / "run-list"
    run_list.mkdir()
    (run_list / RUN_FILE).write_text("[1, 2]")
    (run_list / "checkpoints").mkdir()
    state = _interrupted_copy(reference, tmp_path / "state")
    (state / "checkpoints" / "step_4" / "trainer_state.json").write_text("{not json")
    write_manifest(state / "checkpoints" / "step_4", json.loads((state / RUN_FILE).read_text()))
    text = ["finetune-lotr", "--max_steps", "1", "--output_dir", str(tmp_path / "out-text")]
    image = ["train-cnn", *RUN, "--output_dir", str(tmp_path / "out-image")]
    cases = {
        "empty.csv": ([*text, "--dataset", str(csv / "empty.csv")], "empty.csv is empty"),
        "non-UTF-8": ([*text, "--dataset", str(csv / "latin1.csv")], "latin1.csv is not UTF-8"),
        "empty labels": ([*text, "--dataset", str(csv / "holes.csv")], "--label_column"),
        "no label column": ([*text, "--dataset", str(csv / "topics.csv")], "Pass --label_column"),
        "single class": ([*image, "--dataset", str(single.parent)], "single class sub-folder ('cat')"),
        "config types": ([*image, "--model_name_or_path", str(model)], "config.json: image_size is '8'"),
        "run.json list": (
            ["train-cnn", *RUN, "--output_dir", str(run_list), "--resume_from_checkpoint", "latest"],
            "run.json is not a run record",
        ),  # fmt: skip
        "state JSON": (
            ["train-cnn", *RUN, "--output_dir", str(state), "--resume_from_checkpoint", "latest"],
            "trainer_state.json",
        ),  # fmt: skip
        "seed": ([*image, "--seed", str(2**70)], "--seed must lie in [0, 2**32)"),
        "hub id": (
            [
                "train-cnn",
                *RUN,
                "--output_dir",
                str(tmp_path / "out-hub"),
                "--hub_model_id",
                "../../etc/passwd",
            ],
            "--hub_model_id '../../etc/passwd'",
        ),  # fmt: skip
    }
    for case, (argv, expected) in cases.items():
        code, err = _cli(capsys, *argv)
        assert code == 2 and len(err.splitlines()) == 1 and expected in err, (case, err)
    assert not (tmp_path / "out-hub").exists()  # the hub id is checked before anything runs


def test_a_test_only_class_is_warned_about(tmp_path, caplog):
    from PIL import Image

    from hf_reduce.data import load_image_classification

    for split, names in (("train", "ab"), ("test", "ac")):
        for name in names:
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("L", (8, 8)).save(tmp_path / split / name / "0.png")
    with caplog.at_level("WARNING"):
        load_image_classification(tmp_path)
    assert "classes ['c'] have test examples but no training example" in caplog.text


def test_a_refused_pickle_in_a_checkpoint_is_one_line_naming_the_file(tmp_path, reference, capsys):
    import pickle

    out = _interrupted_copy(reference, tmp_path)
    checkpoint = out / "checkpoints" / "step_4"

    class Planted:
        def __reduce__(self):
            return (os.system, ("echo planted",))

    (checkpoint / "optimizer.bin").write_bytes(pickle.dumps(Planted()))
    write_manifest(checkpoint, json.loads((out / RUN_FILE).read_text()))  # the manifest cannot help here
    code, err = _cli(capsys, "train-cnn", *RUN, "--output_dir", str(out), "--resume_from_checkpoint",
                     str(checkpoint))  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "restricted loader refuses" in err and "optimizer.bin" in err


def _tiny_disk(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.decode().strip()}")


@pytest.mark.parametrize("size, while_writing", [("160k", "checkpoint step_"), ("48k", "the model")])
def test_a_full_disk_says_where_and_how_much(tmp_path, capsys, size, while_writing):
    disk = tmp_path / "disk"
    _tiny_disk(disk, size)
    try:
        code, err = _cli(capsys, "train-cnn", *RUN, "--layers", "16", "M", "32", "--output_dir", str(disk / "run"),
                         *(["--checkpointing_steps", "0"] if while_writing == "the model" else []))  # fmt: skip
    finally:
        gc.collect()  # the failed write's file object lives in a reference cycle of the caught traceback
        subprocess.run(["umount", str(disk)], check=False)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"no space left on the device while writing {while_writing}" in err and "MB free" in err, err
    assert str(disk / "run") in err


def test_resolve_checkpoint_lists_why_each_was_skipped(tmp_path, reference):
    out = _interrupted_copy(reference, tmp_path)
    for step in (2, 4):
        (out / "checkpoints" / f"step_{step}" / MANIFEST_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"step_4: it has no manifest.json .*step_2: it has no"):
        resolve_checkpoint(out, "latest")
    assert resolve_checkpoint(out, "auto") is None


def test_under_accelerate_launch_every_rank_follows_the_main_process_plan(tmp_path):
    # Two gloo ranks: the main process holds the folder and stages the overwrite; rank 1 works in the same
    # staging folder, and a refusal on the main process ends both ranks with it instead of leaving one hanging.
    root = Path(__file__).resolve().parent.parent
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              "0", str(root / "scripts" / "train_cnn.py"), *RUN, "--output_dir", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    _train(tmp_path)  # the previous run, from one process
    before = _weights(tmp_path)
    staged = subprocess.run([*launch, "--overwrite_output_dir", "true", "--learning_rate", "3e-3",
                             "--resume_from_checkpoint", "auto"], capture_output=True, text=True, env=env,
                            timeout=300)  # fmt: skip
    assert staged.returncode == 0, staged.stderr[-3000:]
    assert "on 2 processes (MULTI_CPU)" in staged.stderr
    assert json.loads((tmp_path / RUN_FILE).read_text())["arguments"]["learning_rate"] == 3e-3
    assert any(not torch.equal(before[k], v) for k, v in _weights(tmp_path).items())
    assert not (tmp_path / STAGING).exists()
    refused = subprocess.run([*launch, "--learning_rate", "1e-2"], capture_output=True, text=True, env=env,
                             timeout=300)  # fmt: skip
    assert refused.returncode != 0 and refused.stderr.count("already holds a run's") >= 2, refused.stderr[
        -3000:
    ]
