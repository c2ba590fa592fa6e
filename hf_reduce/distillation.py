"""Knowledge distillation of an original model into its reduced version, through the shared training loop,
kept only when it helps on held-out data."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import Any

import torch
from torch.utils.data import Subset

from .training import TrainingArguments, evaluate_model, train

logger = logging.getLogger(__name__)


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


def distill_if_better(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    train_data: Any,
    training_args: TrainingArguments,
    accelerator: Any,
    *,
    epochs: float,
    temperature: float = 2.0,
    validation_fraction: float = 0.1,
) -> dict[str, Any]:
    """Distil ``teacher`` into ``student`` (in place) on part of ``train_data`` with the shared training loop;
    keep the result only if accuracy on the held-out rest improves, else restore the student's weights."""
    n_val = max(1, int(len(train_data) * validation_fraction))
    order = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(training_args.seed))
    fit, val = Subset(train_data, order[n_val:].tolist()), Subset(train_data, order[:n_val].tolist())
    before = evaluate_model(student, val, accelerator=accelerator, desc="validation")["accuracy"]
    saved = copy.deepcopy(student.state_dict())
    fine_args = replace(training_args, num_train_epochs=epochs, eval_strategy="no")
    teacher.to(accelerator.device).eval()
    train(
        student,
        fine_args,
        fit,
        None,
        loss_fn=distillation_loss(teacher, temperature),
        accelerator=accelerator,
    )
    student = accelerator.unwrap_model(student).eval()
    after = evaluate_model(student, val, accelerator=accelerator, desc="validation")["accuracy"]
    kept = after > before
    if not kept:
        student.load_state_dict(saved)
    logger.info(
        "fine-tuning: validation accuracy %.4f -> %.4f (%s)", before, after, "kept" if kept else "discarded"
    )
    return {"validation_before": before, "validation_after": after, "finetuning_kept": kept}
