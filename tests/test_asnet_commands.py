import json
import subprocess

import pytest

import hf_reduce  # noqa: F401
from hf_reduce.commands.attack import AttackArguments
from hf_reduce.commands.attack import main as attack
from hf_reduce.commands.build_asnet import ASNetArguments
from hf_reduce.commands.build_asnet import main as build
from hf_reduce.commands.train_cnn import main as train_cnn


@pytest.fixture(scope="module")
def trained_vgg(tmp_path_factory):
    out = tmp_path_factory.mktemp("vgg")
    summary = train_cnn(
        ["--dataset", "digits", "--output_dir", str(out), "--max_steps", "40", "--learning_rate", "3e-3",
         "--layers", "8", "M", "16", "M", "16", "--classifier_hidden_sizes", "32", "--disable_tqdm", "true"]
    )  # fmt: skip
    return summary["model_dir"]


def test_build_asnet_reports_layers_and_writes_a_card(trained_vgg, tmp_path):
    summary = build(
        ["--model_name_or_path", trained_vgg, "--dataset", "digits", "--output_dir", str(tmp_path),
         "--max_samples", "600", "--latency_repeats", "2", "--finetune_epochs", "1", "--disable_tqdm", "true"]
    )  # fmt: skip
    report = summary["tables"]["Active neurons per layer"]
    assert [row["layer"] for row in report] == ["features.0", "features.1"]
    active = [row["active neurons"] for row in report]
    assert summary["cut"] == 1 + active.index(min(active))  # the default cut: fewest active neurons
    original, asnet, words = summary["tables"]["Original vs ASNet"]
    assert summary["params ratio"] == round(original["parameters"] / asnet["parameters"], 2)
    assert words["parameters"] == f"{summary['params ratio']:.2f}x fewer" or words["parameters"].endswith(
        "more"
    )
    card = (tmp_path / "model" / "README.md").read_text()
    assert "### Active neurons per layer" in card and f"{summary['pce_terms']} orthonormal Hermite" in card


def test_build_asnet_sparse_phase_counts_its_zeros_in_the_config_and_the_summary(trained_vgg, tmp_path):
    from transformers import AutoModelForImageClassification

    summary = build(
        ["--model_name_or_path", trained_vgg, "--dataset", "digits", "--output_dir", str(tmp_path), "--cut", "1",
         "--rank", "8", "--max_samples", "600", "--latency_repeats", "2", "--sparse_epochs", "1", "--sparse_strength", "50",
         "--sparse_learning_rate", "1e-3", "--disable_tqdm", "true"]
    )  # fmt: skip
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "model")
    recorded = model.config.reduction["sparse_training"]
    nonzero = sum(int(p.count_nonzero()) for p in model.parameters())
    assert recorded["nonzero_after"]["total"] == nonzero < recorded["nonzero_before"]["total"]
    original, asnet, _ = summary["tables"]["Original vs ASNet"]
    assert nonzero < asnet["parameters"]  # dense count unchanged, the zeros are reported beside it
    assert summary["nonzero params ratio"] == round(original["parameters"] / nonzero, 2)
    card = (tmp_path / "model" / "README.md").read_text()
    assert f"| {nonzero:,} non-zero of {asnet['parameters']:,} parameters, stored densely" in card


def test_attack_command_rows(trained_vgg, tmp_path):
    summary = attack(
        ["--model_name_or_path", trained_vgg, "--dataset", "digits", "--output_dir", str(tmp_path),
         "--eps", "1.5", "--seeds", "0", "--fit_samples", "64", "--eval_samples", "100", "--uap_passes", "1"]
    )  # fmt: skip
    rows = summary["tables"]["Universal attacks"]
    assert [r["attack"] for r in rows] == ["active_subspace", "uap", "random"]
    assert all(r["max norm"] <= 1.5 + 1e-5 and r["error"] >= 0 for r in rows)
    # Before: attack took --output_dir (and 20+ training flags) and wrote nothing.
    report = json.loads((tmp_path / "attack_results.json").read_text())
    assert report["rows"] == json.loads(json.dumps(rows)) and report["arguments"]["eps"] == [1.5]
    markdown = (tmp_path / "attack_results.md").read_text()
    assert markdown.count("| active_subspace |") == 1 and trained_vgg in markdown


def test_attack_takes_no_training_flags(tmp_path, capsys):
    from hf_reduce_cli import main

    assert main(["attack", "--output_dir", str(tmp_path), "--learning_rate", "0.1"]) == 2
    assert "--learning_rate" in capsys.readouterr().err
    help_text = subprocess.run(["hf-reduce", "attack", "--help"], capture_output=True, text=True).stdout
    assert "--learning_rate" not in help_text and "--output_dir" in help_text


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown attack\(s\) \['fgsm'\]"):
        AttackArguments(attacks=["fgsm"])
    with pytest.raises(ValueError, match="eps must be positive"):
        AttackArguments(eps=[0.0])
    with pytest.raises(ValueError, match="threshold must lie in"):
        ASNetArguments(threshold=1.0)
    with pytest.raises(ValueError, match="sparse_learning_rate > 0, got 0.0, 0.2 and 0.0"):
        ASNetArguments(sparse_learning_rate=0.0)
