import pytest
import torch
from accelerate.utils import set_seed

from hf_reduce.cnn import VGGForImageClassification
from hf_reduce.runs import MANIFEST_FILE, read_json, write_manifest
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
    with pytest.raises(FileNotFoundError, match="no intact checkpoint"):
        find_checkpoint("/nonexistent", "latest")


def test_divergence_stops_training_naming_step_and_learning_rate(
    tmp_path, tiny_vgg_config, toy_image_dataset
):
    # Before: at a huge learning rate the loss went NaN, the run finished and saved NaN weights.
    from hf_reduce.training import NonFiniteError

    model = _model(tiny_vgg_config)
    args = _args(tmp_path, learning_rate=1e12, optimizer="sgd", lr_scheduler_type="constant")
    with pytest.raises(NonFiniteError, match=r"non-finite .* at optimizer step \d+, .* learning rate 1e\+12"):
        train(model, args, toy_image_dataset)


def test_one_nan_pixel_is_named(tmp_path, tiny_vgg_config, toy_image_dataset):
    from hf_reduce.data import TensorDictDataset
    from hf_reduce.training import NonFiniteError

    pixels = toy_image_dataset.tensors["pixel_values"].clone()
    pixels[0, 0, 3, 3] = float("nan")  # the sampler shuffles: the report names the row inside its batch
    data = TensorDictDataset(pixel_values=pixels, labels=toy_image_dataset.tensors["labels"])
    with pytest.raises(NonFiniteError, match="'pixel_values' holds non-finite values"):
        train(_model(tiny_vgg_config), _args(tmp_path), data)


def test_non_finite_weights_are_never_saved(tmp_path, tiny_vgg_config):
    from hf_reduce.hub import CardInfo, save_for_hub

    model = _model(tiny_vgg_config)
    with torch.no_grad():
        model.classifier[-1].weight[0, 0] = float("inf")
    with pytest.raises(ArithmeticError, match="non-finite weights: 1 tensors"):
        save_for_hub(model, tmp_path / "model", CardInfo())
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"save_total_limit": 0}, "save_total_limit must be >= 1, got 0"),
        (
            {"num_train_epochs": -1},
            "num_train_epochs must be > 0 when max_steps <= 0, got num_train_epochs=-1",
        ),
        ({"metrics": ["acc"]}, r"metrics must be among \['accuracy', 'f1'\], got \['acc'\]"),
        ({"learning_rate": 0}, "learning_rate must be a positive number, got 0"),
        ({"lr_scheduler_type": "cosin"}, "lr_scheduler_type must be one of .*'cosine'"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be >= 1, got 0"),
        ({"warmup_ratio": 1.5}, r"warmup_ratio must be in \[0, 1\), got 1.5"),
    ],
)
def test_every_training_argument_is_validated(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **bad)


@pytest.mark.parametrize("max_steps", [26, 30], ids=["final-step-ends-an-epoch", "final-step-mid-epoch"])
def test_resuming_a_finished_run_reports_what_it_reported(
    tmp_path, tiny_vgg_config, toy_image_dataset, max_steps
):
    # Before: at an epoch's end nothing was evaluated ("No metrics were recorded" republished); mid-epoch one
    # more optimizer step ran (step 31 of 30).
    args = _args(tmp_path, max_steps=max_steps, checkpointing_steps=max_steps, eval_strategy="epoch")
    first = train(_model(tiny_vgg_config), args, toy_image_dataset, toy_image_dataset)
    finished = _model(tiny_vgg_config)
    args.resume_from_checkpoint = "latest"
    again = train(finished, args, toy_image_dataset, toy_image_dataset)
    assert again.global_step == first.global_step == max_steps
    assert again.metrics == first.metrics and again.metrics["num_samples"] == 200
    reference = _model(tiny_vgg_config)
    train(reference, _args(tmp_path / "ref", max_steps=max_steps), toy_image_dataset)
    for a, b in zip(reference.state_dict().values(), finished.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_unpickles_nothing_and_refuses_missing_state(tmp_path, tiny_vgg_config, toy_image_dataset):
    # Before: the LR scheduler went through accelerate's custom-object pickle, which load_state unpickled
    # unrestricted (a planted payload ran); an unreadable RNG file was skipped with an INFO line.
    import pickle

    args = _args(tmp_path, max_steps=6, checkpointing_steps=3)
    train(_model(tiny_vgg_config), args, toy_image_dataset)
    checkpoint = find_checkpoint(args.output_dir)
    assert not list(checkpoint.glob("custom_checkpoint_*"))
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    planted = checkpoint / "custom_checkpoint_0.pkl"
    planted.write_bytes(pickle.dumps(Payload()))
    args.resume_from_checkpoint = str(checkpoint)
    with pytest.raises(ValueError, match="custom_checkpoint_0.pkl is not in its manifest"):
        train(_model(tiny_vgg_config), args, toy_image_dataset)
    # Past the manifest (an operator who re-signs the folder), the restricted loader still refuses the pickle.
    write_manifest(checkpoint, read_json(checkpoint / MANIFEST_FILE, "manifest")["run"])
    with pytest.raises(ValueError, match=r"restricted loader refuses \S+custom_checkpoint_0.pkl"):
        train(_model(tiny_vgg_config), args, toy_image_dataset)
    assert not marker.exists()  # and nothing was unpickled
    planted.unlink()
    write_manifest(checkpoint, read_json(checkpoint / MANIFEST_FILE, "manifest")["run"])
    train(_model(tiny_vgg_config), args, toy_image_dataset)  # a clean checkpoint resumes
    (checkpoint / "rng_state_0.json").write_text("{not json")
    write_manifest(checkpoint, read_json(checkpoint / MANIFEST_FILE, "manifest")["run"])
    with pytest.raises(ValueError, match="random-generator state rng_state_0.json is missing or unreadable"):
        train(_model(tiny_vgg_config), args, toy_image_dataset)
