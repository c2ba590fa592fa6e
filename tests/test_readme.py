"""The README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README lost its Python examples"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "outputs" / "tour" / "model" / "model.safetensors").exists()
    sft_adapter = tmp_path / "outputs" / "sft-lotr" / "adapter" / "adapter_config.json"  # TRL's SFTTrainer
    assert '"peft_type": "HF_REDUCE_LOTR"' in sft_adapter.read_text()


def test_readme_has_the_two_command_blocks():
    text = README.read_text()
    for name in ("demo", "tests"):
        assert f"<!-- readme-block: {name} -->\n```bash\n" in text
    assert "hf-reduce demo" in text and "python -m pytest" in text
