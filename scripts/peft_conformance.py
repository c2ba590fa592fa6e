"""Run PEFT's own test suite on LoTR: the installed PEFT version's tests, from its source distribution on PyPI,
with LoTR cases added to their test matrices (in a scratch copy: nothing of PEFT's is copied into hf_reduce).

    python scripts/peft_conformance.py [--work DIR] [--files test_custom_models.py ...] [-- pytest args]

Steps: ``pip download --no-binary :all: --no-deps peft==<installed>``, unpack, append the LoTR cases below to
``TEST_CASES`` (and the multiple-active-adapter matrix) of ``tests/test_custom_models.py``, run pytest on the
LoTR cases only (``-k LoTR``), and write a summary (passed / failed / skipped per test function, with the
reasons of failures and skips) to ``scripts/benchmarks/results/peft_conformance.json``.

PEFT's tests need some of its ``test`` extras besides ours: ``pip install diffusers parameterized``.
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


def summarise(junit: Path) -> dict:
    cases = ET.parse(junit).getroot().iter("testcase")
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
        "peft": version("peft"),
        "totals": dict(totals),
        "by_function": {k: dict(v) for k, v in sorted(by_function.items())},
        "not_passed": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work", type=Path, default=Path(".cache/peft-tests"), help="Download/unpack folder."
    )
    parser.add_argument(
        "--files", nargs="+", default=["test_custom_models.py"], help="PEFT test files to run."
    )
    parser.add_argument("pytest_args", nargs="*", help="Extra pytest arguments (after --).")
    args = parser.parse_args(argv)
    tests = fetch_tests(args.work.resolve())
    add_lotr_cases(tests)
    junit = tests.parent / "lotr-junit.xml"
    # PEFT's pyproject adds coverage options (pytest-cov is not needed here): override them.
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-o",
        "addopts=",
        "-p",
        "no:cacheprovider",
        "-k",
        "LoTR or lotr",
    ]
    command += [f"--junitxml={junit}", *(f"tests/{name}" for name in args.files), *args.pytest_args]
    proc = subprocess.run(command, cwd=tests.parent)
    summary = summarise(junit)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["totals"]), f"-> {RESULTS}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
