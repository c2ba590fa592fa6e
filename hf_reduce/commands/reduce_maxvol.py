"""Turn a trained VGG-style classifier into a MaxVol reduced-order model, compare both, save and push it.

accelerate launch scripts/reduce_maxvol.py --model_name_or_path outputs/vgg/model \\
    --dataset /usr/share/datasets/fashion-mnist --keep_blocks 2 --energy 0.999
hf-reduce reduce-maxvol --model_name_or_path you/vgg-digits --dataset digits --finetune_epochs 2
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from transformers import AutoModelForImageClassification

from ..data import image_tensors
from ..hub import CardInfo
from ..maxvol import SELECTIONS, reduce_model
from ..profiling import count_macs, count_parameters, interleaved_latency
from ..training import TrainingArguments, arguments_dict, evaluate_model, make_accelerator, train
from .common import DataArguments, HubArguments, command_main, publish, setup_logging

logger = logging.getLogger(__name__)


@dataclass
class ReductionArguments:
    """What to reduce and how."""

    model_name_or_path: str = field(
        default="outputs/vgg/model", metadata={"help": "The trained VGG-style model (local dir or Hub id)."}
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


def distillation_loss(teacher: torch.nn.Module, temperature: float) -> Any:
    """Hinton et al.'s loss: ``T² KL(teacher_T || student_T)`` averaged with the label cross-entropy."""

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        outputs = model(**batch)
        with torch.no_grad():
            target = teacher(pixel_values=batch["pixel_values"]).logits
        kl = torch.nn.functional.kl_div(
            torch.log_softmax(outputs.logits / temperature, -1),
            torch.log_softmax(target / temperature, -1),
            log_target=True,
            reduction="batchmean",
        )
        return 0.5 * outputs.loss + 0.5 * temperature**2 * kl, outputs

    return loss_fn


def _finetune(
    reduced: torch.nn.Module,
    original: torch.nn.Module,
    train_data: Any,
    args: ReductionArguments,
    training_args: TrainingArguments,
    accelerator: Any,
) -> dict[str, Any]:
    """Distil on part of the training data; keep the result only if validation accuracy improves."""
    n_val = max(1, int(len(train_data) * args.validation_fraction))
    order = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(training_args.seed))
    fit, val = Subset(train_data, order[n_val:].tolist()), Subset(train_data, order[:n_val].tolist())
    before = evaluate_model(reduced, val, accelerator=accelerator, desc="validation")["accuracy"]
    saved = copy.deepcopy(reduced.state_dict())
    fine_args = replace(training_args, num_train_epochs=args.finetune_epochs, eval_strategy="no")
    original.to(accelerator.device).eval()
    train(
        reduced,
        fine_args,
        fit,
        None,
        loss_fn=distillation_loss(original, args.distillation_temperature),
        accelerator=accelerator,
    )
    reduced = accelerator.unwrap_model(reduced).eval()
    after = evaluate_model(reduced, val, accelerator=accelerator, desc="validation")["accuracy"]
    kept = after > before
    if not kept:
        reduced.load_state_dict(saved)
    logger.info(
        "fine-tuning: validation accuracy %.4f -> %.4f (%s)", before, after, "kept" if kept else "discarded"
    )
    return {"validation_before": before, "validation_after": after, "finetuning_kept": kept}


def compare(
    original: torch.nn.Module, reduced: torch.nn.Module, test_data: Any, accelerator: Any, repeats: int
) -> list[dict[str, Any]]:
    """Accuracy, parameters, MACs and interleaved latency (batch 1 and 64) of both models, one row each."""
    c = original.config
    example = test_data[0]["pixel_values"][None]
    models = {"original": original, "reduced": reduced}
    latency = interleaved_latency(
        models,
        lambda b: torch.rand(b, c.num_channels, c.image_size, c.image_size, device=accelerator.device),
        repeats=repeats,
    )
    rows = []
    for name, model in models.items():
        rows.append(
            {
                "model": name,
                "accuracy": evaluate_model(model, test_data, accelerator=accelerator, desc=name)["accuracy"],
                "parameters": count_parameters(model),
                "MACs": count_macs(model, example.to(accelerator.device)),
                "latency b1 ms": 1000 * latency[name][1],
                "latency b64 ms": 1000 * latency[name][64],
            }
        )
    base, new = rows
    rows.append(
        {
            "model": "original / reduced",
            "accuracy": base["accuracy"] - new["accuracy"],
            "parameters": round(base["parameters"] / new["parameters"], 2),
            "MACs": round(base["MACs"] / new["MACs"], 2),
            "latency b1 ms": round(base["latency b1 ms"] / new["latency b1 ms"], 2),
            "latency b64 ms": round(base["latency b64 ms"] / new["latency b64 ms"], 2),
        }
    )
    return rows


def run(
    data_args: DataArguments,
    args: ReductionArguments,
    training_args: TrainingArguments,
    hub_args: HubArguments,
) -> dict[str, Any]:
    """Reduce + (fine-tune) + compare + save (+ push). Returns a summary; ``summary["model"]`` is the reduced
    model and ``summary["tables"]`` the comparison."""
    accelerator = make_accelerator(training_args)
    setup_logging(accelerator.is_main_process)
    original = AutoModelForImageClassification.from_pretrained(args.model_name_or_path).to(accelerator.device)
    if not hasattr(original, "features"):
        raise ValueError(
            f"{type(original).__name__} has no `features` sequence of conv blocks: MaxVol reduces VGG-style "
            "classifiers (e.g. hf_reduce's VGGForImageClassification)"
        )
    original.eval()
    c = original.config
    dsd = data_args.load("image", seed=training_args.seed)
    train_data, test_data = (image_tensors(dsd[s], c.num_channels, c.image_size) for s in ("train", "test"))
    keep = args.keep_blocks if args.keep_blocks is not None else max(0, len(original.features) - 3)
    sampler = DataLoader(
        train_data, batch_size=256, shuffle=True, generator=torch.Generator().manual_seed(training_args.seed)
    )
    reduced = reduce_model(
        original,
        sampler,
        keep_blocks=keep,
        rank=(args.rank[0] if len(args.rank) == 1 else args.rank) or None,
        energy=args.energy,
        selection=args.selection,
        rect_tol=args.rect_tol,
        max_neurons_factor=args.max_neurons_factor,
        max_samples=args.max_samples,
        original_model=args.model_name_or_path,
    )
    finetuning: dict[str, Any] = {}
    if args.finetune_epochs > 0:
        finetuning = _finetune(reduced, original, train_data, args, training_args, accelerator)
    rows = compare(original, reduced, test_data, accelerator, args.latency_repeats)
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
        "MACs ratio": rows[2]["MACs"],
        "speed-up b64": rows[2]["latency b64 ms"],
        **finetuning,
    }
    if accelerator.is_main_process:
        info = CardInfo(
            dataset=data_args.dataset,
            metrics={"accuracy": rows[1]["accuracy"]},
            base_model=None if Path(args.model_name_or_path).exists() else args.model_name_or_path,
            training_args=arguments_dict(training_args) if args.finetune_epochs > 0 else {},
            tables=tables,
        )
        published = publish(
            reduced, Path(training_args.output_dir) / "model", info, hub_args, "your-name/maxvol"
        )
        summary["model_dir"] = published.pop("dir")
        summary.update(published)
    accelerator.wait_for_everyone()
    summary["model"] = reduced
    summary["tables"] = tables
    return summary


def main(argv: list[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    return command_main(
        (DataArguments, ReductionArguments, TrainingArguments, HubArguments), run, argv, prog, __doc__
    )
