import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_reduce.attacks import Attack, adversarial_loss, fgsm, fgsm_random_start, pgd
from hf_reduce.cnn import VGGForImageClassification


@pytest.fixture
def model_and_data(tiny_vgg_config):
    torch.manual_seed(0)
    model = VGGForImageClassification(tiny_vgg_config).eval()
    with torch.no_grad():  # the default head init (std 0.01) makes every input look alike; widen it
        for module in model.classifier:
            if isinstance(module, nn.Linear):
                module.weight.normal_(0, 0.5)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))
    return model, x, y


def _loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(pixel_values=x).logits, y).item()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_the_ball_and_raises_the_loss(model_and_data, norm):
    model, x, y = model_and_data
    eps = 0.1 if norm == "linf" else 0.5
    adv = pgd(
        lambda z: model(pixel_values=z).logits,
        x,
        y,
        eps=eps,
        alpha=eps / 4,
        steps=10,
        norm=norm,
        generator=torch.Generator().manual_seed(0),
    )
    delta = (adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert _loss(model, adv, y) > _loss(model, x, y) + 0.01
    assert not any(p.grad is not None for p in model.parameters())  # gradients w.r.t. the input only


def test_fgsm_is_one_signed_step(model_and_data):
    model, x, y = model_and_data
    x = x.clamp(0.2, 0.8)  # away from the pixel bounds, so no clamping
    adv = fgsm(lambda z: model(pixel_values=z).logits, x, y, eps=0.05)
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(model(pixel_values=xr).logits, y).backward()
    torch.testing.assert_close(adv, x + 0.05 * xr.grad.sign())


def test_fgsm_random_start_and_attack_config(model_and_data):
    model, x, y = model_and_data
    adv = fgsm_random_start(lambda z: model(pixel_values=z).logits, x, y, eps=8 / 255)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():  # attacks work inside no_grad evaluation loops
        adv = Attack("pgd", eps=0.1, steps=3)(lambda z: model(pixel_values=z).logits, x, y)
    assert (adv - x).abs().max() <= 0.1 + 1e-6
    with pytest.raises(ValueError, match="unknown attack 'cw'"):
        Attack("cw")
    with pytest.raises(ValueError, match=r"norm must be one of \['linf', 'l2'\]"):
        Attack("pgd", norm="l1")


def test_adversarial_training_step(model_and_data):
    model, x, y = model_and_data
    model.train()
    loss, _ = adversarial_loss(Attack("fgsm_rs", eps=0.1))(model, {"pixel_values": x, "labels": y})
    loss.backward()
    assert model.training and all(p.grad is not None for p in model.parameters() if p.requires_grad)
