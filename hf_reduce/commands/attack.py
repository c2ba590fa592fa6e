"""Universal adversarial perturbations against an image classifier: the active-subspace attack (Cui et al.,
2020), the classic DeepFool-based UAP and a random direction, at equal ℓ2 norms and several seeds.

Each vector is computed on training images and evaluated on held-out test images. The table is also written
to ``--output_dir`` as ``attack_results.json`` and ``attack_results.md``.

accelerate launch scripts/attack.py --model_name_or_path outputs/train-cnn-fashion-mnist/model --dataset /usr/share/datasets/fashion-mnist
hf-reduce attack --model_name_or_path you/vgg-digits --dataset digits --eps 1 2 3
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageClassification

from ..asnet import active_subspace_attack, deepfool_uap, random_direction, universal_report
from ..hub import markdown_table
from ..training import TrainingArguments, make_accelerator
from ..utils import write_json_atomic, write_text_atomic
from .common import (
    DEFAULT_TRAINED_CNN,
    DataArguments,
    command_main,
    load_trained_model,
    setup_logging,
)

logger = logging.getLogger(__name__)

ATTACKS = ("active_subspace", "uap", "random")


@dataclass
class ReportArguments:
    """Where the attack report goes (the attack trains nothing, so it takes no training arguments)."""

    _argument_group_name = "output"

    output_dir: str = field(
        default="outputs/attack-<dataset>",
        metadata={"help": "Folder of attack_results.json / .md (default: outputs/attack-<dataset>)."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace another run's report in --output_dir."}
    )


@dataclass
class AttackArguments:
    """Which model, which attacks, which norms."""

    _argument_group_name = "model and attacks"

    model_name_or_path: str = field(
        default=DEFAULT_TRAINED_CNN,
        metadata={"help": "Local dir or Hub id (default: where train-cnn saves)."},
    )
    attacks: list[str] = field(
        default_factory=lambda: list(ATTACKS), metadata={"help": "Any of " + ", ".join(ATTACKS)}
    )
    eps: list[float] = field(
        default_factory=lambda: [2.0, 4.0, 6.0], metadata={"help": "ℓ2 norms of the vectors."}
    )
    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds (data subset, init)."}
    )
    fit_samples: int = field(default=500, metadata={"help": "Training images each vector is computed on."})
    eval_samples: int | None = field(default=None, metadata={"help": "Held-out test images (default: all)."})
    uap_passes: int = field(default=2, metadata={"help": "Passes of the DeepFool UAP over its images."})
    as_iterations: int = field(default=5, metadata={"help": "Iterations of the active-subspace attack."})

    def __post_init__(self) -> None:
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise ValueError(f"unknown attack(s) {unknown}; available: {list(ATTACKS)}")
        if any(e <= 0 for e in self.eps):
            raise ValueError(f"eps must be positive, got {self.eps}")


def universal_vector(
    name: str,
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    seed: int,
    args: AttackArguments,
) -> torch.Tensor:
    if name == "active_subspace":
        return active_subspace_attack(model, images, labels, eps, iterations=args.as_iterations)
    if name == "uap":
        return deepfool_uap(model, images, labels, eps, passes=args.uap_passes, seed=seed)
    return random_direction(images.shape[1:], eps, seed=seed).to(images.device)


def run(data_args: DataArguments, args: AttackArguments, report_args: ReportArguments) -> dict[str, Any]:
    """One row per (eps, attack): error and fooling rate on held-out images, mean ± std over seeds."""
    accelerator = make_accelerator(TrainingArguments(output_dir=report_args.output_dir))
    setup_logging(accelerator.is_main_process)
    model = (
        load_trained_model(AutoModelForImageClassification, args.model_name_or_path)
        .to(accelerator.device)
        .eval()
    )
    c = model.config
    from ..data import image_tensors

    dsd = data_args.load("image")
    train, test = (image_tensors(dsd[s], c.num_channels, c.image_size).tensors for s in ("train", "test"))
    n_eval = args.eval_samples or len(test["labels"])
    test_x, test_y = (
        test["pixel_values"][:n_eval].to(accelerator.device),
        test["labels"][:n_eval].to(accelerator.device),
    )
    rows = []
    for eps in args.eps:
        for name in args.attacks:
            results = []
            for seed in args.seeds:
                pick = torch.randperm(len(train["labels"]), generator=torch.Generator().manual_seed(seed))[
                    : args.fit_samples
                ]
                x, y = (
                    train["pixel_values"][pick].to(accelerator.device),
                    train["labels"][pick].to(accelerator.device),
                )
                delta = universal_vector(name, model, x, y, eps, seed, args)
                results.append(universal_report(model, test_x, test_y, delta))
            errors = [r["error"] for r in results]
            fooling = [r["fooling_rate"] for r in results]
            rows.append(
                {
                    "eps": eps,
                    "attack": name,
                    "error": statistics.mean(errors),
                    "error std": statistics.pstdev(errors),
                    "fooling rate": statistics.mean(fooling),
                    "clean error": results[0]["clean_error"],
                    "max norm": max(r["norm"] for r in results),
                }
            )
            logger.debug("eps %g %s: error %.4f", eps, name, rows[-1]["error"])
    if accelerator.is_main_process:
        _write_report(Path(report_args.output_dir), data_args, args, rows, n_eval)
    return {
        "model": model,
        "tables": {"Universal attacks": rows},
        "eval_samples": n_eval,
        "report": str(Path(report_args.output_dir) / "attack_results.json"),
    }


def _write_report(
    folder: Path, data_args: DataArguments, args: AttackArguments, rows: list, n_eval: int
) -> None:
    """The table as JSON (with what produced it) and as Markdown, each written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    arguments = {**asdict(data_args), **asdict(args)}
    write_json_atomic(
        folder / "attack_results.json", {"arguments": arguments, "eval_samples": n_eval, "rows": rows}
    )
    title = f"Universal attacks on `{args.model_name_or_path}` ({data_args.dataset}, {n_eval} test images)"
    write_text_atomic(folder / "attack_results.md", f"# {title}\n\n{markdown_table(rows)}\n")


def main(argv: list[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    return command_main((DataArguments, AttackArguments, ReportArguments), run, argv, prog, __doc__)
