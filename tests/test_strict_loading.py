"""Loading an hf_reduce model whose weights do not match its config is an error naming the keys (#27.5):
a config that changes the structure without changing a weight shape used to load with a warning only. (The
commands refused it before, through ``load_trained_model``: tests/test_cli.py.)"""

import json
import re

import pytest
from helpers import BLOCK_HF_REDUCE, run_python
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForImageClassification

from hf_reduce.asnet import ASNetConfig, ASNetForImageClassification
from hf_reduce.cnn import VGGConfig, VGGForImageClassification, VGGModel
from hf_reduce.maxvol import MaxVolConfig, MaxVolForImageClassification
from hf_reduce.ode import ODEConfig, ODEForImageClassification, ODEModel


def _vgg(**kw):
    config = VGGConfig(layers=[4, "M", 8], num_channels=1, image_size=8, num_labels=3, batch_norm=True, **kw)
    return VGGForImageClassification(config)


def _ode(**kw):
    return ODEForImageClassification(
        ODEConfig(
            channels=[4], ode_stages=[True], image_size=8, num_labels=3, n_steps=2, group_norm_groups=2, **kw
        )
    )


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "build, change, key",
    [(_vgg, {"batch_norm": False}, "running_mean"), (_ode, {"norm_ode": "none"}, "norm")],
    ids=["vgg-batch_norm-off", "ode-norm_ode-none"],
)
def test_a_structure_change_without_a_shape_change_is_refused(tmp_path, build, change, key):
    build().save_pretrained(tmp_path)
    _edit_config(tmp_path, **change)
    with pytest.raises(
        ValueError, match=rf"do not match its config: .*unexpected keys \(e.g. .*{key}"
    ) as error:
        AutoModelForImageClassification.from_pretrained(tmp_path)
    assert str(tmp_path) in str(error.value)


@pytest.mark.parametrize(
    "model",
    [
        lambda: _vgg(),
        lambda: _ode(),
        lambda: MaxVolForImageClassification(MaxVolConfig(num_labels=3)),
        lambda: ASNetForImageClassification(ASNetConfig(num_labels=3)),
    ],
    ids=["vgg", "ode", "maxvol", "asnet"],
)
def test_a_missing_weight_is_refused_naming_it(tmp_path, model):
    model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    dropped = next(k for k in weights if not k.startswith(("classifier.", "pce.", "terms")))
    del weights[dropped]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"1 missing keys \(e.g. \['{re.escape(dropped)}'\]\)"):
        AutoModelForImageClassification.from_pretrained(tmp_path)


@pytest.mark.parametrize("build, base", [(_vgg, VGGModel), (_ode, ODEModel)], ids=["vgg", "ode"])
def test_a_new_head_stays_allowed(tmp_path, build, base):
    model = build()
    model.save_pretrained(tmp_path / "full")
    AutoModel.from_pretrained(tmp_path / "full").save_pretrained(tmp_path / "base")  # the head dropped
    reheaded = type(model).from_pretrained(tmp_path / "base", num_labels=5)  # the head is new
    assert reheaded.config.num_labels == 5
    resized = type(model).from_pretrained(tmp_path / "full", num_labels=7, ignore_mismatched_sizes=True)
    assert resized.config.num_labels == 7


def test_remote_code_refuses_it_too(tmp_path):
    _ode().save_pretrained(tmp_path)
    _edit_config(tmp_path, norm_ode="none")
    code = (
        BLOCK_HF_REDUCE
        + f"""
from transformers import AutoModelForImageClassification
try:
    AutoModelForImageClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
except ValueError as error:
    assert "do not match its config" in str(error), error
    print("refused-ok")
"""
    )
    assert "refused-ok" in run_python(code)


def _blocks(*channels, pool=True):
    return [
        {"in_channels": a, "out_channels": b, "batch_norm": True, "pool": pool}
        for a, b in zip(channels, channels[1:], strict=False)
    ]


def test_a_tampered_asnet_config_is_refused_at_construction_naming_the_fields(tmp_path):
    # Before: a head block removed from config.json loaded, then forward failed with a raw shape error.
    config = ASNetConfig(num_channels=1, image_size=8, head_layers=_blocks(1, 4, 8), neurons=32, rank=2)
    assert ASNetConfig(num_channels=1, image_size=8, head_layers=_blocks(1, 4, 8)).neurons == 32
    ASNetForImageClassification(config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    _edit_config(tmp_path, head_layers=saved["head_layers"][:1])
    with pytest.raises(ValueError, match=r"^neurons=32, but head_layers turn 1x8x8 images into 64 features$"):
        AutoModelForImageClassification.from_pretrained(tmp_path)
    for bad, message in [
        (dict(head_layers=_blocks(1, 4) + _blocks(5, 8)), r"head_layers\[1\] takes 5 channels, the previous gives 4"),
        (dict(head_layers=[{"in_channels": 1, "out_channels": 4}]), r"head_layers\[0\] lacks \['batch_norm', 'pool'\]"),
        (dict(head_layers=_blocks(1, 4, 8), rank=2, kept_terms=7), r"kept_terms must lie in \[1, 6\]"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            ASNetConfig(num_channels=1, image_size=8, **bad)


def test_a_maxvol_config_selecting_more_neurons_than_its_head_makes_is_refused():
    with pytest.raises(
        ValueError, match=r"input_neurons=40 selected of the 32 features that head_layers make"
    ):
        MaxVolConfig(
            num_channels=1, image_size=8, head_layers=_blocks(1, 4, 8), input_neurons=40,
            reduced_layers=[{"in_features": 40, "out_features": 4, "pool": False}],
        )  # fmt: skip
