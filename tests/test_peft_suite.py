"""PEFT's own test suite (tests/test_custom_models.py of the installed PEFT, from its sdist) on LoTR cases.

Slow and online once: it downloads the sdist with pip (cached in .cache/peft-tests). See
scripts/peft_conformance.py for the cases added and the summary it writes.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_peft_custom_models_suite_passes_on_lotr():
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "peft_conformance.py"),
            "--work",
            str(ROOT / ".cache" / "peft-tests"),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    summary = json.loads((ROOT / "scripts" / "benchmarks" / "results" / "peft_conformance.json").read_text())
    assert proc.returncode == 0 and summary["totals"].get("failed", 0) == 0, summary["not_passed"]
    assert summary["totals"]["passed"] > 300
