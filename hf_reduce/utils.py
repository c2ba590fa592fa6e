"""Small helpers shared across hf_reduce."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _strays(path: Path, kind: str) -> list[Path]:
    """Leftovers ``.<name>.<kind>-<pid>-*`` of earlier, killed writers of ``path`` (not of live ones)."""
    out = []
    for stray in path.parent.glob(f".{path.name}.{kind}-*"):
        pid = stray.name.removeprefix(f".{path.name}.{kind}-").split("-", 1)[0]
        if not (pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid))):
            out.append(stray)
    return sorted(out, key=lambda p: p.stat().st_mtime)


def recover_directory(path: str | Path) -> None:
    """Undo what a writer killed inside :func:`atomic_directory` left behind: if ``path`` is missing, the
    previous complete version (set aside) is put back; unfinished new versions are deleted."""
    path = Path(path)
    olds = _strays(path, "old")
    if olds and not path.exists():
        olds.pop().rename(path)  # the newest complete version that was set aside
    for stray in olds + _strays(path, "new"):
        shutil.rmtree(stray, ignore_errors=True)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a staging folder next to ``path``; on success it replaces ``path``, on error it is removed and
    ``path`` is left as it was. Nothing is ever half-written at ``path``.

    The swap is two renames (the old version aside, the new one into place) and then the old one's deletion,
    so at every instant a complete version exists: ``path`` itself, or, if the writer is killed between the two
    renames, the old version beside it, which :func:`recover_directory` (run first by every writer) restores.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    tag = f"{os.getpid()}-"
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-{tag}", dir=path.parent))
    try:
        yield staging
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-{tag}", dir=path.parent))
            os.replace(path, old)  # onto the empty folder: atomic
        os.replace(staging, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to a temporary file beside ``path``, then rename it into place."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def no_space_error(error: BaseException, path: Path, what: str, nbytes: int | None = None) -> OSError | None:
    """An ``OSError`` that says where and how much was being written, when ``error`` (an ENOSPC, or the
    torch / safetensors error a short write turns into) came from a full disk; ``None`` otherwise."""
    path = Path(path)
    probe = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or free < max(nbytes or 0, 1 << 16)
    if not full:
        return None
    size = f"about {nbytes / 1e6:.1f} MB, " if nbytes else ""
    return OSError(
        errno.ENOSPC,
        f"no space left on the device while writing {what} to {path} ({size}{free / 1e6:.1f} MB free); free "
        "some space or choose another --output_dir, then run again (with --resume_from_checkpoint latest to "
        "continue)",
    )
