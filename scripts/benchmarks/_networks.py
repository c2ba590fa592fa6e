"""The Fashion-MNIST networks that the ASNet and MaxVol benchmarks reduce, trained once and then reused.

``deep``: a VGG-16-style layer list (2-2-3-3-3 convolutions) with narrow early stages and wide late ones, so
that, as in VGG-19 on CIFAR-10, most parameters and MACs sit in the late blocks the reductions replace. With
28x28 inputs there are four max-pools (28 -> 14 -> 7 -> 3 -> 1): the last stage runs at 1x1.
``reference``: the library's default 437k-parameter VGG (``hf-reduce train-cnn``'s layers) at the settings of
``maxvol.py``.

Each is trained with ``hf-reduce train-cnn``'s own code into ``outputs/networks/<name>`` (ignored by git); its
test accuracy, size and training time are recorded in ``results/networks.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageClassification

import hf_reduce  # noqa: F401
from hf_reduce.commands.common import DataArguments, HubArguments
from hf_reduce.commands.train_cnn import CNNArguments
from hf_reduce.commands.train_cnn import run as train_cnn
from hf_reduce.data import DEBIAN_FASHION_MNIST, TensorDictDataset, image_tensors, load_image_classification
from hf_reduce.profiling import count_macs, count_parameters
from hf_reduce.training import TrainingArguments
from hf_reduce.utils import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results" / "networks.json"

#: name -> (train-cnn architecture, training settings)
NETWORKS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "deep": (
        {
            "layers": ["16", "16", "M", "32", "32", "M", "64", "64", "64", "M"]
            + ["256", "256", "256", "M", "256", "256", "256"],
            "classifier_hidden_sizes": [512, 512],
            "dropout": 0.3,
        },
        {"num_train_epochs": 20, "learning_rate": 2e-3, "weight_decay": 0.05},
    ),
    "reference": (
        {"dropout": 0.3},
        {"num_train_epochs": 12, "learning_rate": 2e-3, "weight_decay": 0.05},
    ),
}


def model_dir(name: str) -> Path:
    return ROOT / "outputs" / "networks" / name / "model"


def trained_network(name: str, dataset: str = DEBIAN_FASHION_MNIST) -> torch.nn.Module:
    """The trained network ``name`` (trained now, seed 0, if ``outputs/networks/<name>`` holds none)."""
    architecture, settings = NETWORKS[name]
    if not (model_dir(name) / "config.json").exists():
        started = time.perf_counter()
        summary = train_cnn(
            DataArguments(dataset=dataset),
            CNNArguments(**architecture),
            TrainingArguments(
                output_dir=str(model_dir(name).parent),
                overwrite_output_dir=True,
                per_device_train_batch_size=128,
                logging_steps=0,
                seed=0,
                **settings,
            ),
            HubArguments(),
        )
        record(name, summary["test_accuracy"], summary["model"], time.perf_counter() - started)
    model = AutoModelForImageClassification.from_pretrained(model_dir(name)).eval()
    expected = [
        item if item == "M" else int(item) for item in architecture.get("layers", model.config.layers)
    ]
    if model.config.layers != expected:  # a stale folder from another preset would be silently wrong
        raise ValueError(
            f"{model_dir(name)} holds layers {model.config.layers}, the {name!r} preset {expected}"
        )
    return model


def record(name: str, accuracy: float, model: torch.nn.Module, seconds: float) -> None:
    done = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    example = torch.zeros(1, model.config.num_channels, model.config.image_size, model.config.image_size)
    done[name] = {
        "test accuracy": accuracy,
        "parameters": count_parameters(model),
        "MACs": count_macs(model, example),
        "layers": model.config.layers,
        "train s": round(seconds, 1),
        "settings": NETWORKS[name][1],
    }
    write_json_atomic(RESULTS, done)


def fashion_mnist(model: torch.nn.Module, dataset: str = DEBIAN_FASHION_MNIST, validation: int = 5000):
    """``(train, validation, test)`` tensors for ``model``'s input. The networks were trained on all 60,000
    training images, so choices (ranks, cuts) are made on the first ``validation`` test images, and only the
    other test images are reported: no reported number saw a choice."""
    c = model.config
    dsd = load_image_classification(dataset)
    train, test = (image_tensors(dsd[s], c.num_channels, c.image_size) for s in ("train", "test"))
    held_out = TensorDictDataset(**{k: t[:validation] for k, t in test.tensors.items()})
    reported = TensorDictDataset(**{k: t[validation:] for k, t in test.tensors.items()})
    return train, held_out, reported
