import yaml
from helpers import BLOCK_HF_REDUCE, run_python
from huggingface_hub import ModelCard

from hf_reduce.cnn import VGGForImageClassification
from hf_reduce.hub import CardInfo, available_families, render_model_card, save_for_hub

REMOTE_PIPELINE = """
from PIL import Image
from transformers import pipeline
classify = pipeline("image-classification", model="tester/vgg", trust_remote_code=True)
print([r["label"] for r in classify(Image.new("L", (8, 8), 100))])
"""


def _hub_child(tmp_path) -> str:
    """The start of a child script that serves a local Hub and points huggingface_hub at it (huggingface_hub
    reads HF_ENDPOINT at import time, hence a fresh interpreter)."""
    return f"""
import os, sys
sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
from hub_server import LocalHub
hub = LocalHub().__enter__()
os.environ.update(HF_ENDPOINT=hub.url, HF_TOKEN="hf_test", HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                  HF_HOME={str(tmp_path / "hf_home")!r})
"""


def test_card_renders_metrics_into_model_index(tiny_vgg_config):
    model = VGGForImageClassification(tiny_vgg_config)
    info = CardInfo(
        dataset="fashion_mnist",
        metrics={"accuracy": 0.9875, "num_samples": 400},
        training_args={"learning_rate": 0.003, "output_dir": "/home/me/outputs/run", "data": "./local/set"},
        base_model="./outputs/train-cnn/model",
    )
    card = render_model_card(model, info, repo_id="me/vgg-digits")
    meta = yaml.safe_load(str(card).split("---")[1])
    # The Hub's own metadata: transformers loads the files (hf_reduce is a tag), a license, Hub dataset ids,
    # the test-set size in model-index, and no local paths anywhere.
    assert meta["library_name"] == "transformers" and "hf_reduce" in meta["tags"]
    assert meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["zalando-datasets/fashion_mnist"]
    assert "base_model" not in meta
    assert meta["model-index"][0]["results"][0]["dataset"]["args"] == {"num_samples": 400}
    assert "/home/me" not in str(card) and "./local" not in str(card) and "outputs/" not in str(card)
    local = render_model_card(model, CardInfo(dataset="digits"), repo_id="me/vgg-digits")
    assert "datasets" not in yaml.safe_load(str(local).split("---")[1])  # scikit-learn's digits: no Hub id
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"][0] == {"type": "accuracy", "value": 0.9875}
    text = str(card)
    assert "# vgg-digits" in text and 'from_pretrained("me/vgg-digits")' in text
    assert "0.9875" in text and '"learning_rate": 0.003' in text
    assert "vgg" in available_families()


def test_save_for_hub_is_atomic_and_safetensors_only(tmp_path, tiny_vgg_config):
    model = VGGForImageClassification(tiny_vgg_config)
    target = tmp_path / "model"
    (target).mkdir()
    (target / "stale.bin").write_text("old")
    save_for_hub(model, target, CardInfo(metrics={"accuracy": 0.5}))
    names = sorted(p.name for p in target.iterdir())
    assert names == [
        "README.md",
        "config.json",
        "configuration_vgg.py",
        "image_processing.py",
        "model.safetensors",
        "modeling_vgg.py",
        "preprocessor_config.json",
    ]
    assert ModelCard.load(target / "README.md").data.library_name == "transformers"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left behind


def test_push_pull_round_trip_through_local_hub(tmp_path):
    # huggingface_hub reads HF_ENDPOINT at import time: run the client in a fresh interpreter.
    code = (
        _hub_child(tmp_path)
        + f"""
REMOTE_PIPELINE = {REMOTE_PIPELINE!r}
import torch, yaml
import hf_reduce
from hf_reduce.cnn import VGGConfig, VGGForImageClassification
from transformers import AutoModelForImageClassification
from huggingface_hub import ModelCard
torch.manual_seed(0)
model = VGGForImageClassification(VGGConfig(layers=[4, "M", 8], image_size=8, num_labels=3)).eval()
url = hf_reduce.push_to_hub(model, "tester/vgg", hf_reduce.CardInfo(dataset="digits", metrics={{"accuracy": 0.97}}))
assert url.startswith(hub.url), url
assert sorted(hub.state.repos["tester/vgg"]) == ["README.md", "config.json", "configuration_vgg.py",
                                                  "image_processing.py", "model.safetensors", "modeling_vgg.py",
                                                  "preprocessor_config.json"]
pulled = AutoModelForImageClassification.from_pretrained("tester/vgg").eval()
x = torch.rand(2, 1, 8, 8)
assert torch.equal(pulled(pixel_values=x).logits, model(pixel_values=x).logits)
# The Hub visitor's first line, with hf_reduce and (in a child that cannot import it) as remote code.
import subprocess
from PIL import Image
from transformers import pipeline
expected = [r["label"] for r in pipeline("image-classification", model="tester/vgg")(Image.new("L", (8, 8), 100))]
remote = {BLOCK_HF_REDUCE!r} + REMOTE_PIPELINE
child = subprocess.run([sys.executable, "-c", remote], capture_output=True, text=True, env=dict(os.environ))
assert child.returncode == 0, child.stderr[-2000:]
assert child.stdout.strip().splitlines()[-1] == str(expected), (child.stdout, expected)
card = ModelCard.load("tester/vgg")
assert card.data.eval_results[0].metric_value == 0.97
print("roundtrip-ok")
"""
    )
    assert "roundtrip-ok" in run_python(code)


def test_every_image_card_runs_as_written_from_a_push(tmp_path):
    # Push each family to the local Hub, then run the Python blocks of its README exactly as a visitor would:
    # the first (remote code) where hf_reduce cannot be imported, all of them in order where it can.
    code = (
        _hub_child(tmp_path)
        + f"""
import re, subprocess
import hf_reduce
from huggingface_hub import hf_hub_download
from test_entry_points import FAMILIES, build
for family in FAMILIES:
    repo = "tester/" + family
    hf_reduce.push_to_hub(build(family), repo, hf_reduce.CardInfo(dataset="digits"))
    card = open(hf_hub_download(repo, "README.md")).read()
    blocks = re.findall(r"```python\\n(.*?)```", card, flags=re.S)
    assert len(blocks) >= 2 and "trust_remote_code=True" in blocks[0], (family, blocks)
    child = subprocess.run([sys.executable, "-c", {BLOCK_HF_REDUCE!r} + blocks[0]], capture_output=True,
                           text=True, env=dict(os.environ))
    assert child.returncode == 0, (family, child.stderr[-3000:])
    namespace = {{}}
    for block in blocks:
        exec(block, namespace)
    print(family, "card-ok")
"""
    )
    out = run_python(code, timeout=600)
    assert all(f"{family} card-ok" in out for family in ("vgg", "ode", "maxvol", "asnet")), out


def test_a_push_replaces_the_files_of_an_earlier_push(tmp_path):
    # Before: files of an earlier push stayed in the repo forever (a VGG's modeling_vgg.py beside an ODE).
    code = (
        _hub_child(tmp_path)
        + """
import hf_reduce
vgg = hf_reduce.VGGForImageClassification(hf_reduce.VGGConfig(layers=[4], image_size=8, num_labels=3))
hf_reduce.push_to_hub(vgg, "tester/model")
ode = hf_reduce.ODEForImageClassification(hf_reduce.ODEConfig(channels=[4], ode_stages=[True], image_size=8))
hf_reduce.push_to_hub(ode, "tester/model")
files = sorted(hub.state.repos["tester/model"])
assert "modeling_vgg.py" not in files and "configuration_vgg.py" not in files, files
assert "modeling_ode.py" in files and "model.safetensors" in files, files
print("replaced-ok")
"""
    )
    assert "replaced-ok" in run_python(code)


def test_cards_install_hf_reduce_the_way_that_works_today(tiny_vgg_config):
    # No release is on PyPI: a card must not say `pip install hf-reduce` or link to a PyPI page.
    import hf_reduce
    from hf_reduce.lotr import LoTRConfig

    cards = [str(render_model_card(VGGForImageClassification(tiny_vgg_config), CardInfo(), repo_id="me/vgg"))]
    from peft import get_peft_model
    from torch import nn

    adapter = get_peft_model(nn.Sequential(nn.Linear(4, 4)), LoTRConfig(target_modules=["0"], r=2))
    cards.append(str(render_model_card(adapter, CardInfo(), repo_id="me/lotr")))
    for card in cards:
        assert "pip install hf-reduce" not in card and "pypi.org" not in card
        assert f"hf_reduce {hf_reduce.__version__}" in card or "source repository" in card
    assert "source repository" in cards[0] and "trust_remote_code=True" in cards[0]
    assert "source repository" in cards[1]
