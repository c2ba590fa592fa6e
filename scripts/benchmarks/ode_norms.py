"""Normalisation in neural ODEs (Gusak et al., 2020) and meta-solver robustness, side by side in one run.

Part 1: an ODENet per normalisation of the ODE function (BN, LN, GN, WN, SN, none) and a ResNet of the same
layout, all trained with the same budget: test accuracy, parameters, training time.
Part 2: the LN ODENet trained with a fixed solver and with solver smoothing: accuracy across test-time
solvers (the solver-overfitting criterion) and FGSM / PGD robust accuracy per solver member.

    python scripts/benchmarks/ode_norms.py                       # Fashion-MNIST (Debian files), CPU budget
    python scripts/benchmarks/ode_norms.py --epochs 1 --max_train_samples 5000 --parts 1   # smoke run
    accelerate launch scripts/benchmarks/ode_norms.py --dataset cifar10 --preset odenet10_cifar \\
        --resnet_preset resnet10_cifar --epochs 100 --batch_size 128   # the paper's CIFAR-10 setting (GPU)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import hf_reduce  # noqa: F401
from hf_reduce.commands.common import DataArguments, HubArguments, channel_stats, format_table
from hf_reduce.commands.train_ode import MetaSolverArguments, ODEModelArguments
from hf_reduce.commands.train_ode import run as train_ode
from hf_reduce.data import DEBIAN_FASHION_MNIST, image_tensors, label_names, load_image_classification
from hf_reduce.ode import ODEConfig, ODEForImageClassification
from hf_reduce.training import TrainingArguments, train

# The ODE function's normalisation (the paper's table); stem and ResNet blocks keep batch norm.
VARIANTS: dict[str, dict] = {
    "ODENet BN": {"norm_ode": "batch"},
    "ODENet LN": {"norm_ode": "layer"},
    "ODENet GN": {"norm_ode": "group"},
    "ODENet WN": {"norm_ode": "none", "ode_param_norm": "weight"},
    "ODENet SN": {"norm_ode": "none", "ode_param_norm": "spectral"},
    "ODENet none": {"norm_ode": "none"},
}


def training_arguments(args: argparse.Namespace, name: str) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(Path(args.output_dir) / name.replace(" ", "_")),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        lr_scheduler_type="cosine",
        warmup_ratio=0.05,
        logging_steps=0,
        seed=args.seed,
    )


def part_norms(args: argparse.Namespace) -> list[dict]:
    dsd = load_image_classification(
        args.dataset,
        seed=args.seed,
        max_train_samples=args.max_train_samples,
        max_test_samples=args.max_test_samples,
        test_size=0.2,
    )
    first = dsd["train"][0]["pixel_values"]
    channels = 1 if first.mode in ("L", "1") else 3
    train_set, test_set = (image_tensors(dsd[s], channels) for s in ("train", "test"))
    mean, std = channel_stats(train_set, channels)
    names = label_names(dsd)
    common = dict(
        num_channels=channels,
        image_size=first.size[0],
        image_mean=mean,
        image_std=std,
        num_labels=len(names),
        method=args.method,
        n_steps=args.n_steps,
    )
    variants = {
        **{k: v for k, v in VARIANTS.items() if k.split()[-1] in args.norms},
        "ResNet (same layout)": None,
    }
    rows = []
    for name, overrides in variants.items():
        if overrides is None:
            config = ODEConfig.from_preset(args.resnet_preset, **common)
        else:
            config = ODEConfig.from_preset(args.preset, **common, **overrides)
        torch.manual_seed(args.seed)
        model = ODEForImageClassification(config)
        result = train(model, training_arguments(args, name), train_set, test_set)
        row = {
            "model": name,
            "test accuracy": result.metrics["accuracy"],
            "parameters": sum(p.numel() for p in model.parameters()),
            "train s": round(result.train_runtime, 1),
        }
        print(format_table([row]), flush=True)
        rows.append(row)
    odenets = [r for r in rows if r["model"].startswith("ODENet")]
    if odenets:
        best, resnet = max(odenets, key=lambda r: r["test accuracy"]), rows[-1]
        gap = resnet["test accuracy"] - best["test accuracy"]
        print(
            f"\nbest ODENet: {best['model']} {best['test accuracy']:.4f}; ResNet {resnet['test accuracy']:.4f}; gap {gap:+.4f}"
        )
    return rows


def part_robustness(args: argparse.Namespace) -> dict[str, dict]:
    results = {}
    for regime in ("fixed", "smoothing"):
        meta = MetaSolverArguments(
            regime=regime,
            sigma_u=args.sigma_u,
            eval_eps=args.eval_eps,
            max_attack_samples=args.max_attack_samples,
            step_multipliers=[2, 4],
        )
        model_args = ODEModelArguments(preset=args.preset, method=args.method, n_steps=args.n_steps)
        data = DataArguments(
            dataset=args.dataset,
            max_train_samples=args.max_train_samples,
            max_test_samples=args.max_test_samples,
        )
        summary = train_ode(
            data, model_args, meta, training_arguments(args, f"robust {regime}"), HubArguments()
        )
        for title, rows in summary["tables"].items():
            print(f"\n{regime}: {title}\n{format_table(rows)}", flush=True)
        results[regime] = summary["tables"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default=DEBIAN_FASHION_MNIST)
    parser.add_argument("--preset", default="odenet_mnist")
    parser.add_argument("--resnet_preset", default="resnet_mnist")
    parser.add_argument("--norms", nargs="+", default=["BN", "LN", "GN", "WN", "SN", "none"])
    parser.add_argument("--method", default="rk4_u2", help="training solver (the paper: euler, 8 steps)")
    parser.add_argument("--n_steps", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_test_samples", type=int, default=None)
    parser.add_argument("--sigma_u", type=float, default=0.1)
    parser.add_argument("--eval_eps", type=float, default=0.1)
    parser.add_argument("--max_attack_samples", type=int, default=1000)
    parser.add_argument("--parts", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/ode_norms")
    args = parser.parse_args()
    report: dict = {"settings": vars(args)}
    if 1 in args.parts:
        report["norms"] = part_norms(args)
    if 2 in args.parts:
        report["robustness"] = part_robustness(args)
    if 1 in args.parts:
        print("\n" + format_table(report["norms"]))
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "ode_norms.json").write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
