"""The image families through transformers' standard entry points: pipeline (in-process and as remote code,
from a folder and from a push), AutoModel + feature extraction, hidden states, problem_type, re-heading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import BLOCK_HF_REDUCE, run_python
from PIL import Image
from torch.utils.data import DataLoader
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

import hf_reduce
from hf_reduce import CardInfo, save_for_hub
from hf_reduce.data import TensorDictDataset

FAMILIES = ["vgg", "ode", "maxvol", "asnet"]
LABELS = {0: "left", 1: "middle", 2: "right"}


def _data() -> TensorDictDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(120, 1, 8, 8, generator=g)
    labels = torch.stack([x[:, 0, :, c * 3 : c * 3 + 2].mean((1, 2)) for c in range(3)], 1).argmax(1)
    return TensorDictDataset(pixel_values=x, labels=labels)


def _vgg() -> hf_reduce.VGGForImageClassification:
    torch.manual_seed(0)
    config = hf_reduce.VGGConfig(
        layers=[4, "M", 8], num_channels=1, image_size=8, num_labels=3, id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()}, classifier_hidden_sizes=[16],
    )  # fmt: skip
    return hf_reduce.VGGForImageClassification(config).eval()


def build(family: str):
    """A small model of each family (MaxVol and ASNet reduced from the VGG, as users make them)."""
    if family == "vgg":
        return _vgg()
    if family == "ode":
        torch.manual_seed(0)
        config = hf_reduce.ODEConfig.from_preset(
            "odenet_mnist",
            num_labels=3,
            image_size=8,
            id2label=LABELS,
            label2id={v: k for k, v in LABELS.items()},
        )
        return hf_reduce.ODEForImageClassification(config).eval()
    loader = DataLoader(_data(), batch_size=40)
    if family == "maxvol":
        return hf_reduce.reduce_model(_vgg(), loader, keep_blocks=1, energy=0.99, max_samples=120).eval()
    return hf_reduce.build_asnet(_vgg(), loader, cut=1, rank=6, degree=2, max_samples=120).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family saved as the commands save it (save_for_hub): weights, code, processor, card."""
    root = tmp_path_factory.mktemp("families")
    out = {}
    for family in FAMILIES:
        model = build(family)
        out[family] = (model, save_for_hub(model, root / family, CardInfo(dataset="digits")))
    return out


def _images(tmp_path):
    rng = np.random.default_rng(0)
    grey = Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8))
    path = tmp_path / "digit.png"
    grey.save(path)
    return [grey, np.asarray(grey), str(path)]


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_in_process_on_pil_numpy_and_paths(family, saved, tmp_path):
    model, folder = saved[family]
    assert (folder / "preprocessor_config.json").exists()
    classify = pipeline("image-classification", model=str(folder))
    for image in _images(tmp_path):
        result = classify(image, top_k=3)
        assert sorted(r["label"] for r in result) == sorted(LABELS.values())
        # The same scores as the model on the processor's pixels.
        pixels = AutoImageProcessor.from_pretrained(folder)(image)["pixel_values"]
        probabilities = model(pixel_values=pixels).logits.softmax(-1)[0]
        best = int(probabilities.argmax())
        assert result[0]["label"] == LABELS[best]
        assert abs(result[0]["score"] - float(probabilities[best])) < 1e-5


def test_pipeline_and_feature_extraction_as_remote_code(saved):
    # A machine without hf_reduce: every family's processor, classifier and base model come from the folder.
    folders = {family: str(folder) for family, (_, folder) in saved.items()}
    code = (
        BLOCK_HF_REDUCE
        + f"""
import json, numpy as np
from PIL import Image
from transformers import pipeline
folders = {folders!r}
image = Image.fromarray((np.random.default_rng(0).random((20, 20)) * 255).astype(np.uint8))
out = {{}}
for family, folder in folders.items():
    labels = [r["label"] for r in pipeline("image-classification", model=folder, trust_remote_code=True)(image)]
    features = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)(image, pool=True, return_tensors=True)
    out[family] = [sorted(labels), list(features.shape)]
print(json.dumps(out))
"""
    )
    result = json.loads(run_python(code).strip().splitlines()[-1])
    for family in FAMILIES:
        labels, shape = result[family]
        assert labels == sorted(LABELS.values()), family
        assert shape[0] == 1, (family, shape)


@pytest.mark.parametrize("family", FAMILIES)
def test_automodel_features_and_hidden_states(family, saved):
    model, folder = saved[family]
    base = AutoModel.from_pretrained(folder)
    assert type(base).__name__.endswith("Model") and not hasattr(base, "classifier")
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        features = base(pixel_values=x, output_hidden_states=True)
        full = model(pixel_values=x, output_hidden_states=True)
    assert features.pooler_output.shape[0] == 2
    hidden = full.hidden_states
    assert hidden is not None and len(hidden) >= 2 and all(h.shape[0] == 2 for h in hidden)
    for a, b in zip(features.hidden_states, hidden, strict=True):
        torch.testing.assert_close(a, b)
    assert model(pixel_values=x).hidden_states is None  # only when asked
    extract = pipeline("image-feature-extraction", model=str(folder))
    embedding = extract(Image.fromarray(np.zeros((8, 8), np.uint8)), pool=True, return_tensors=True)
    assert embedding.shape[-1] == features.pooler_output.shape[-1]


@pytest.mark.parametrize("family", FAMILIES)
def test_problem_type_is_honoured(family):
    model = build(family)
    x = torch.rand(4, 1, 8, 8)
    logits = model(pixel_values=x).logits
    single = torch.tensor([0, 2, 1, 0])
    torch.testing.assert_close(
        model(pixel_values=x, labels=single).loss, torch.nn.functional.cross_entropy(logits, single)
    )
    model.config.problem_type = "multi_label_classification"
    multi = torch.tensor([[1.0, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]])
    torch.testing.assert_close(
        model(pixel_values=x, labels=multi).loss,
        torch.nn.functional.binary_cross_entropy_with_logits(logits, multi),
    )
    model.config.problem_type = "regression"
    target = torch.randn(4, 3)
    torch.testing.assert_close(
        model(pixel_values=x, labels=target).loss, torch.nn.functional.mse_loss(logits, target)
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_reheading_gives_small_finite_weights(family, saved):
    _, folder = saved[family]
    model = AutoModelForImageClassification.from_pretrained(
        folder, num_labels=5, ignore_mismatched_sizes=True
    )
    head = [p for n, p in model.named_parameters() if n.startswith(("classifier", "pce"))]
    assert head and all(torch.isfinite(p).all() for p in head)
    assert max(p.abs().max().item() for p in head) < 1.0  # before: NaN (MaxVol), 1.2e10 (ASNet)
    assert model(pixel_values=torch.rand(2, 1, 8, 8)).logits.shape == (2, 5)


def test_processor_converts_modes_and_warns_once_when_dropping_colour():
    grey_model = hf_reduce.ReduceImageProcessor(num_channels=1, image_size=8)
    colour = Image.fromarray(np.random.default_rng(1).integers(0, 255, (10, 10, 3), dtype=np.uint8))
    with pytest.warns(UserWarning, match="colour"):
        out = grey_model([colour, colour])["pixel_values"]
    assert out.shape == (2, 1, 8, 8) and out.min() >= 0 and out.max() <= 1
    rgb_model = hf_reduce.ReduceImageProcessor(num_channels=3, image_size=8)
    assert rgb_model(Image.new("L", (8, 8), 128))["pixel_values"].shape == (1, 3, 8, 8)
    # Matches the training conversion exactly.
    from hf_reduce.data import ImageCollator

    expected = ImageCollator(1, 8).to_tensor(colour)
    torch.testing.assert_close(grey_model(colour)["pixel_values"][0], expected, rtol=0, atol=0)


def test_pipeline_on_a_saved_folder_asks_nothing_and_runs_no_folder_code(saved, tmp_path):
    # Before: with hf_reduce installed, AutoVideoProcessor derived a "ReduceVideoProcessor" from the processor's
    # auto_map and asked "Do you wish to run the custom code? [y/N]"; answering y ran the folder's
    # image_processing.py. Here stdin answers y (and is no TTY), and that file plants a marker.
    import shutil
    import subprocess
    import sys

    marker = tmp_path / "folder-code-ran"
    folders = {}
    for family, (_, folder) in saved.items():
        copy = shutil.copytree(folder, tmp_path / family)
        planted = copy / "image_processing.py"
        planted.write_text(f"open({str(marker)!r}, 'w').close()\n" + planted.read_text())
        folders[family] = str(copy)
    code = f"""
import numpy as np
from PIL import Image
from transformers import pipeline
import hf_reduce
image = Image.fromarray((np.random.default_rng(0).random((20, 20)) * 255).astype(np.uint8))
for folder in {list(folders.values())!r}:
    for task in ("image-classification", "image-feature-extraction"):
        result = pipeline(task, model=folder)(image)
        assert type(pipeline(task, model=folder).image_processor).__module__ == "hf_reduce.image_processing"
print("pipelines-ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], input="y\ny\ny\ny\ny\ny\ny\ny\n", capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "pipelines-ok" in proc.stdout, output
    assert "custom code" not in output
    assert not marker.exists()


def test_every_family_builds_on_the_meta_device_and_then_loads(saved, tmp_path):
    # A fresh interpreter: after any CPU build in the same process the ODE grid was cached and this passed.
    folders = {family: str(folder) for family, (_, folder) in saved.items()}
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = {family: model(pixel_values=x).logits.detach() for family, (model, _) in saved.items()}
    torch.save({"x": x, "expected": expected}, tmp_path / "expected.pt")
    code = f"""
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForImageClassification
import hf_reduce
data = torch.load({str(tmp_path / "expected.pt")!r})
for family, folder in {folders!r}.items():
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForImageClassification.from_config(config)
    assert next(model.parameters()).is_meta
    model.to_empty(device="cpu")
    model.load_state_dict(load_file(folder + "/model.safetensors"))
    torch.testing.assert_close(model.eval()(pixel_values=data["x"]).logits, data["expected"][family])
    big = AutoModelForImageClassification.from_pretrained(folder, device_map="cpu").eval()
    torch.testing.assert_close(big(pixel_values=data["x"]).logits, data["expected"][family])
print("meta-ok")
"""
    assert "meta-ok" in run_python(code)


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_start_at_the_stem_as_in_transformers(family, saved):
    # transformers' vision models (ResNet, ConvNeXt, ...) and hf_reduce's ODE start hidden_states with the
    # stem's output; VGG, MaxVol and ASNet started with the input pixels.
    model, _ = saved[family]
    x = torch.rand(2, 1, 8, 8)
    stem = {"vgg": "features", "ode": "stem", "maxvol": "head", "asnet": "pre_model"}[family]
    first = getattr(model, stem)
    first = first[0] if isinstance(first, torch.nn.ModuleList) else first
    with torch.no_grad():
        hidden = model(pixel_values=x, output_hidden_states=True).hidden_states
        torch.testing.assert_close(hidden[0], first(model.normalize(x)))


@pytest.mark.parametrize("family", FAMILIES)
def test_configs_survive_transformers_zero_init_of_std_keys(family, saved):
    # transformers' ModelTesterMixin (_config_zero_init) sets every config key containing "_range" or "_std"
    # to 1e-10; image_std was one, so the model divided its pixels by 1e-10.
    import copy

    model, folder = saved[family]
    zeroed = copy.deepcopy(model.config)
    for key in list(zeroed.__dict__):
        if "_range" in key or "_std" in key or "initializer_factor" in key or "layer_scale" in key:
            setattr(zeroed, key, 1e-10)
    assert zeroed.image_std == model.config.image_std
    rebuilt = type(model)(zeroed).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(rebuilt(pixel_values=x).logits, model(pixel_values=x).logits)
    # The statistics are also where transformers keeps them: in the image processor (applied by the model).
    processor = AutoImageProcessor.from_pretrained(folder)
    assert (processor.image_mean, processor.image_std, processor.do_normalize) == (
        model.config.image_mean, model.config.image_std, False
    )  # fmt: skip
    saved_config = json.loads((folder / "config.json").read_text())
    assert not any("_std" in key for key in saved_config), sorted(saved_config)
