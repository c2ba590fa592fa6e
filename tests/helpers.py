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
