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


def test_card_renders_metrics_into_model_index(tiny_vgg_config):
    model = VGGForImageClassification(tiny_vgg_config)
    info = CardInfo(dataset="digits", metrics={"accuracy": 0.9875}, training_args={"learning_rate": 0.003})
    card = render_model_card(model, info, repo_id="me/vgg-digits")
    meta = yaml.safe_load(str(card).split("---")[1])
    assert meta["library_name"] == "hf_reduce"
    assert meta["datasets"] == ["digits"]
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
    assert ModelCard.load(target / "README.md").data.library_name == "hf_reduce"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left behind


def test_push_pull_round_trip_through_local_hub(tmp_path):
    # huggingface_hub reads HF_ENDPOINT at import time: run the client in a fresh interpreter.
    code = f"""
import os, sys
sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
from hub_server import LocalHub
hub = LocalHub().__enter__()
os.environ.update(HF_ENDPOINT=hub.url, HF_TOKEN="hf_test", HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                  HF_HOME={str(tmp_path / "hf_home")!r})
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
    assert "roundtrip-ok" in run_python(code)
