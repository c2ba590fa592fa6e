"""What the commands that reduce a trained CNN (reduce-maxvol, build-asnet) share: loading the original and
the data, and publishing the reduced model with its comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageClassification

from ..data import image_tensors
from ..hub import CardInfo
from ..training import TrainingArguments, arguments_dict, make_accelerator
from .common import DataArguments, HubArguments, load_trained_model, publish, setup_logging


def load_original(
    model_name_or_path: str, data_args: DataArguments, training_args: TrainingArguments, method: str
) -> tuple[Any, torch.nn.Module, Any, Any]:
    """``(accelerator, original model in eval mode, train tensors, test tensors)``; refuses a model without a
    ``features`` sequence of conv blocks, naming ``method``."""
    accelerator = make_accelerator(training_args)
    setup_logging(accelerator.is_main_process)
    original = load_trained_model(AutoModelForImageClassification, model_name_or_path).to(accelerator.device)
    if not hasattr(original, "features"):
        raise ValueError(
            f"{type(original).__name__} has no `features` sequence of conv blocks: {method} works on VGG-style "
            "classifiers (e.g. hf_reduce's VGGForImageClassification)"
        )
    original.eval()
    c = original.config
    dsd = data_args.load("image")
    train_data, test_data = (image_tensors(dsd[s], c.num_channels, c.image_size) for s in ("train", "test"))
    return accelerator, original, train_data, test_data


def publish_reduced(
    reduced: torch.nn.Module,
    summary: dict[str, Any],
    tables: dict[str, list[dict[str, Any]]],
    *,
    accuracy: float,
    original_model: str,
    finetuned: bool,
    data_args: DataArguments,
    training_args: TrainingArguments,
    hub_args: HubArguments,
    accelerator: Any,
    default_repo: str,
) -> dict[str, Any]:
    """Save (and push) ``reduced`` with a card holding ``tables`` on the main process; complete ``summary``."""
    if accelerator.is_main_process:
        info = CardInfo(
            dataset=data_args.dataset,
            dataset_args={"split_seed": data_args.split_seed},
            metrics={"accuracy": accuracy},
            base_model=None if Path(original_model).exists() else original_model,
            training_args=arguments_dict(training_args) if finetuned else {},
            tables=tables,
        )
        published = publish(reduced, Path(training_args.output_dir) / "model", info, hub_args, default_repo)
        summary["model_dir"] = published.pop("dir")
        summary.update(published)
    accelerator.wait_for_everyone()
    summary["model"] = reduced
    summary["tables"] = tables
    return summary
