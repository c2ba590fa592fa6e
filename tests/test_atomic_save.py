"""Saving is crash-safe: a writer killed at any point leaves the old version or the new one, complete."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hf_reduce.utils import atomic_directory, recover_directory

WRITER = """
import os, sys
from pathlib import Path
import hf_reduce.utils as u
target, die_at = Path(sys.argv[1]), int(sys.argv[2])
with u.atomic_directory(target) as d:
    (d / "weights").write_text("old")
calls, real = [], os.replace
def dying(a, b):  # os._exit: no cleanup runs, as under SIGKILL
    calls.append(1)
    if len(calls) == die_at:
        os._exit(9)
    return real(a, b)
u.os.replace = dying
with u.atomic_directory(target) as d:
    (d / "weights").write_text("new")
"""


@pytest.mark.parametrize("die_at", [1, 2], ids=["before-old-aside", "between-renames"])
def test_a_killed_save_is_recovered_to_a_complete_version(tmp_path, die_at):
    # Before: a kill between deleting the old model and moving the new one in left no model folder, and the
    # finished model stranded in a hidden .model.* folder forever.
    target = tmp_path / "model"
    proc = subprocess.run([sys.executable, "-c", WRITER, str(target), str(die_at)], capture_output=True)
    assert proc.returncode == 9
    assert any(p.name.startswith(".model.") for p in tmp_path.iterdir())  # what the kill left behind
    recover_directory(target)
    assert (target / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    with atomic_directory(target) as staging:  # and the next save works as usual
        (staging / "weights").write_text("newer")
    assert (target / "weights").read_text() == "newer"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failed_save_leaves_the_old_version(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as staging:
        (staging / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "weights").write_text("half")
        raise RuntimeError("disk full")
    assert (target / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
