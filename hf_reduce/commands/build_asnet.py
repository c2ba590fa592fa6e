"""Count the active neurons of every layer of a trained VGG-style classifier, build its ASNet, compare both,
save and push.

accelerate launch scripts/build_asnet.py --model_name_or_path outputs/train-cnn-fashion-mnist/model \\
    --dataset /usr/share/datasets/fashion-mnist --cut 2 --finetune_epochs 2
hf-reduce build-asnet --model_name_or_path you/vgg-digits --dataset digits
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..asnet import active_subspaces, build_asnet, layer_report, plot_spectra, sparse_train
from ..distillation import distill_if_better
from ..hub import public_model_id
from ..profiling import compare_models, cost_ratios, summary_in_words
from ..training import TrainingArguments, evaluate_model
from .common import DEFAULT_TRAINED_CNN, DataArguments, HubArguments, command_main
from .reduction import load_original, publish_reduced

logger = logging.getLogger(__name__)


@dataclass
class ASNetArguments:
    """The original model, where to cut it, and the PCE head."""

    _argument_group_name = "model and method: ASNet"

    model_name_or_path: str = field(
        default=DEFAULT_TRAINED_CNN,
        metadata={
            "help": "The trained VGG-style model (local dir or Hub id; default: where train-cnn saves)."
        },
    )
    cut: int | None = field(
        default=None,
        metadata={
            "help": "Conv blocks kept as the pre-model (default: the block with fewest active neurons)."
        },
    )
    rank: int | None = field(
        default=None, metadata={"help": "Active-subspace dimension (default: active neurons)."}
    )
    max_rank: int = field(default=50, metadata={"help": "Upper bound on the default rank."})
    degree: int = field(default=2, metadata={"help": "Total degree of the Hermite PCE head."})
    threshold: float = field(
        default=0.05, metadata={"help": "Share of gradient energy left out of the active subspace."}
    )
    sketch: int = field(default=256, metadata={"help": "Rows of the streaming covariance sketch."})
    max_samples: int = field(
        default=4096, metadata={"help": "Training images for the subspaces and the fit."}
    )
    ridge: float = field(default=1e-6, metadata={"help": "Ridge penalty of the PCE least squares."})
    l1: float = field(
        default=0.0, metadata={"help": "> 0: sparse PCE head (group lasso), unused terms dropped."}
    )
    finetune_epochs: float = field(
        default=0.0, metadata={"help": "Distillation epochs (kept only if they help)."}
    )
    sparse_epochs: float = field(
        default=0.0,
        metadata={
            "help": "> 0: then the paper's sparse phase, proximal SGD with an L1 penalty, for these epochs."
        },
    )
    sparse_strength: float = field(
        default=0.2, metadata={"help": "L1 strength of the sparse phase (the paper's lambda, 0.2)."}
    )
    sparse_learning_rate: float = field(
        default=1e-4,
        metadata={"help": "Sparse phase: the pre-model's SGD rate; projection and PCE take a tenth."},
    )
    distillation_temperature: float = field(
        default=2.0, metadata={"help": "Softmax temperature of distillation."}
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Training data held out for that decision."}
    )
    plot: str | None = field(
        default=None, metadata={"help": "Save the eigenvalue spectra here (needs matplotlib)."}
    )
    latency_repeats: int = field(
        default=30, metadata={"help": "Timed forward passes per model and batch size."}
    )

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold must lie in [0, 1), got {self.threshold}")
        if self.degree < 0:
            raise ValueError(f"degree must be >= 0, got {self.degree}")
        if self.sparse_epochs < 0 or self.sparse_strength < 0 or not self.sparse_learning_rate > 0:
            raise ValueError(
                "sparse_epochs and sparse_strength must be >= 0 and sparse_learning_rate > 0, got "
                f"{self.sparse_epochs}, {self.sparse_strength} and {self.sparse_learning_rate}"
            )


def run(
    data_args: DataArguments, args: ASNetArguments, training_args: TrainingArguments, hub_args: HubArguments
) -> dict[str, Any]:
    """Active-neuron report + ASNet + (distillation) + comparison + save (+ push)."""
    accelerator, original, train_data, test_data = load_original(
        args.model_name_or_path, data_args, training_args, "ASNet"
    )
    loader = DataLoader(
        train_data, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(training_args.seed)
    )
    layers = [f"features.{i}" for i in range(len(original.features) - 1)]
    subspaces = active_subspaces(
        original, layers, loader, threshold=args.threshold, sketch=args.sketch, max_samples=args.max_samples
    )
    report = layer_report(subspaces)
    if args.plot and accelerator.is_main_process:
        plot_spectra(subspaces, args.plot)
    cut = args.cut
    if cut is None:  # the layer with the fewest active neurons (the earliest on ties)
        cut = 1 + min(range(len(layers)), key=lambda i: subspaces[layers[i]].n_active)
    subspace = subspaces.get(f"features.{cut - 1}")
    rank = args.rank or min(args.max_rank, subspace.n_active if subspace else args.max_rank)
    asnet = build_asnet(
        original,
        loader,
        cut=cut,
        rank=rank,
        degree=args.degree,
        threshold=args.threshold,
        sketch=args.sketch,
        max_samples=args.max_samples,
        ridge=args.ridge,
        l1=args.l1,
        subspace=subspace,
        original_model=public_model_id(args.model_name_or_path) or "a local model",  # no local paths
    )
    finetuning: dict[str, Any] = {}
    if args.finetune_epochs > 0:
        before = evaluate_model(asnet, test_data, accelerator=accelerator, desc="asnet")["accuracy"]
        finetuning = distill_if_better(
            asnet,
            original,
            train_data,
            training_args,
            accelerator,
            epochs=args.finetune_epochs,
            temperature=args.distillation_temperature,
            validation_fraction=args.validation_fraction,
        )
        finetuning["test_accuracy_before_finetuning"] = before
    sparse: dict[str, Any] = {}
    if args.sparse_epochs > 0:
        sparse = sparse_train(
            asnet,
            train_data,
            training_args,
            accelerator,
            epochs=args.sparse_epochs,
            strength=args.sparse_strength,
            learning_rate=args.sparse_learning_rate,
        )
    rows = compare_models(original, asnet, test_data, accelerator, args.latency_repeats)
    asnet.config.reduction.update(
        {"original_accuracy": rows[0]["accuracy"], "dataset": data_args.dataset, **finetuning}
    )
    if sparse:
        asnet.config.reduction["sparse_training"] = sparse
    tables = {"Active neurons per layer": report, "Original vs ASNet": rows}
    summary: dict[str, Any] = {
        "dataset": data_args.dataset,
        "cut": cut,
        "rank": rank,
        "pce_terms": asnet.config.n_terms,
        "original_accuracy": rows[0]["accuracy"],
        "test_accuracy": rows[1]["accuracy"],
        "parameters": f"{rows[0]['parameters']:,} -> {rows[1]['parameters']:,}",
        "params ratio": cost_ratios(rows[0], rows[1])["parameters"],
        "MACs ratio": cost_ratios(rows[0], rows[1])["MACs"],
        "in words": summary_in_words(rows[0], rows[1]),
        **finetuning,
    }
    if sparse:  # the zeros are stored densely: they count in a sparse copy, not in MACs or latency
        nonzero = sparse["nonzero_after"]["total"]
        summary["nonzero parameters"] = f"{rows[0]['parameters']:,} -> {nonzero:,}"
        summary["nonzero params ratio"] = round(rows[0]["parameters"] / max(1, nonzero), 2)
    return publish_reduced(
        asnet,
        summary,
        tables,
        accuracy=rows[1]["accuracy"],
        original_model=args.model_name_or_path,
        finetuned=args.finetune_epochs > 0,
        data_args=data_args,
        training_args=training_args,
        hub_args=hub_args,
        accelerator=accelerator,
        default_repo="your-name/asnet",
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    return command_main(
        (DataArguments, ASNetArguments, TrainingArguments, HubArguments), run, argv, prog, __doc__
    )
