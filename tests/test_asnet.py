import math
from itertools import product

import numpy as np
import pytest
import torch
from helpers import BLOCK_HF_REDUCE, run_python
from torch import nn
from transformers import AutoModelForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput

import hf_reduce  # noqa: F401
from hf_reduce.asnet import (
    ASNetForImageClassification,
    FrequentDirections,
    active_subspace_attack,
    active_subspaces,
    build_asnet,
    deepfool_uap,
    fit_l1,
    fit_least_squares,
    hermite_features,
    layer_report,
    random_direction,
    total_degree_terms,
    universal_report,
)
from hf_reduce.cnn import VGGConfig, VGGForImageClassification

T64 = torch.float64


class LowRankGradients(nn.Module):
    """``logits = W tanh(A z)``, z = encoder(x): every ∇_z ℓ lies in the row space of A (k dimensions)."""

    def __init__(self, n=30, k=3, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(16, n)
        self.A = nn.Parameter(torch.randn(k, n))
        self.W = nn.Parameter(torch.randn(classes, k))

    def forward(self, pixel_values):
        z = self.encoder(pixel_values.flatten(1))
        return ImageClassifierOutput(logits=torch.tanh(z @ self.A.T) @ self.W.T)


def _loader(n=300, classes=4, seed=0, shape=(1, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)
    return x, y, [{"pixel_values": x[i : i + 50], "labels": y[i : i + 50]} for i in range(0, n, 50)]


@pytest.mark.parametrize("sketch", [512, 8], ids=["exact", "streaming-sketch"])
def test_finds_a_known_active_subspace(sketch):
    model = LowRankGradients()
    _, _, loader = _loader()
    sub = active_subspaces(model, ["encoder"], loader, threshold=1e-9, sketch=sketch)["encoder"]
    assert sub.neurons == 30 and sub.n_active == 3
    assert sub.exact == (sketch == 512)
    # Principal angles between the top-3 directions and the row space of A: cosines all ~1.
    q, _ = torch.linalg.qr(model.A.detach().T.double())
    cosines = torch.linalg.svdvals(q.T @ sub.basis(3))
    assert cosines.min() > 1 - 1e-8, cosines


def test_frequent_directions_error_bound():
    g = torch.Generator().manual_seed(0)
    G = torch.randn(500, 40, generator=g, dtype=T64) @ torch.diag(torch.logspace(0, -2, 40, dtype=T64))
    sketch = FrequentDirections(10)
    for i in range(0, 500, 37):
        sketch.update(G[i : i + 37])
    B = sketch.rows
    error = torch.linalg.matrix_norm(G.T @ G - B.T @ B, ord=2)
    assert sketch.shrunk and error <= (G**2).sum() / 10  # Liberty's bound ‖GᵀG - BᵀB‖ <= ‖G‖²_F / ℓ


def test_hermite_basis_is_orthonormal_under_the_gaussian_measure():
    nodes, weights = np.polynomial.hermite_e.hermegauss(12)  # exact for polynomials of degree <= 23
    weights = weights / math.sqrt(2 * math.pi)
    points = torch.tensor(list(product(nodes, nodes, nodes)), dtype=T64)
    w = torch.tensor([a * b * c for a, b, c in product(weights, weights, weights)], dtype=T64)
    terms = total_degree_terms(3, 4)
    assert len(terms) == math.comb(3 + 4, 4)
    phi = hermite_features(points, terms)
    gram = phi.T @ (w[:, None] * phi)
    torch.testing.assert_close(gram, torch.eye(len(terms), dtype=T64), rtol=0, atol=1e-10)


def test_least_squares_reproduces_a_polynomial():
    x = torch.randn(400, 3, dtype=T64, generator=torch.Generator().manual_seed(0))
    target = torch.stack([x[:, 0] * x[:, 1] - 2 * x[:, 2] ** 2 + 0.5, x[:, 1] ** 3 - x[:, 0]], 1)
    phi = hermite_features(x, total_degree_terms(3, 3))
    fitted = phi @ fit_least_squares(phi, target)
    torch.testing.assert_close(fitted, target, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="10 samples cannot determine 20 coefficients"):
        fit_least_squares(phi[:10], target[:10])


class QuadraticTeacher(VGGForImageClassification):
    """Logits quadratic in ``Bᵀz`` (z: the first block's output): gradients span B's 2 columns."""

    def __init__(self, config):
        super().__init__(config)
        g = torch.Generator().manual_seed(1)
        self.B = nn.Parameter(torch.randn(4 * 8 * 8, 2, generator=g) / 16)
        self.C = nn.Parameter(torch.randn(2, 3, generator=g))
        self.D = nn.Parameter(torch.randn(2, 3, generator=g))

    def forward(self, pixel_values, labels=None, **kwargs):
        p = self.features[0](self.normalize(pixel_values)).flatten(1) @ self.B
        return ImageClassifierOutput(logits=(p**2) @ self.C + p @ self.D)


def _tiny_vgg(cls=VGGForImageClassification, layers=(4, 4)):
    torch.manual_seed(0)
    config = VGGConfig(
        layers=list(layers), num_channels=1, image_size=8, classifier_hidden_sizes=[], num_labels=3
    )
    return cls(config).eval()


def test_asnet_with_full_rank_reproduces_a_polynomial_model():
    teacher = _tiny_vgg(QuadraticTeacher)
    x, _, loader = _loader(600, classes=3, shape=(1, 8, 8))
    asnet = build_asnet(teacher, loader, cut=1, degree=2, threshold=1e-9, ridge=0.0, max_samples=500)
    assert asnet.config.rank == 2 and asnet.config.reduction["active_neurons"] == 2
    with torch.no_grad():
        expected, got = teacher(pixel_values=x[500:]).logits, asnet(pixel_values=x[500:]).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * expected.abs().max().item())


def test_layer_report_and_save_load(tmp_path):
    model = _tiny_vgg(layers=(4, "M", 6))
    x, _, loader = _loader(300, classes=3, shape=(1, 8, 8))
    subs = active_subspaces(model, ["pixel_values", "features.0", "features.1"], loader, threshold=0.05)
    rows = layer_report(subs)
    assert [r["neurons"] for r in rows] == [64, 64, 96]
    assert all(1 <= r["active neurons"] <= r["neurons"] for r in rows)
    asnet = build_asnet(model, loader, cut=1, rank=5, subspace=subs["features.0"])
    asnet.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is ASNetForImageClassification
    with torch.no_grad():
        expected = asnet(pixel_values=x[:8]).logits
        torch.testing.assert_close(reloaded(pixel_values=x[:8]).logits, expected, rtol=0, atol=1e-6)
    torch.save({"x": x[:8], "logits": expected}, tmp_path / "expected.pt")
    code = BLOCK_HF_REDUCE + (
        "import torch\n"
        "from transformers import AutoModelForImageClassification\n"
        f"model = AutoModelForImageClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)\n"
        "assert not type(model).__module__.startswith('hf_reduce')\n"
        f"expected = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        "with torch.no_grad():\n"
        "    out = model.eval()(pixel_values=expected['x']).logits\n"
        "torch.testing.assert_close(out, expected['logits'], rtol=0, atol=1e-6)\n"
        "print('remote-ok')\n"
    )
    assert "remote-ok" in run_python(code)


class Linear2(nn.Module):
    """Two-class linear model ``[0, w·x]``: the loss gradient wrt x is always ±w."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(3)))

    def forward(self, pixel_values):
        s = (pixel_values * self.w).flatten(1).sum(1) - (0.5 * self.w).sum()
        return ImageClassifierOutput(logits=torch.stack([torch.zeros_like(s), s], 1))


@pytest.mark.parametrize("attack", ["active_subspace", "deepfool_uap", "random"])
def test_universal_vectors_respect_the_norm_and_find_the_linear_direction(attack):
    model = Linear2()
    x, _, _ = _loader(200, classes=2)
    labels = model(pixel_values=x).logits.argmax(1)
    eps = 0.5
    if attack == "active_subspace":
        delta = active_subspace_attack(model, x, labels, eps)
    elif attack == "deepfool_uap":
        delta = deepfool_uap(model, x, labels, eps, passes=1)
    else:
        delta = random_direction(x.shape[1:], eps)
    assert delta.shape == x.shape[1:] and delta.norm() <= eps * (1 + 1e-6)
    report = universal_report(model, x, labels, delta)
    assert report["clean_error"] == 0 and 0 <= report["fooling_rate"] <= 1
    if attack != "random":  # the optimal universal direction of a linear model is ±w
        cosine = abs(
            torch.nn.functional.cosine_similarity(delta.flatten(), model.w.detach().flatten(), dim=0)
        )
        assert cosine > 0.99 and report["fooling_rate"] > 0


class LinearMulticlass(nn.Module):
    """``logits = W x + b``: DeepFool's step is exact, the distance to the nearest class boundary."""

    def __init__(self, classes=5):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.W = nn.Parameter(torch.randn(classes, 16, generator=g, dtype=T64))
        self.b = nn.Parameter(torch.randn(classes, generator=g, dtype=T64))

    def forward(self, pixel_values):
        return ImageClassifierOutput(logits=pixel_values.flatten(1) @ self.W.T + self.b)


def test_deepfool_step_reaches_the_nearest_linear_boundary_of_many_classes():
    from hf_reduce.asnet.universal import _deepfool_step

    model = LinearMulticlass()
    x = torch.full((1, 4, 4), 0.5, dtype=T64)
    with torch.no_grad():
        logits = model(pixel_values=x[None]).logits[0]
    label = int(logits.argmax())
    W, f = model.W.detach(), logits - logits[label]
    distances = f.abs() / (W - W[label]).norm(dim=1)
    distances[label] = float("inf")
    nearest = int(distances.argmin())
    step = _deepfool_step(model, x, label, num_classes=5, max_iters=10, overshoot=0.0)
    # One linearised step is exact: along w_nearest - w_label, of length distance (+ DeepFool's 1e-4).
    direction = (W[nearest] - W[label]) / (W[nearest] - W[label]).norm()
    torch.testing.assert_close(step.flatten(), (distances[nearest] + 1e-4) * direction)
    with torch.no_grad():
        assert int(model(pixel_values=(x + step)[None]).logits.argmax()) == nearest


def test_bad_inputs():
    model = _tiny_vgg()
    _, _, loader = _loader(100, classes=3, shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['features.7'\]"):
        active_subspaces(model, ["features.7"], loader)
    with pytest.raises(ValueError, match=r"cut must lie in \[1, 1\]"):
        build_asnet(model, loader, cut=2)
    with pytest.raises(ValueError, match="eps must be positive"):
        random_direction((1, 8, 8), 0.0)
    with pytest.raises(ValueError, match="threshold must lie in"):
        active_subspaces(model, ["features.0"], loader, threshold=1.0)


def test_group_lasso_recovers_the_terms_a_target_uses():
    x = torch.randn(2000, 3, dtype=T64, generator=torch.Generator().manual_seed(5))
    terms = total_degree_terms(3, 2)
    phi = hermite_features(x, terms)
    used = [0, 3, 8]
    target = phi[:, used] @ torch.tensor([[1.0, -2.0], [0.5, 1.5], [-1.0, 0.7]], dtype=T64)
    coefficients = fit_l1(phi, target, l1=1e-3)
    support = (coefficients.abs().amax(1) > 0).nonzero().flatten().tolist()
    assert support == used
    torch.testing.assert_close(phi @ coefficients, target, rtol=0, atol=0.02)


def test_sparse_asnet_keeps_fewer_terms_and_round_trips(tmp_path):
    model = _tiny_vgg(layers=(4, "M", 6))
    x, _, loader = _loader(400, classes=3, shape=(1, 8, 8))
    asnet = build_asnet(model, loader, cut=1, rank=6, l1=0.05)
    kept = asnet.config.kept_terms
    assert kept is not None and kept < asnet.config.full_terms == math.comb(8, 2)
    assert asnet.terms.shape[0] == asnet.pce.in_features == kept
    asnet.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded.terms, asnet.terms)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=x[:8]).logits, asnet(pixel_values=x[:8]).logits)


def test_soft_threshold_is_the_l1_proximal_step_at_each_groups_learning_rate():
    from hf_reduce.asnet.sparse_training import _soft_threshold

    w, b = nn.Parameter(torch.tensor([0.05, -0.3, 0.2, -0.1])), nn.Parameter(torch.tensor([0.05, -0.3]))
    optimizer = torch.optim.SGD([{"params": [w], "l1": 1.0}, {"params": [b], "l1": 0.0}], lr=0.1)
    optimizer.register_step_post_hook(_soft_threshold)
    w.grad, b.grad = torch.zeros(4), torch.zeros(2)
    optimizer.step()
    # argmin_v ‖v - w‖² / 2 + lr λ ‖v‖₁ = sign(w) max(|w| - lr λ, 0); the unpenalised group is untouched.
    torch.testing.assert_close(w.detach(), torch.tensor([0.0, -0.2, 0.1, 0.0]))
    torch.testing.assert_close(b.detach(), torch.tensor([0.05, -0.3]))


def _sparse_case():
    from hf_reduce.data import TensorDictDataset
    from hf_reduce.training import TrainingArguments, make_accelerator

    model = _tiny_vgg(layers=(4, "M", 6))
    x, y, loader = _loader(400, classes=3, shape=(1, 8, 8))
    asnet = build_asnet(model, loader, cut=1, rank=4)
    args = TrainingArguments(output_dir="unused", per_device_train_batch_size=50, logging_steps=0)
    args.disable_tqdm = True
    return asnet, TensorDictDataset(pixel_values=x, labels=y), args, make_accelerator(args, cpu=True)


def test_sparse_training_zeroes_penalised_weights_only_and_reports_the_counts():
    from hf_reduce.asnet.sparse_training import nonzero_parameters, penalised_weights, sparse_train

    asnet, data, args, accelerator = _sparse_case()
    penalised = {id(p) for group in penalised_weights(asnet) for p in group}
    free = {n: p.detach().clone() for n, p in asnet.named_parameters() if id(p) not in penalised}
    assert free  # biases and the pre-model's norm weights
    report = sparse_train(asnet, data, args, accelerator, epochs=1, strength=1e4, learning_rate=1e-3)
    counts = nonzero_parameters(asnet)
    assert report["nonzero_after"] == counts
    # lr λ = 1 (pre-model) and 0.1 (head) is far above every weight here: one step zeroes them all ...
    for m in asnet.pre_model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.weight.count_nonzero() == 0
    assert asnet.projection.weight.count_nonzero() == 0 and asnet.pce.weight.count_nonzero() == 0
    # ... while the unpenalised parameters kept training (the head's bias is all that predicts now).
    assert counts["total"] == sum(int(p.count_nonzero()) for n, p in asnet.named_parameters() if n in free)
    assert counts["total"] < report["nonzero_before"]["total"] <= report["nonzero_before"]["dense_total"]
    assert any(not torch.equal(p, free[n]) for n, p in asnet.named_parameters() if n in free)


def test_sparse_training_at_a_moderate_strength_zeroes_some_weights_not_all():
    from hf_reduce.asnet.sparse_training import penalised_weights, sparse_train

    asnet, data, args, accelerator = _sparse_case()
    none = sparse_train(asnet, data, args, accelerator, epochs=1, strength=0.0, learning_rate=1e-2)
    # No penalty, no zeros: every penalised weight stays non-zero (zero-initialised biases may only fill in).
    assert all(bool(p.all()) for group in penalised_weights(asnet) for p in group)
    assert none["nonzero_after"]["total"] >= none["nonzero_before"]["total"]
    some = sparse_train(asnet, data, args, accelerator, epochs=2, strength=2.0, learning_rate=1e-2)
    after = some["nonzero_after"]
    assert 0 < after["pre_model"] < some["nonzero_before"]["pre_model"]
    with pytest.raises(ValueError, match="strength must be >= 0, got -1"):
        sparse_train(asnet, data, args, accelerator, epochs=1, strength=-1)
    with pytest.raises(
        TypeError, match="needs an ASNetForImageClassification, got VGGForImageClassification"
    ):
        sparse_train(_tiny_vgg(), data, args, accelerator, epochs=1, strength=1)


def test_an_underdetermined_pce_fit_is_refused_not_reported_as_exact():
    model = _tiny_vgg(layers=(4, "M", 6))
    _, _, loader = _loader(400, classes=3, shape=(1, 8, 8))
    # rank 6, degree 2: 28 terms. 20 samples would interpolate (fit error 0, agreement 1: meaningless).
    with pytest.raises(ValueError, match="has 28 terms but only 20 samples were fitted: use more samples"):
        build_asnet(model, loader, cut=1, rank=6, max_samples=20)
    assert build_asnet(model, loader, cut=1, rank=6, max_samples=20, l1=0.05).config.kept_terms is not None
    assert build_asnet(model, loader, cut=1, rank=6, max_samples=29).config.reduction["samples"] == 29
