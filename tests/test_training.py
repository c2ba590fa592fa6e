import pytest
import torch
from accelerate.utils import set_seed

from hf_reduce.cnn import VGGForImageClassification
from hf_reduce.training import TrainingArguments, evaluate_model, find_checkpoint, train


class Killed(RuntimeError):
    pass


def _model(config):
    set_seed(0)
    return VGGForImageClassification(config)


def _args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path),
        num_train_epochs=2,
        per_device_train_batch_size=16,
        learning_rate=1e-2,
        disable_tqdm=True,
        logging_steps=0,
        eval_strategy="no",
    )
    base.update(kw)
    return TrainingArguments(**base)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_resume_equals_uninterrupted(tmp_path, tiny_vgg_config, toy_image_dataset, accumulation):
    reference = _model(tiny_vgg_config)
    train(reference, _args(tmp_path / "a", gradient_accumulation_steps=accumulation), toy_image_dataset)

    # Kill mid-epoch, after the checkpoint at step 5 (13 batches per epoch) and a few steps more.
    calls = {"n": 0}

    def killing_loss(model, batch):
        calls["n"] += 1
        if calls["n"] > 8 * accumulation:
            raise Killed
        out = model(**batch)
        return out.loss, out

    args = _args(tmp_path / "b", gradient_accumulation_steps=accumulation, checkpointing_steps=5)
    with pytest.raises(Killed):
        train(_model(tiny_vgg_config), args, toy_image_dataset, loss_fn=killing_loss)
    assert find_checkpoint(args.output_dir).name == "step_5"

    resumed = _model(tiny_vgg_config)
    with torch.no_grad():  # a different start: the checkpoint must overwrite everything
        for p in resumed.parameters():
            p.add_(1.0)
    args.resume_from_checkpoint = "latest"
    out = train(resumed, args, toy_image_dataset)
    assert out.global_step == len(range(0, 200, 16 * accumulation)) * 2
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_training_learns_and_evaluates(tmp_path, tiny_vgg_config, toy_image_dataset):
    model = _model(tiny_vgg_config)
    before = evaluate_model(model, toy_image_dataset, metrics=["accuracy", "f1"])
    out = train(
        model,
        _args(tmp_path, num_train_epochs=8, eval_strategy="epoch", metrics=["accuracy", "f1"]),
        toy_image_dataset,
        toy_image_dataset,
    )
    assert out.metrics["num_samples"] == 200
    assert out.metrics["accuracy"] > max(0.8, before["accuracy"] + 0.2)
    assert 0 < out.metrics["f1"] <= 1
    assert [h["epoch"] for h in out.log_history if "epoch" in h] == list(range(1, 9))


def test_bad_arguments():
    with pytest.raises(ValueError, match="optimizer must be"):
        TrainingArguments(optimizer="lamb")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        find_checkpoint("/nonexistent", "latest")
