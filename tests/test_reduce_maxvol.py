import pytest
import torch
from helpers import assert_no_local_paths

import hf_reduce  # noqa: F401
from hf_reduce.commands.reduce_maxvol import ReductionArguments, main
from hf_reduce.commands.train_cnn import main as train_cnn
from hf_reduce.distillation import distillation_loss
from hf_reduce.ode import ODEConfig, ODEForImageClassification


@pytest.fixture(scope="module")
def trained_vgg(tmp_path_factory):
    out = tmp_path_factory.mktemp("vgg")
    summary = train_cnn(
        ["--dataset", "digits", "--output_dir", str(out), "--max_steps", "40", "--learning_rate", "3e-3",
         "--layers", "8", "M", "16", "M", "16", "--classifier_hidden_sizes", "32", "--disable_tqdm", "true"]
    )  # fmt: skip
    return summary["model_dir"]


def test_reduce_compare_finetune_and_card(trained_vgg, tmp_path):
    summary = main(
        ["--model_name_or_path", trained_vgg, "--dataset", "digits", "--output_dir", str(tmp_path),
         "--keep_blocks", "1", "--energy", "0.95", "--finetune_epochs", "1", "--learning_rate", "1e-3",
         "--latency_repeats", "3", "--disable_tqdm", "true"]
    )  # fmt: skip
    original, reduced, words = summary["tables"]["Original vs reduced"]
    assert summary["MACs ratio"] == round(original["MACs"] / reduced["MACs"], 2) and summary["MACs ratio"] > 1
    # Before: a ratio of 0.86 hid that the reduced model has *more* parameters. Now both counts and words.
    more = reduced["parameters"] > original["parameters"]
    assert words["parameters"].endswith("more" if more else "fewer") and words["MACs"].endswith("fewer")
    assert summary["in words"].startswith(("more" if more else "fewer") + " parameters, fewer MACs")
    assert f"{original['parameters']:,} -> {reduced['parameters']:,}" == summary["parameters"]
    assert reduced["accuracy"] == summary["test_accuracy"] and 0 <= summary["test_accuracy"] <= 1
    assert isinstance(summary["finetuning_kept"], bool)
    assert summary["validation_after"] > summary["validation_before"] or not summary["finetuning_kept"]
    card = (tmp_path / "model" / "README.md").read_text()
    assert "### Original vs reduced" in card and "| selected neurons |" in card
    assert str(summary["neurons"]) in card and "distillation fine-tuning" in card
    # The reduced model came from a local folder: neither its path nor the output folder is published.
    assert_no_local_paths(tmp_path / "model", trained_vgg, tmp_path)


def test_ranks_chosen_by_validation_accuracy(trained_vgg, tmp_path):
    from transformers import AutoConfig

    args = ["--model_name_or_path", trained_vgg, "--dataset", "digits", "--keep_blocks", "1",
            "--latency_repeats", "2", "--disable_tqdm", "true"]  # fmt: skip
    by_energy = main([*args, "--output_dir", str(tmp_path / "energy"), "--energy", "0.9999"])
    searched = main([*args, "--output_dir", str(tmp_path / "search"), "--max_accuracy_drop", "0.02"])
    search = AutoConfig.from_pretrained(tmp_path / "search" / "model").reduction["rank_search"]
    assert search["max_accuracy_drop"] == 0.02 and search["models_tried"] > 1
    assert search["validation_accuracy"] >= search["original_validation_accuracy"] - 0.02
    # The search starts at the 0.9999-energy ranks and only lowers them.
    assert search["start_ranks"] == by_energy["ranks"]
    assert all(r <= s for r, s in zip(searched["ranks"], by_energy["ranks"], strict=True))
    assert sum(searched["ranks"]) < sum(by_energy["ranks"])
    with pytest.raises(ValueError, match=r"--max_accuracy_drop chooses the ranks; drop --rank \[4\]"):
        ReductionArguments(max_accuracy_drop=0.01, rank=[4])
    with pytest.raises(ValueError, match="max_accuracy_drop is a fraction of accuracy in"):
        ReductionArguments(max_accuracy_drop=1.0)


def test_distillation_loss_is_zero_gradient_at_the_teacher():
    torch.manual_seed(0)
    config = ODEConfig(channels=[4], ode_stages=[False], image_size=8, num_labels=3)
    teacher = ODEForImageClassification(config).eval()
    batch = {"pixel_values": torch.rand(4, 1, 8, 8), "labels": torch.tensor([0, 1, 2, 0])}
    loss, outputs = distillation_loss(teacher, 2.0)(teacher, batch)
    # KL(teacher || teacher) = 0, so the loss is half the cross-entropy.
    torch.testing.assert_close(loss, 0.5 * outputs.loss)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown selection 'qr'"):
        ReductionArguments(selection="qr")
    with pytest.raises(ValueError, match="energy must lie in"):
        ReductionArguments(energy=1.5)
    config = ODEConfig(channels=[4], ode_stages=[False], image_size=8, num_labels=10)
    ODEForImageClassification(config).save_pretrained(tmp_path / "ode")
    with pytest.raises(ValueError, match="has no `features` sequence of conv blocks"):
        main(
            [
                "--model_name_or_path",
                str(tmp_path / "ode"),
                "--dataset",
                "digits",
                "--output_dir",
                str(tmp_path),
            ]
        )
