"""Train the reference VGG classifier on any image dataset, evaluate it, save it and optionally push it.

accelerate launch scripts/train_cnn.py --dataset /usr/share/datasets/fashion-mnist --num_train_epochs 10
hf-reduce train-cnn --dataset digits --output_dir outputs/vgg-digits
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cnn import VGGConfig, VGGForImageClassification
from ..hub import CardInfo
from ..training import TrainingArguments, arguments_dict, make_accelerator, train
from .common import (
    DataArguments,
    HubArguments,
    command_main,
    count_parameters,
    prepare_image_training,
    publish,
    setup_logging,
)

logger = logging.getLogger(__name__)


@dataclass
class CNNArguments:
    """The reference CNN's architecture (ignored when starting from --model_name_or_path)."""

    _argument_group_name = "model"

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from this saved/Hub model."}
    )
    layers: list[str] = field(
        default_factory=lambda: ["32", "32", "M", "64", "64", "M", "128", "M"],
        metadata={"help": "VGG cfg list: ints are conv channels, M is a 2x2 max-pool."},
    )
    batch_norm: bool = field(default=True, metadata={"help": "Batch norm after each convolution."})
    classifier_hidden_sizes: list[int] = field(
        default_factory=lambda: [256], metadata={"help": "Hidden FC widths."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout before hidden FC layers."})
    image_size: int | None = field(
        default=None, metadata={"help": "Resize images to this size (default: as is)."}
    )
    preload: bool = field(default=True, metadata={"help": "Decode the whole dataset into memory once."})


def run(
    data_args: DataArguments, cnn_args: CNNArguments, training_args: TrainingArguments, hub_args: HubArguments
) -> dict[str, Any]:
    """Train + evaluate + save (+ push). Returns a summary dict (metrics, params, paths, timings);
    ``summary["model"]`` is the trained model."""
    accelerator = make_accelerator(training_args)
    setup_logging(accelerator.is_main_process)

    def build_config(
        channels: int, size: int, names: list[str], mean: list[float], std: list[float]
    ) -> VGGConfig:
        return VGGConfig(
            layers=[item if item == "M" else int(item) for item in cnn_args.layers],
            batch_norm=cnn_args.batch_norm,
            num_channels=channels,
            image_size=size,
            classifier_hidden_sizes=cnn_args.classifier_hidden_sizes,
            dropout=cnn_args.dropout,
            image_mean=mean,
            image_std=std,
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
        )

    model, train_data, test_data, collate = prepare_image_training(
        data_args,
        training_args.seed,
        VGGForImageClassification,
        cnn_args.model_name_or_path,
        cnn_args.image_size,
        cnn_args.preload,
        build_config,
    )

    result = train(
        model, training_args, train_data, test_data, data_collator=collate, accelerator=accelerator
    )
    summary: dict[str, Any] = {
        "dataset": data_args.dataset,
        "train_samples": len(train_data),
        "test_samples": len(test_data),
        "parameters": count_parameters(model),
        "train_seconds": round(result.train_runtime, 1),
        **{f"test_{k}": v for k, v in result.metrics.items() if k != "num_samples"},
    }
    if accelerator.is_main_process:
        info = CardInfo(
            dataset=data_args.dataset,
            dataset_args={"split_seed": data_args.split_seed},
            metrics={k: v for k, v in result.metrics.items() if k != "num_samples"},
            training_args=arguments_dict(training_args),
        )
        published = publish(
            accelerator.unwrap_model(model),
            Path(training_args.output_dir) / "model",
            info,
            hub_args,
            "your-name/vgg",
        )
        summary["model_dir"] = published.pop("dir")
        summary.update(published)
    accelerator.wait_for_everyone()
    summary["model"] = accelerator.unwrap_model(model)
    return summary


def main(argv: list[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    return command_main(
        (DataArguments, CNNArguments, TrainingArguments, HubArguments), run, argv, prog, __doc__
    )
