"""PEFT's own test suites (test_custom_models.py and the decoder, encoder-decoder and feature-extraction model
suites of the installed PEFT, from its sdist) on LoTR, the model suites beside LoRA.

Slow and online once: it downloads the sdist with pip (cached in .cache/peft-tests). See
scripts/peft_conformance.py for the cases added and the summary it writes.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*suites: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "peft_conformance.py"), "--work", str(ROOT / ".cache" / "peft-tests"),
         "--suites", *suites],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    summary = json.loads((ROOT / "scripts" / "benchmarks" / "results" / "peft_conformance.json").read_text())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return summary["suites"]


@pytest.mark.slow
def test_peft_custom_models_suite_passes_on_lotr():
    lotr = _run("custom")["custom"]["LoTR"]
    assert lotr["totals"].get("failed", 0) == 0, lotr["not_passed"]
    assert lotr["totals"]["passed"] > 300


@pytest.mark.slow
def test_peft_model_suites_pass_on_lotr_as_on_lora():
    # Tiny models built from configs under PEFT's test ids; LoTR beside PEFT's own plain LoRA entry.
    suites = _run("decoder", "encoder-decoder", "feature-extraction")
    for name, suite in suites.items():
        if name == "custom":
            continue
        for method in ("LoRA", "LoTR"):
            totals = suite[method]["totals"]
            assert totals.get("failed", 0) == 0 and totals["passed"] > 40, (
                name,
                method,
                suite[method]["not_passed"],
            )
