"""Run PEFT's own test suites on LoTR: the installed PEFT version's tests, from its source distribution on PyPI,
with LoTR cases added to their test matrices (in a scratch copy: nothing of PEFT's is copied into hf_reduce).

    python scripts/peft_conformance.py [--work DIR] [--suites custom decoder encoder-decoder feature-extraction]
                                       [-- pytest args]

Steps: ``pip download --no-binary :all: --no-deps peft==<installed>`` and unpack; then per suite:

* ``custom`` (``tests/test_custom_models.py``): the LoTR cases below are appended to ``TEST_CASES`` (and the
  multiple-active-adapter matrix); pytest runs the LoTR cases only (``-k LoTR``).
* ``decoder``, ``encoder-decoder``, ``feature-extraction`` (``tests/test_<suite>_models.py``): the tiny models of
  the suite's model ids are built from configs into the run folder (``peft_tiny_models.py``; transformers loads
  a local folder of that name before the Hub, so nothing is downloaded), and ``ALL_CONFIGS`` becomes PEFT's own
  plain LoRA entry and a LoTR entry with the same task type, rank and alpha; every test parametrised by it runs.

Each suite's pass / fail / skip counts per method and per test function, with the reasons of failures and
skips, go to ``scripts/benchmarks/results/peft_conformance.json`` (suites run later are added to it).

PEFT's tests need some of its ``test`` extras besides ours: ``pip install -e ".[conformance]"``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from importlib.metadata import version
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "benchmarks" / "results" / "peft_conformance.json"

SUITES = {
    "custom": "test_custom_models.py",
    "decoder": "test_decoder_models.py",
    "encoder-decoder": "test_encoder_decoder_models.py",
    "feature-extraction": "test_feature_extraction_models.py",
}

# Appended to a model suite right after its ALL_CONFIGS list: PEFT's first plain LoRA entry, and LoTR with the
# same task type, rank and alpha (target_modules None: LoRA's defaults per model type, for both).
LOTR_MODEL_SUITE_CONFIGS = """
import hf_reduce  # registers LoTR with PEFT
from hf_reduce.lotr import LoTRConfig

_LORA = next(
    c for c in ALL_CONFIGS
    if c[0] is LoraConfig and set(c[1]) <= {"task_type", "r", "lora_alpha", "target_modules", "lora_dropout", "bias"}
)
_LOTR = {k: v for k, v in _LORA[1].items() if k in ("task_type", "target_modules")}
_LOTR.update(r=_LORA[1]["r"], lotr_alpha=_LORA[1]["lora_alpha"], lotr_dropout=_LORA[1].get("lora_dropout", 0.0))
ALL_CONFIGS = [_LORA, (LoTRConfig, _LOTR)]  # test ids: LoraConfig-config_kwargs0, LoTRConfig-config_kwargs1
"""
METHODS = {"[LoraConfig-config_kwargs0-": "LoRA", "[LoTRConfig-config_kwargs1-": "LoTR"}

# Appended to test_custom_models.py right before ALL_PEFT_CONFIG_CLASSES is computed from TEST_CASES.
# MLP: lin0 is 20 x 10, lin1 2 x 20 (so r <= 2); EmbConv1D: a 1 x 5 Conv1D (r = 1).
LOTR_CASES = """
import hf_reduce  # registers LoTR with PEFT
from hf_reduce.lotr import LoTRConfig

TEST_CASES += [
    ("Vanilla MLP 1 LoTR", "MLP", LoTRConfig, {"target_modules": ["lin0"], "r": 2}),
    ("Vanilla MLP 2 LoTR", "MLP", LoTRConfig, {"target_modules": ["lin0", "lin1"], "r": 2}),
    ("Vanilla MLP 3 LoTR", "MLP", LoTRConfig, {"target_modules": ["lin0"], "r": 2, "modules_to_save": ["lin1"]}),
    ("Vanilla MLP 4 LoTR", "MLP", LoTRConfig, {"target_modules": ["lin0", "lin1"], "r": 2, "init_lotr": "tucker"}),
    ("Vanilla MLP 5 LoTR", "MLP", LoTRConfig, {"target_modules": ["lin0", "lin1"], "r": 2, "share_by": "shape"}),
    ("Vanilla MLP 6 LoTR", "MLP", LoTRConfig, {"target_modules": ["lin0"], "r": 2, "lotr_dropout": 0.1}),
    ("Embedding + transformers Conv1D 1 LoTR", "EmbConv1D", LoTRConfig, {"target_modules": ["conv1d"], "r": 1}),
]
MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES += [
    ("LoTR Same", "lotr", LoTRConfig, {"target_modules": ["lin0"], "r": 2, "init_weights": False},
     {"target_modules": ["lin0"], "r": 2, "init_weights": False}),
    ("LoTR Different", "lotr", LoTRConfig, {"target_modules": ["lin0"], "r": 2, "init_weights": False},
     {"target_modules": ["lin1"], "r": 2, "init_weights": False}),
]
"""


def fetch_tests(work: Path) -> Path:
    """The unpacked tests folder of the installed PEFT version (downloaded once into ``work``)."""
    release = version("peft")
    root = work / f"peft-{release}"
    if not (root / "tests").is_dir():
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"peft=={release}",
            ],
            cwd=work,
            check=True,
        )
        with tarfile.open(work / f"peft-{release}.tar.gz") as archive:
            archive.extractall(work, filter="data")
    (
        root / "tests" / "__init__.py"
    ).touch()  # the tests import each other relatively; the sdist has no __init__
    return root / "tests"


def add_lotr_cases(tests: Path) -> None:
    path = tests / "test_custom_models.py"
    text = path.read_text()
    if "from hf_reduce.lotr import LoTRConfig" in text:
        return
    anchor = "ALL_PEFT_CONFIG_CLASSES = "
    # MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES is defined after the anchor: add those cases after its definition.
    first, rest = text.split(anchor, 1)
    single, multiple = LOTR_CASES.split("MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES += ")
    text = first + single + anchor + rest
    marker = "\n]\n"
    start = text.index("MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES = [")
    end = text.index(marker, start) + len(marker)
    text = text[:end] + "MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES += " + multiple + text[end:]
    path.write_text(text)


def add_lotr_configs(path: Path) -> None:
    text = path.read_text()
    if "from hf_reduce.lotr import LoTRConfig" in text:
        return
    start = text.index("\nALL_CONFIGS = [")
    end = text.index("\n]\n", start) + len("\n]\n")
    path.write_text(text[:end] + LOTR_MODEL_SUITE_CONFIGS + text[end:])


def method_of(test_name: str, suite: str) -> str | None:
    """LoRA or LoTR for a case of a model suite (by its test id), LoTR for the custom suite."""
    if suite == "custom":
        return "LoTR"
    return next((method for marker, method in METHODS.items() if marker in test_name), None)


def summarise(junit: Path, suite: str = "custom") -> dict:
    """``{method: {totals, by_function, not_passed}}`` from pytest's JUnit XML."""
    return {
        method: _summarise_cases(
            [
                c
                for c in ET.parse(junit).getroot().iter("testcase")
                if method_of(c.get("name", ""), suite) == method
            ]
        )
        for method in (("LoTR",) if suite == "custom" else ("LoRA", "LoTR"))
    }


def _summarise_cases(cases: list) -> dict:
    by_function: dict[str, Counter] = {}
    problems = []
    for case in cases:
        function = case.get("name", "").split("[", 1)[0]
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
                problems.append({"test": case.get("name"), "message": (child.get("message") or "")[:300]})
            elif child.tag == "skipped":
                outcome = "skipped"
                problems.append({"test": case.get("name"), "skipped": (child.get("message") or "")[:300]})
        by_function.setdefault(function, Counter())[outcome] += 1
    totals = sum(by_function.values(), Counter())
    return {
        "totals": dict(totals),
        "by_function": {k: dict(v) for k, v in sorted(by_function.items())},
        "not_passed": problems,
    }


def run_suite(tests: Path, suite: str, pytest_args: list[str]) -> tuple[int, dict]:
    """Run one suite in the unpacked sdist; ``(pytest's exit status, its summary)``."""
    import os

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import peft_tiny_models

    path = tests / SUITES[suite]
    if suite == "custom":
        add_lotr_cases(tests)
        select = "LoTR or lotr"
    else:
        peft_tiny_models.build(tests.parent)  # pytest runs there: the ids resolve to these folders
        add_lotr_configs(path)
        select = "config_kwargs0 or config_kwargs1"
    junit = tests.parent / f"junit-{suite}.xml"
    # PEFT's pyproject adds coverage options (pytest-cov is not needed here): override them.
    command = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "-k", select,
               f"--junitxml={junit}", f"tests/{path.name}", *pytest_args]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, cwd=tests.parent, env=env)
    return proc.returncode, summarise(junit, suite)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work", type=Path, default=Path(".cache/peft-tests"), help="Download/unpack folder."
    )
    parser.add_argument(
        "--suites", nargs="+", choices=sorted(SUITES), default=["custom"], help="Suites to run."
    )
    parser.add_argument("pytest_args", nargs="*", help="Extra pytest arguments (after --).")
    args = parser.parse_args(argv)
    tests = fetch_tests(args.work.resolve())
    status = 0
    for suite in args.suites:
        code, summary = run_suite(tests, suite, args.pytest_args)
        status = status or code
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        if results.get("peft") != version("peft") or "suites" not in results:
            results = {"peft": version("peft"), "suites": {}}  # another PEFT's results do not add up
        results["suites"][suite] = summary
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(RESULTS)
        print(suite, {method: part["totals"] for method, part in summary.items()}, f"-> {RESULTS}")
    return status


if __name__ == "__main__":
    sys.exit(main())
