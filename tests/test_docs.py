"""The documentation site: every Python block on its pages runs as written (pages in the site's order, in
one working folder, as a reader following them would), every ``hf-reduce`` / ``accelerate launch`` line in
its shell blocks parses with the command's own argument parser, and ``mkdocs build --strict`` passes.

A block preceded by ``<!-- docs: slow -->`` is compiled but not run (there are none yet)."""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"(<!-- docs: slow -->\n)?```(\w+)\n(.*?)```", re.S)


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        for value in item.values() if isinstance(item, dict) else [item]:
            pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _pages() -> list[Path]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return [DOCS / page for page in _nav_pages(config["nav"])]


def _blocks(language: str):
    for page in _pages():
        for slow, lang, code in FENCE.findall(page.read_text()):
            if lang == language:
                yield page, bool(slow), code


def test_every_page_is_in_the_nav_and_has_examples_where_it_should():
    listed = {p.relative_to(DOCS) for p in _pages()}
    on_disk = {p.relative_to(DOCS) for p in DOCS.rglob("*.md") if "results" not in p.parts}
    assert listed == on_disk
    for page in (DOCS / "methods").glob("*.md"):
        assert "```python" in page.read_text(), f"{page.name} has no runnable example"


def test_the_pages_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = 0
    for page in _pages():
        namespace = {"__name__": f"__docs_{page.stem}__"}
        for slow, lang, code in FENCE.findall(page.read_text()):
            if lang != "python":
                continue
            compiled = compile(code, str(page), "exec")
            if not slow:
                exec(compiled, namespace)
                ran += 1
    assert ran >= 8
    assert (tmp_path / "outputs" / "tour" / "maxvol" / "config.json").exists()


def _command_lines(code: str) -> list[list[str]]:
    joined = re.sub(r"\\\n\s*", " ", code)
    lines = []
    for line in joined.splitlines():
        line = line.split("  #", 1)[0].strip()
        for part in re.split(r"&&|;", line):
            words = shlex.split(part.strip(), comments=True)
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # VAR=value prefixes
            if words[:1] == ["hf-reduce"] and len(words) > 1 and not words[1].startswith("-"):
                lines.append([words[1].replace("-", "_"), *words[2:]])
            elif words[:2] == ["accelerate", "launch"]:
                script = next(w for w in words[2:] if w.endswith(".py"))
                lines.append([Path(script).stem, *words[words.index(script) + 1 :]])
    return lines


def test_the_pages_command_lines_parse(monkeypatch):
    from hf_reduce.commands import common

    checked = 0
    for page, _, code in _blocks("bash"):
        for command, *argv in _command_lines(code):
            if command == "demo":
                continue
            module = importlib.import_module(f"hf_reduce.commands.{command}")
            parsed = {}

            def parse_only(types, run, args, prog, description, parsed=parsed):
                parser = common.HfArgumentParser(types)
                parsed["groups"] = parser.parse_args_into_dataclasses(args=common.pop_verbose(args))
                return {}

            monkeypatch.setattr(module, "command_main", parse_only)
            try:
                module.main(argv)
            except (SystemExit, ValueError) as error:  # the parser refused the line
                raise AssertionError(f"{page.name}: `{command} {' '.join(argv)}` does not parse") from error
            assert parsed, (page.name, command)
            checked += 1
    assert checked >= 10


@pytest.mark.skipif(
    shutil.which("mkdocs") is None, reason="mkdocs is not installed (pip install -e '.[docs]')"
)
def test_mkdocs_build_strict(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "methods" / "lotr" / "index.html").exists()
