"""The README's Python examples run as written."""

import json
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3, "the README lost its examples"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
    config = json.loads((tmp_path / "outputs" / "readme-lotr" / "adapter_config.json").read_text())
    assert config["peft_type"] == "HF_REDUCE_LOTR" and config["r"] == 8


def test_readme_has_the_two_command_blocks():
    text = README.read_text()
    for name in ("demo", "tests"):
        assert f"<!-- readme-block: {name} -->\n```bash\n" in text
    assert "hf-reduce demo" in text and "python -m pytest" in text
