import pytest
import torch
from helpers import BLOCK_HF_REDUCE, run_python
from transformers import AutoConfig, AutoModelForImageClassification

from hf_reduce.cnn import VGGConfig, VGGForImageClassification


def test_forward_shapes_and_hidden_states(tiny_vgg_config):
    model = VGGForImageClassification(tiny_vgg_config).eval()
    out = model(
        pixel_values=torch.rand(5, 1, 8, 8), labels=torch.tensor([0, 1, 2, 0, 1]), output_hidden_states=True
    )
    assert out.logits.shape == (5, 3)
    assert out.loss.ndim == 0
    # One per block, the input not among them (transformers' convention); [4, "M", 8] -> two blocks, the first
    # pooled.
    assert [h.shape[1:] for h in out.hidden_states] == [(4, 4, 4), (8, 4, 4)]


def test_normalisation_is_part_of_the_model():
    config = VGGConfig(
        layers=[2], num_channels=1, image_size=4, num_labels=2, image_mean=[0.25], image_std=[0.5]
    )
    model = VGGForImageClassification(config)
    x = torch.rand(2, 1, 4, 4)
    assert torch.allclose(model.normalize(x), (x - 0.25) / 0.5)


def test_bad_config_and_inputs(tiny_vgg_config):
    with pytest.raises(ValueError, match="positive ints"):
        VGGConfig(layers=[8, "X"])
    with pytest.raises(ValueError, match="too small"):
        VGGConfig(layers=[8, "M", 8, "M", 8, "M"], image_size=4)
    with pytest.raises(ValueError, match="need 3 values"):
        VGGConfig(num_channels=3, image_mean=[0.5])
    with pytest.raises(ValueError, match="must start with a convolution"):
        VGGForImageClassification(VGGConfig(layers=["M", 8]))
    model = VGGForImageClassification(tiny_vgg_config)
    with pytest.raises(ValueError, match=r"expected pixel_values of shape \(batch, 1, 8, 8\)"):
        model(pixel_values=torch.rand(2, 3, 8, 8))


def test_save_load_identical_through_auto_classes(tmp_path, tiny_vgg_config):
    torch.manual_seed(0)
    model = VGGForImageClassification(tiny_vgg_config)
    # Non-trivial batch-norm statistics must survive the round trip too.
    model.train()
    model(pixel_values=torch.rand(16, 1, 8, 8))
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    assert isinstance(AutoConfig.from_pretrained(tmp_path), VGGConfig)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is VGGForImageClassification
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(model(pixel_values=x).logits, reloaded(pixel_values=x).logits)


def test_trust_remote_code_without_hf_reduce(tmp_path, tiny_vgg_config):
    torch.manual_seed(0)
    model = VGGForImageClassification(tiny_vgg_config).eval()
    model.save_pretrained(tmp_path)
    x = torch.rand(3, 1, 8, 8)
    torch.save({"x": x, "logits": model(pixel_values=x).logits.detach()}, tmp_path / "expected.pt")
    code = (
        BLOCK_HF_REDUCE
        + f"""
import torch
from transformers import AutoModelForImageClassification
try:
    import hf_reduce
    raise SystemExit("hf_reduce must not be importable here")
except ImportError:
    pass
model = AutoModelForImageClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
assert not type(model).__module__.startswith("hf_reduce"), type(model).__module__
expected = torch.load({str(tmp_path / "expected.pt")!r})
assert torch.equal(model(pixel_values=expected["x"]).logits, expected["logits"])
print("remote-ok", type(model).__module__)
"""
    )
    assert "remote-ok" in run_python(code)
