"""Turn a trained VGG-style classifier into a MaxVol reduced-order model, compare both, save and push it.

accelerate launch scripts/reduce_maxvol.py --model_name_or_path outputs/train-cnn-fashion-mnist/model \\
    --dataset /usr/share/datasets/fashion-mnist --keep_blocks 2 --energy 0.999
hf-reduce reduce-maxvol --model_name_or_path you/vgg-digits --dataset digits --finetune_epochs 2
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from ..distillation import distill_if_better
from ..hub import public_model_id
from ..maxvol import SELECTIONS, reduce_model, sample_tail, search_ranks
from ..profiling import compare_models, cost_ratios, summary_in_words
from ..training import TrainingArguments
from .common import DEFAULT_TRAINED_CNN, DataArguments, HubArguments, command_main
from .reduction import load_original, publish_reduced

logger = logging.getLogger(__name__)


@dataclass
class ReductionArguments:
    """What to reduce and how."""

    _argument_group_name = "model and method: MaxVol reduction"

    model_name_or_path: str = field(
        default=DEFAULT_TRAINED_CNN,
        metadata={
            "help": "The trained VGG-style model (local dir or Hub id; default: where train-cnn saves)."
        },
    )
    keep_blocks: int | None = field(
        default=None, metadata={"help": "Conv blocks kept as they are (default: all but the last three)."}
    )
    rank: list[int] = field(
        default_factory=list,
        metadata={"help": "Subspace dimensions: one, or one per subspace (default: energy)."},
    )
    energy: float = field(
        default=0.99, metadata={"help": "Energy kept by each subspace when no rank is given."}
    )
    max_accuracy_drop: float | None = field(
        default=None,
        metadata={
            "help": "Choose each subspace's rank by validation accuracy instead: the smallest ranks whose "
            "accuracy on the held-out training images (--validation_fraction) stays within this drop "
            "(0.01 = 1 pt) of the original's. The original saw those images in training, so the test "
            "drop may be larger: the comparison table reports it."
        },
    )
    selection: str = field(default="rect_maxvol", metadata={"help": "rect_maxvol or maxvol."})
    rect_tol: float = field(default=1.0, metadata={"help": "rect_maxvol: bound on the rows of C."})
    max_neurons_factor: float = field(
        default=2.0, metadata={"help": "rect_maxvol: at most this x rank neurons."}
    )
    max_samples: int = field(
        default=2048, metadata={"help": "Training images used to estimate the subspaces."}
    )
    finetune_epochs: float = field(
        default=0.0, metadata={"help": "Distil the original into the reduced model (kept only if it helps)."}
    )
    distillation_temperature: float = field(
        default=2.0, metadata={"help": "Softmax temperature of distillation."}
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Training data held out to decide whether fine-tuning helped."}
    )
    latency_repeats: int = field(
        default=30, metadata={"help": "Timed forward passes per model and batch size."}
    )

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; available: {list(SELECTIONS)}")
        if not 0 < self.energy <= 1:
            raise ValueError(f"energy must lie in (0, 1], got {self.energy}")
        if self.max_accuracy_drop is not None:
            if not 0 <= self.max_accuracy_drop < 1:
                raise ValueError(
                    f"max_accuracy_drop is a fraction of accuracy in [0, 1), got {self.max_accuracy_drop}"
                )
            if self.rank:
                raise ValueError(f"--max_accuracy_drop chooses the ranks; drop --rank {self.rank}")


def run(
    data_args: DataArguments,
    args: ReductionArguments,
    training_args: TrainingArguments,
    hub_args: HubArguments,
) -> dict[str, Any]:
    """Reduce + (fine-tune) + compare + save (+ push). Returns a summary; ``summary["model"]`` is the reduced
    model and ``summary["tables"]`` the comparison."""
    accelerator, original, train_data, test_data = load_original(
        args.model_name_or_path, data_args, training_args, "MaxVol"
    )
    keep = args.keep_blocks if args.keep_blocks is not None else max(0, len(original.features) - 3)
    sampler = DataLoader(
        train_data, batch_size=256, shuffle=True, generator=torch.Generator().manual_seed(training_args.seed)
    )
    options = dict(
        selection=args.selection, rect_tol=args.rect_tol, max_neurons_factor=args.max_neurons_factor
    )
    rank, search = (args.rank[0] if len(args.rank) == 1 else args.rank) or None, None
    sample = sample_tail(original, sampler, keep_blocks=keep, max_samples=args.max_samples)
    if args.max_accuracy_drop is not None:
        # The images distillation holds out to judge itself (same split), so the search never fits on them.
        n_val = max(1, int(len(train_data) * args.validation_fraction))
        order = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(training_args.seed))
        validation = Subset(train_data, order[:n_val].tolist())
        search = search_ranks(
            original,
            None,
            validation,
            keep_blocks=keep,
            max_drop=args.max_accuracy_drop,
            accelerator=accelerator,
            sample=sample,
            **options,
        )
        rank = search.ranks
    reduced = reduce_model(
        original,
        None,
        sample=sample,
        keep_blocks=keep,
        rank=rank,
        energy=args.energy,
        **options,
        original_model=public_model_id(args.model_name_or_path) or "a local model",  # no local paths
    )
    if search is not None:
        reduced.config.reduction["rank_search"] = {
            "max_accuracy_drop": args.max_accuracy_drop,
            "validation_accuracy": search.validation_accuracy,
            "original_validation_accuracy": search.original_accuracy,
            "start_ranks": search.start_ranks,
            "models_tried": len(search.trials),
        }
    finetuning: dict[str, Any] = {}
    if args.finetune_epochs > 0:
        finetuning = distill_if_better(
            reduced,
            original,
            train_data,
            training_args,
            accelerator,
            epochs=args.finetune_epochs,
            temperature=args.distillation_temperature,
            validation_fraction=args.validation_fraction,
        )
    rows = compare_models(original, reduced, test_data, accelerator, args.latency_repeats)
    reduced.config.reduction.update(
        {
            "original_accuracy": rows[0]["accuracy"],
            "comparison": rows,
            "dataset": data_args.dataset,
            **finetuning,
        }
    )
    tables = {"Original vs reduced": rows}
    summary: dict[str, Any] = {
        "dataset": data_args.dataset,
        "keep_blocks": keep,
        "ranks": reduced.config.reduction["ranks"],
        "neurons": reduced.config.reduction["selected_neurons"],
        "original_accuracy": rows[0]["accuracy"],
        "test_accuracy": rows[1]["accuracy"],
        "parameters": f"{rows[0]['parameters']:,} -> {rows[1]['parameters']:,}",
        "MACs ratio": cost_ratios(rows[0], rows[1])["MACs"],
        "speed-up b64": cost_ratios(rows[0], rows[1])["latency b64 ms"],
        "in words": summary_in_words(rows[0], rows[1]),
        **finetuning,
    }
    return publish_reduced(
        reduced,
        summary,
        tables,
        accuracy=rows[1]["accuracy"],
        original_model=args.model_name_or_path,
        finetuned=args.finetune_epochs > 0,
        data_args=data_args,
        training_args=training_args,
        hub_args=hub_args,
        accelerator=accelerator,
        default_repo="your-name/maxvol",
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    return command_main(
        (DataArguments, ReductionArguments, TrainingArguments, HubArguments), run, argv, prog, __doc__
    )
