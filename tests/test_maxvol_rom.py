import pytest
import torch
from helpers import BLOCK_HF_REDUCE, run_python
from torch import nn
from transformers import AutoModelForImageClassification

import hf_reduce  # noqa: F401
from hf_reduce.cnn import VGGConfig, VGGForImageClassification
from hf_reduce.cnn.modeling_vgg import VGGBlock
from hf_reduce.data import TensorDictDataset
from hf_reduce.maxvol import (
    MaxVolForImageClassification,
    block_parts,
    reduce_model,
    sample_tail,
    search_ranks,
)
from hf_reduce.maxvol.rom import folded_scale_shift, pool_window_rows
from hf_reduce.ode.blocks import ResNetBlock
from hf_reduce.training import evaluate_model


def _vgg(global_pool=False, seed=0):
    torch.manual_seed(seed)
    config = VGGConfig(
        layers=[4, "M", 6, 5, "M"],
        num_channels=1,
        image_size=8,
        classifier_hidden_sizes=[16],
        num_labels=3,
        global_pool=global_pool,
    )
    model = VGGForImageClassification(config).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics and a classifier with O(1) logits
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.3, 0.3)
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.5)
    return model


def _loader(n=600, seed=1):
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return x, [{"pixel_values": x[i : i + 100]} for i in range(0, n, 100)]


@pytest.mark.parametrize("keep_blocks", [0, 1])
@pytest.mark.parametrize("global_pool", [False, True], ids=["flatten", "global-pool"])
def test_full_rank_reduction_equals_the_original(keep_blocks, global_pool):
    model = _vgg(global_pool)
    x, loader = _loader()
    # Subspace sizes: input 1x8x8=64, block outputs 4x4x4=64, 6x4x4=96, 5x2x2=20.
    ranks = [64, 64, 96, 20][keep_blocks:]
    reduced = reduce_model(model, loader, keep_blocks=keep_blocks, rank=ranks, max_samples=600)
    assert reduced.config.reduction["selected_neurons"] == ranks
    with torch.no_grad():
        expected, got = model(x[:64]).logits, reduced(x[:64]).logits
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * expected.abs().max().item())


def test_low_rank_reduction_is_smaller_and_close_on_low_rank_data():
    model = _vgg()
    # Images from a 6-dimensional family: every activation is a function of 6 numbers.
    g = torch.Generator().manual_seed(2)
    basis, codes = torch.rand(6, 64, generator=g), torch.rand(700, 6, generator=g)
    x = (codes @ basis / 6).reshape(-1, 1, 8, 8)
    loader = [{"pixel_values": x[i : i + 100]} for i in range(0, 600, 100)]
    reduced = reduce_model(model, loader, keep_blocks=1, energy=0.99999, max_samples=600)
    sizes = reduced.config.reduction["selected_neurons"]
    assert sizes[0] < 64 and sizes[1] < 96
    with torch.no_grad():
        expected, got = model(x[600:]).logits, reduced(x[600:]).logits  # held-out images of the family
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    n_original = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in reduced.parameters()) < n_original


def _low_rank_family(n=1400, dim=6, seed=2):
    g = torch.Generator().manual_seed(seed)
    basis, codes = torch.rand(dim, 64, generator=g), torch.rand(n, dim, generator=g)
    return (codes @ basis / dim).reshape(-1, 1, 8, 8)


def test_a_sampled_tail_gives_the_same_reduction_as_sampling_again():
    model = _vgg()
    x, loader = _loader()
    sample = sample_tail(model, loader, keep_blocks=1, max_samples=600)
    with pytest.raises(ValueError, match="the sample is of the tail after 1 blocks, not 0"):
        reduce_model(model, None, keep_blocks=0, sample=sample)
    with pytest.raises(ValueError, match="the sample was taken from another model"):
        reduce_model(_vgg(seed=1), None, keep_blocks=1, sample=sample)
    for rank in ([10, 12, 6], None):
        direct = reduce_model(model, loader, keep_blocks=1, rank=rank, energy=0.99, max_samples=600)
        reused = reduce_model(model, None, keep_blocks=1, rank=rank, energy=0.99, sample=sample)
        assert reused.config.reduction == direct.config.reduction
        with torch.no_grad():
            torch.testing.assert_close(reused(x[:50]).logits, direct(x[:50]).logits)


def test_rank_search_keeps_validation_accuracy_within_the_budget_with_fewer_ranks():
    model = _vgg()
    x = _low_rank_family()
    # Labels the original gets right on 100 %, so the drop measures the reduction alone.
    with torch.no_grad():
        labels = model(x).logits.argmax(1)
    loader = [{"pixel_values": x[i : i + 100]} for i in range(0, 600, 100)]
    validation = TensorDictDataset(pixel_values=x[600:1000], labels=labels[600:1000])
    held_out = TensorDictDataset(pixel_values=x[1000:], labels=labels[1000:])
    with pytest.raises(ValueError, match="max_drop is a fraction"):
        search_ranks(model, loader, validation, keep_blocks=1, max_drop=2.0)
    found = search_ranks(model, loader, validation, keep_blocks=1, max_drop=0.02, max_samples=600)
    assert found.original_accuracy == 1.0
    assert found.validation_accuracy >= 1.0 - 0.02
    # The data spans 6 dimensions: the search goes well below the 0.9999-energy ranks it starts from.
    assert all(r <= s for r, s in zip(found.ranks, found.start_ranks, strict=True))
    assert sum(found.ranks) < sum(found.start_ranks) and max(found.ranks) <= 8
    # The reported accuracy is the chosen model's, and the choice carries to data it never saw.
    reduced = reduce_model(model, loader, keep_blocks=1, rank=found.ranks, max_samples=600)
    assert evaluate_model(reduced, validation, disable_tqdm=True)["accuracy"] == found.validation_accuracy
    assert evaluate_model(reduced, held_out, disable_tqdm=True)["accuracy"] >= 0.95
    # The budget is shared by neuron count: the first subspace searched (96 of 180 neurons) may spend 96/180 of
    # it, with the others at their start ranks, and one rank fewer would overspend.
    tried = {tuple(t["ranks"]): t["accuracy"] for t in found.trials}
    first = (found.start_ranks[0], found.ranks[1], found.start_ranks[2])
    assert tried[first] >= 1.0 - 0.02 * 96 / 180
    if found.ranks[1] > 1:
        assert tried[(first[0], first[1] - 1, first[2])] < 1.0 - 0.02 * 96 / 180
    # Bisection is tight for the last subspace searched: one rank fewer misses the final target.
    last = 2  # subspaces of 64, 96, 20 neurons are searched largest first: the 20 last
    if found.ranks[last] > 1:
        fewer = list(found.ranks)
        fewer[last] -= 1
        smaller = reduce_model(model, loader, keep_blocks=1, rank=fewer, max_samples=600)
        assert evaluate_model(smaller, validation, disable_tqdm=True)["accuracy"] < 1.0 - 0.02


def test_batch_norm_folding_is_exact():
    block = _vgg().features[1]
    x = torch.randn(3, 4, 4, 4)
    parts = block_parts(block)
    scale, shift = folded_scale_shift(parts)
    linear = nn.functional.conv2d(x, parts.conv.weight, None, padding=1)
    with torch.no_grad():
        torch.testing.assert_close(
            scale.view(1, -1, 1, 1) * linear + shift.view(1, -1, 1, 1), block.norm(block.conv(x))
        )


def test_pool_windows_are_sampled_exactly():
    pre = torch.randn(2, 3, 7, 5)  # odd sizes: max-pool drops the last row / column
    pooled = nn.functional.max_pool2d(pre, 2, 2).flatten(1)
    selected = torch.tensor([0, 4, 5, 7, 11])
    rows = pool_window_rows(selected, 3, 7, 5)
    assert torch.equal(pre.flatten(1)[:, rows].view(2, -1, 4).amax(-1), pooled[:, selected])


def test_refuses_what_it_cannot_reduce():
    with pytest.raises(ValueError, match="cannot reduce a ResNetBlock"):
        block_parts(ResNetBlock(4, 4, 1, "batch", 2))
    strided = nn.Sequential(nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.ReLU())
    with pytest.raises(ValueError, match=r"cannot reduce a Sequential made of \['Conv2d', 'ReLU'\]"):
        block_parts(strided)
    with pytest.raises(ValueError, match="Tanh"):
        block_parts(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Tanh()))
    assert block_parts(VGGBlock(2, 3, True, True)).pool
    model = _vgg()
    _, loader = _loader(100)
    with pytest.raises(ValueError, match="rank 200 is impossible"):
        reduce_model(model, loader, keep_blocks=1, rank=200, max_samples=100)
    with pytest.raises(ValueError, match=r"keep_blocks must be in \[0, 2\]"):
        reduce_model(model, loader, keep_blocks=3)
    with pytest.raises(ValueError, match="unknown selection 'svd'"):
        reduce_model(model, loader, keep_blocks=1, selection="svd")


def test_save_load_and_remote_code_give_identical_outputs(tmp_path):
    model = _vgg()
    x, loader = _loader()
    reduced = reduce_model(model, loader, keep_blocks=1, energy=0.999, selection="maxvol")
    reduced.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is MaxVolForImageClassification
    assert torch.equal(reloaded.input_index, reduced.input_index)
    with torch.no_grad():
        expected = reduced(x[:8]).logits
        torch.testing.assert_close(reloaded(x[:8]).logits, expected, rtol=0, atol=1e-6)
    torch.save({"x": x[:8], "logits": expected}, tmp_path / "expected.pt")
    code = BLOCK_HF_REDUCE + (
        "import torch\n"
        "from transformers import AutoModelForImageClassification\n"
        f"model = AutoModelForImageClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)\n"
        "assert not type(model).__module__.startswith('hf_reduce')\n"
        f"expected = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        "with torch.no_grad():\n"
        "    torch.testing.assert_close(model.eval()(expected['x']).logits, expected['logits'], rtol=0, atol=1e-6)\n"
        "print('remote-ok')\n"
    )
    assert "remote-ok" in run_python(code)
