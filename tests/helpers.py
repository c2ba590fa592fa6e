"""Shared test helpers."""

import os
import subprocess
import sys
import textwrap

# Run in a child interpreter where `import hf_reduce` fails, as on a machine without the package.
BLOCK_HF_REDUCE = textwrap.dedent(
    """
    import importlib.abc, sys
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hf_reduce" or name.startswith("hf_reduce."):
                raise ImportError("hf_reduce is not installed here")
    sys.meta_path.insert(0, _Block())
    """
)


def run_python(code: str, env: dict | None = None, timeout: int = 300) -> str:
    """Run ``code`` in a fresh interpreter; raise with its output if it fails; return stdout."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def run_two_ranks(worker: str, out_dir, timeout: int = 300) -> list:
    """Run ``tests/ddp_workers.py WORKER OUT_DIR`` on two gloo ranks (CPU) and return both ranks' reports."""
    import json
    from pathlib import Path

    script = Path(__file__).with_name("ddp_workers.py")
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
        str(script),
        worker,
        str(out_dir),
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"DDP run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return [json.loads((Path(out_dir) / f"rank{r}.json").read_text()) for r in (0, 1)]


def assert_no_local_paths(folder, *local: str) -> None:
    """No file saved for the Hub in ``folder`` mentions ``local`` paths or this installation's site-packages."""
    import site
    from pathlib import Path

    needles = [str(p) for p in local] + [p for p in site.getsitepackages() if p] + [str(Path.home())]
    for path in Path(folder).rglob("*"):
        if path.suffix in (".json", ".md", ".txt"):
            text = path.read_text(errors="ignore")
            found = [n for n in needles if n and n in text]
            assert not found, f"{path.name} mentions local paths {found}"
