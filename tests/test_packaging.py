import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("hf_reduce-*.whl"))


def test_wheel_ships_model_cards_and_metrics(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (ROOT / "model_cards").glob("*.md"):
        assert f"hf_reduce/model_cards/{template.name}" in names
    assert "hf_reduce/metrics/accuracy/accuracy.py" in names
    assert "hf_reduce/metrics/f1/f1.py" in names
    assert "hf_reduce/cnn/modeling_vgg.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "hf-reduce = hf_reduce_cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "hf_reduce_cli/__init__.py" in names


def test_installed_wheel_finds_its_templates(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-compile",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import hf_reduce.hub as h; d = h.template_dir(); assert str(d).startswith(sys.argv[1]), d;"
        "print(sorted(h.available_families()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(target)], check=True, capture_output=True, text=True
    )
    assert "vgg" in out.stdout


def test_the_wheel_passes_twine_check(wheel):
    # PyPI's own metadata checks (the README renders as the long description).
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "PASSED" in proc.stdout, proc.stdout + proc.stderr
