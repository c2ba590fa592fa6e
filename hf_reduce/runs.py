"""The run folder's lifecycle: one run per output folder, and at every instant one complete run in it.

A command's output folder holds its checkpoints (``checkpoints/step_N``), its published result (``model``,
``adapter`` or a report) and two records: ``run.json`` (the run's fingerprint: the command and every argument
that changes the result) and ``run.lock``. Every command goes through :func:`run_folder`, which reads top-down
as the lifecycle does:

1. **Lock.** ``run.lock`` is held with ``fcntl.flock`` for the whole run. The kernel releases it when its holder
   dies (even by SIGKILL), so there are no stale locks to take over and no window in which two processes both
   believe they own the folder; the pid inside is written for the refusal message only. The file is never
   unlinked: a process that opened it just before an unlink would lock a deleted file beside the next owner.
2. **Recover.** A publish that a kill interrupted is rolled forward from its journal (:func:`_publish`).
3. **Plan.** The folder's owner is the fingerprint in its newest checkpoint's manifest (the authority, whatever
   happened to ``run.json``), else ``run.json``. A fresh run in a folder holding another run's results is
   refused unless ``--overwrite_output_dir``; a resume whose arguments differ from the owner's is refused;
   ``--resume_from_checkpoint auto`` resumes the newest intact checkpoint of the same run, or starts afresh.
4. **Stage.** ``--overwrite_output_dir`` never deletes up front: the new run works in ``<folder>/.staging``
   while the old run stays whole (and readable) beside it; a failed new run leaves the old one untouched.
5. **Publish.** Only a finished staged run replaces the old one, by renames driven by a journal, so a kill
   at any moment leaves either the old run or the new one (the next run in the folder completes the swap).

Checkpoints (written by :mod:`hf_reduce.training`) carry ``manifest.json``: the size and sha256 of every file
and the run's fingerprint, written last, before the checkpoint is renamed into place. :func:`resolve_checkpoint`
verifies it before anything is loaded; with ``latest`` / ``auto`` a damaged newest checkpoint is skipped (with
a warning naming it and why) in favour of the newest intact one.

What this cannot make safe: a power loss (files are not fsync'ed, so the kernel may not have written what the
renames publish), a filesystem without ``flock`` (some network filesystems) and an operator who edits a
checkpoint *and* its manifest consistently.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .utils import write_json_atomic

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
LOCK_FILE = "run.lock"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "trainer_state.json"
#: Where an ``--overwrite_output_dir`` run works until it publishes over the old run.
STAGING = ".staging"
#: The publish journal (names moved aside and in) and the old run's outputs while they are replaced.
JOURNAL = ".publishing.json"
REPLACED = ".replaced"
#: What a run leaves in its folder; the first ones mark a finished or resumable run.
RESULTS = ("checkpoints", "model", "adapter", "attack_results.json")
RUN_OUTPUTS = (*RESULTS, "attack_results.md", "all_results.json", RUN_FILE)
#: Values of ``--resume_from_checkpoint`` that name no folder.
RESUME_KEYWORDS = ("latest", "auto")
CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
#: Arguments that do not change what a run computes (where it writes, how it logs, how it resumes).
NOT_IN_FINGERPRINT = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "logging_steps",
        "disable_tqdm",
        "checkpointing_steps",
        "save_total_limit",
        "dataloader_num_workers",
        "push_to_hub",
        "hub_model_id",
        "hub_private_repo",
        "report_to",
    }
)


class RunFolderError(ValueError):
    """The output folder belongs to another run, or is being written by one."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: missing or damaged files, or an inconsistent training state."""


def fingerprint(command: str, *argument_groups: Any) -> dict[str, Any]:
    """The command and every result-changing argument of its dataclass argument groups."""
    from dataclasses import asdict, is_dataclass

    arguments: dict[str, Any] = {}
    for group in argument_groups:
        if is_dataclass(group):
            arguments.update({k: v for k, v in asdict(group).items() if k not in NOT_IN_FINGERPRINT})
    return json.loads(json.dumps({"command": command, "arguments": arguments}, default=str, sort_keys=True))


def read_json(path: Path, what: str) -> Any:
    """``path`` parsed, or one line naming the file and what to do."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} ({what}) is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} ({what}) is not valid JSON ({error.msg} at line {error.lineno})") from None


def _read_run(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    run = read_json(path, "the run's fingerprint")
    if not (isinstance(run, dict) and isinstance(run.get("arguments"), dict) and "command" in run):
        raise RunFolderError(
            f"{path} is not a run record (expected an object with 'command' and 'arguments', got "
            f"{type(run).__name__}); restore it, or start afresh with --overwrite_output_dir"
        )
    return run


def _difference(recorded: dict[str, Any], run: dict[str, Any]) -> str:
    old, new = recorded.get("arguments", {}), run["arguments"]
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return f"arguments {changed}" if changed else f"command {recorded.get('command')!r}"


# ------------------------------------------------------------------------------------------------ 1. lock


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "(pid not yet written)"
            raise RunFolderError(
                f"{folder} is being written by process {owner} (it holds {LOCK_FILE}); wait for it, or use "
                "another --output_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------------------- checkpoints


def _checkpoint_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, run: dict[str, Any] | None) -> None:
    """Record the size and sha256 of every file of the checkpoint ``folder`` and the run that wrote it (the
    last file written, before the checkpoint is renamed into place)."""
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in _checkpoint_files(folder)
    }
    write_json_atomic(folder / MANIFEST_FILE, {"files": files, "run": run})


def checkpoint_step(folder: Path) -> int | None:
    match = CHECKPOINT_PATTERN.match(Path(folder).name)
    return int(match.group(1)) if match else None


def verify_checkpoint(folder: Path) -> dict[str, Any]:
    """The manifest of the checkpoint ``folder`` once every file matches it and its training state is
    consistent; :class:`CheckpointError` (saying what is wrong) otherwise."""
    folder = Path(folder)
    if not (folder / MANIFEST_FILE).is_file():
        raise CheckpointError(f"it has no {MANIFEST_FILE} (an unfinished write, or an older hf_reduce)")
    try:
        manifest = read_json(folder / MANIFEST_FILE, "the checkpoint's manifest")
        listed = manifest["files"]
        expected = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in listed.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"its {MANIFEST_FILE} is unreadable ({error})") from None
    present = {str(p.relative_to(folder)) for p in _checkpoint_files(folder)}
    if missing := sorted(set(expected) - present):
        raise CheckpointError(f"{missing[0]} is missing")
    if extra := sorted(present - set(expected)):
        raise CheckpointError(f"{extra[0]} is not in its manifest")
    for name, (size, sha) in sorted(expected.items()):
        actual = (folder / name).stat().st_size
        if actual != size:
            raise CheckpointError(f"{name} has {actual} bytes where its manifest says {size} (truncated?)")
        if _sha256(folder / name) != sha:
            raise CheckpointError(f"{name} does not match its manifest (sha256 differs: damaged or edited)")
    check_state(folder, read_json(folder / STATE_FILE, "the checkpoint's training state"))
    return manifest


def check_state(folder: Path, state: Any, steps_per_epoch: int | None = None, accumulation: int = 1) -> None:
    """The counters of a checkpoint's ``trainer_state.json`` agree with each other, with the scheduler and
    with the folder's name (and, given the loader's ``steps_per_epoch``, with the epoch and batch counters)."""
    try:
        step, epoch, batches = (int(state[k]) for k in ("global_step", "epoch", "batches_in_epoch"))
        scheduled = int(state["scheduler"]["last_epoch"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"its {STATE_FILE} lacks a counter ({error!r})") from None
    named = checkpoint_step(folder)
    if named is not None and named != step:
        raise CheckpointError(f"its {STATE_FILE} says global_step {step} in a folder named step_{named}")
    if scheduled != step:
        raise CheckpointError(
            f"its {STATE_FILE} says global_step {step} but the scheduler stepped {scheduled}"
        )
    if steps_per_epoch is not None and step != epoch * steps_per_epoch + -(-batches // accumulation):
        raise CheckpointError(
            f"its {STATE_FILE} says global_step {step} at epoch {epoch}, batch {batches}, which does not match "
            f"{steps_per_epoch} steps per epoch"
        )


def _checkpoints(output_dir: Path) -> list[Path]:
    """``step_N`` folders of ``output_dir``, newest first."""
    found = [(checkpoint_step(p), p) for p in (Path(output_dir) / "checkpoints").glob("step_*") if p.is_dir()]
    return [p for step, p in sorted((s, p) for s, p in found if s is not None)[::-1]]


def _refuse_other_run(checkpoint: Path, manifest: dict[str, Any], run: dict[str, Any] | None) -> None:
    written_by = manifest.get("run")
    if run is not None and written_by is not None and written_by != run:
        raise RunFolderError(
            f"cannot resume from {checkpoint}: it belongs to another run (different "
            f"{_difference(written_by, run)}); resume with the same arguments, or start afresh with "
            "--overwrite_output_dir"
        )


def resolve_checkpoint(
    output_dir: str | os.PathLike, which: str, run: dict[str, Any] | None = None
) -> Path | None:
    """The verified checkpoint that ``--resume_from_checkpoint which`` names.

    ``which`` is a checkpoint folder (refused in one line when it fails verification), ``"latest"`` (the newest
    intact checkpoint of ``output_dir``; damaged newer ones are skipped with a warning) or ``"auto"`` (as
    ``latest``, but ``None`` when there is none: start afresh). ``run``, when given, is this run's fingerprint:
    a checkpoint written by another run is refused (:class:`RunFolderError`).
    """
    if which not in RESUME_KEYWORDS:
        path = Path(which)
        if not path.is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint {which}: no such checkpoint folder")
        try:
            manifest = verify_checkpoint(path)
        except CheckpointError as error:
            raise CheckpointError(
                f"--resume_from_checkpoint {which}: {error}; resume from another checkpoint or 'latest'"
            ) from None
        _refuse_other_run(path, manifest, run)
        return path
    skipped = []
    for checkpoint in _checkpoints(Path(output_dir)):
        try:
            manifest = verify_checkpoint(checkpoint)
        except CheckpointError as error:
            logger.warning("skipping checkpoint %s: %s", checkpoint, error)
            skipped.append(f"{checkpoint.name}: {error}")
            continue
        _refuse_other_run(checkpoint, manifest, run)
        return checkpoint
    if which == "auto":
        return None
    root = Path(output_dir) / "checkpoints"
    found = f" ({'; '.join(skipped)})" if skipped else ""
    raise FileNotFoundError(
        f"no intact checkpoint to resume from in {root}{found}; use --resume_from_checkpoint auto to start "
        "afresh when there is none"
    )


def _owner(folder: Path) -> dict[str, Any] | None:
    """The run that owns ``folder``'s results: the fingerprint in the newest readable checkpoint manifest
    (a checkpoint carries its own, whatever happened to run.json), else run.json's."""
    for checkpoint in _checkpoints(folder):
        try:
            written_by = read_json(checkpoint / MANIFEST_FILE, "the checkpoint's manifest").get("run")
        except (ValueError, OSError, AttributeError):
            continue
        if written_by is not None:
            return written_by
    return _read_run(folder / RUN_FILE)


# ------------------------------------------------------------------------------------- stage, publish


def _has_outputs(folder: Path) -> list[str]:
    return [name for name in RESULTS if (folder / name).exists()]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _publish(folder: Path, journal: dict[str, list[str]] | None = None) -> None:
    """Replace ``folder``'s run by the staged one. The journal lists the old run's outputs and the new
    entries; each step below can be redone after a kill (a moved entry is no longer where it came from), so
    rolling forward from the journal always ends with the new run in place."""
    staging, replaced, journal_path = folder / STAGING, folder / REPLACED, folder / JOURNAL
    if journal is None:
        journal = {
            "old": [name for name in RUN_OUTPUTS if (folder / name).exists()],
            "new": sorted(p.name for p in staging.iterdir()),
        }
        write_json_atomic(journal_path, journal)  # the commit point: from here on, the new run wins
    replaced.mkdir(exist_ok=True)
    for name in journal["old"]:
        still_old = name not in journal["new"] or (staging / name).exists()
        if still_old and (folder / name).exists():
            _remove(replaced / name)
            os.replace(folder / name, replaced / name)
    for name in journal["new"]:
        if (staging / name).exists():
            os.replace(staging / name, folder / name)
    journal_path.unlink()
    shutil.rmtree(replaced, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def _recover(folder: Path) -> None:
    """Finish what a killed publish began."""
    if (folder / JOURNAL).is_file():
        journal = read_json(folder / JOURNAL, "the publish journal")
        logger.warning("completing the interrupted publish of %s", folder / STAGING)
        _publish(folder, journal)
    shutil.rmtree(folder / REPLACED, ignore_errors=True)


def _has_intact_checkpoint(folder: Path) -> bool:
    for checkpoint in _checkpoints(folder):
        try:
            verify_checkpoint(checkpoint)
            return True
        except CheckpointError:
            continue
    return False


@dataclass
class ActiveRun:
    """Where a run held by :func:`run_folder` works and what it resumes.

    ``work_dir`` is the folder itself, or its staging folder for a run that will replace the folder's run
    when it finishes; ``checkpoint`` is the verified checkpoint to resume from, or ``None``."""

    folder: Path
    work_dir: Path
    checkpoint: Path | None

    @property
    def staged(self) -> bool:
        return self.work_dir != self.folder


def _plan(
    folder: Path, run: dict[str, Any], overwrite: bool, resume: str | None, resumable: bool
) -> ActiveRun:
    staging = folder / STAGING
    if resume and staging.is_dir() and _read_run(staging / RUN_FILE) == run:  # an unfinished overwrite
        checkpoint = resolve_checkpoint(staging, resume, run)
        if checkpoint is not None or resume == "auto":
            return ActiveRun(folder, staging, checkpoint)
    owner = _owner(folder)
    outputs = _has_outputs(folder)
    if resume and owner is not None and owner != run:
        if not (overwrite and resume == "auto"):  # auto + overwrite: replace the other run (below)
            raise RunFolderError(
                f"cannot resume in {folder}: its checkpoints belong to another run (different "
                f"{_difference(owner, run)}); resume with the same arguments, or start afresh with "
                "--overwrite_output_dir"
            )
    elif resume:
        checkpoint = resolve_checkpoint(folder, resume, run)
        if checkpoint is not None:
            return ActiveRun(folder, folder, checkpoint)
        # auto, and no intact checkpoint: start afresh
    if not outputs:
        for name in RUN_OUTPUTS:  # what a run that published no result left (a lone all_results.json)
            _remove(folder / name)
        write_json_atomic(folder / RUN_FILE, run)
        return ActiveRun(folder, folder, None)
    if not overwrite and not (resume == "auto" and owner == run):
        continuing = ", or --resume_from_checkpoint latest to continue that same run" if resumable else ""
        raise RunFolderError(
            f"{folder} already holds a run's {', '.join(outputs)}; pass --overwrite_output_dir to replace "
            f"it{continuing}"
        )
    if staging.exists():
        logger.warning("discarding the unfinished run in %s (another run replaces it)", staging)
        shutil.rmtree(staging)
    staging.mkdir()
    write_json_atomic(staging / RUN_FILE, run)
    return ActiveRun(folder, staging, None)


@contextmanager
def run_folder(
    output_dir: str | os.PathLike,
    run: dict[str, Any],
    *,
    overwrite: bool = False,
    resume: str | None = None,
    resumable: bool = True,
) -> Iterator[ActiveRun]:
    """Hold ``output_dir`` for the run ``run`` (a :func:`fingerprint`) while the block works in the yielded
    :class:`ActiveRun`'s ``work_dir``; see the module docstring for the lifecycle and what is refused.
    ``resume`` is the run's ``--resume_from_checkpoint`` value; a command that trains nothing is not
    ``resumable``."""
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--output_dir {folder} is a file; choose a folder")
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        _recover(folder)
        active = _plan(folder, run, overwrite, resume, resumable)
        _ACTIVE[active.work_dir.resolve()] = run
        try:
            yield active
        except BaseException:
            if active.staged and not _has_intact_checkpoint(active.work_dir):
                shutil.rmtree(active.work_dir, ignore_errors=True)  # the old run stays as it was
            elif active.staged:
                logger.warning(
                    "the unfinished run is kept in %s, beside the previous run; continue it with "
                    "--resume_from_checkpoint latest",
                    active.work_dir,
                )
            raise
        finally:
            _ACTIVE.pop(active.work_dir.resolve(), None)
        if active.staged:
            _publish(folder)


#: Fingerprints of the runs this process holds, by working folder: the checkpoints written there carry them.
_ACTIVE: dict[Path, dict[str, Any]] = {}


def active_run(work_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The fingerprint of the run this process holds in ``work_dir`` (``None`` outside :func:`run_folder`)."""
    return _ACTIVE.get(Path(work_dir).resolve())


def display_name(work_dir: str | os.PathLike) -> str:
    """The run's folder name, also for a staged run working in ``<folder>/.staging``."""
    path = Path(work_dir).resolve()
    return (path.parent if path.name == STAGING else path).name
