"""Active subspace of the reference VGG on Fashion-MNIST, in one run: active neurons per layer, ASNet at a few
cuts (params, MACs, accuracy before / after distillation), and universal attacks at equal ℓ2 norms.

    python scripts/benchmarks/asnet.py --model_name_or_path outputs/vgg/model
    python scripts/benchmarks/asnet.py --parts 3 --eps 2 4 6 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForImageClassification

import hf_reduce  # noqa: F401
from hf_reduce.asnet import active_subspaces, build_asnet, layer_report
from hf_reduce.commands.attack import AttackArguments
from hf_reduce.commands.attack import run as attack
from hf_reduce.commands.common import DataArguments, format_table
from hf_reduce.data import DEBIAN_FASHION_MNIST, image_tensors, load_image_classification
from hf_reduce.distillation import distill_if_better
from hf_reduce.profiling import compare_models
from hf_reduce.training import TrainingArguments, evaluate_model, make_accelerator


def part_asnet(args: argparse.Namespace) -> list[dict]:
    original = AutoModelForImageClassification.from_pretrained(args.model_name_or_path).eval()
    c = original.config
    dsd = load_image_classification(args.dataset)
    train_set, test_set = (image_tensors(dsd[s], c.num_channels, c.image_size) for s in ("train", "test"))
    loader = DataLoader(train_set, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(0))
    layers = [f"features.{i}" for i in range(len(original.features) - 1)]
    subspaces = active_subspaces(
        original, layers, loader, max_samples=args.max_samples
    )  # once, for every cut
    print("Active neurons per layer\n" + format_table(layer_report(subspaces)), flush=True)
    accelerator = make_accelerator(TrainingArguments(output_dir=args.output_dir))
    rows = []
    for cut, max_rank in [(c, r) for c in args.cuts for r in args.max_ranks]:
        subspace = subspaces[f"features.{cut - 1}"]
        rank = min(max_rank, subspace.n_active)
        asnet = build_asnet(
            original, loader, cut=cut, rank=rank, subspace=subspace, max_samples=args.max_samples
        )
        before = evaluate_model(asnet, test_set, accelerator=accelerator)["accuracy"]
        finetuning = {}
        if args.finetune_epochs > 0:
            training = TrainingArguments(
                output_dir=str(Path(args.output_dir) / f"cut{cut}_rank{rank}"),
                per_device_train_batch_size=128,
                learning_rate=args.learning_rate,
                logging_steps=0,
            )
            finetuning = distill_if_better(
                asnet, original, train_set, training, accelerator, epochs=args.finetune_epochs
            )
        original_row, reduced, ratio = compare_models(original, asnet, test_set, accelerator, args.repeats)
        if not rows:
            rows.append(
                {"model": "original", **{k: original_row[k] for k in ("accuracy", "parameters", "MACs")}}
            )
        rows.append(
            {
                "model": f"ASNet cut {cut}, rank {rank}, {asnet.config.n_terms} terms",
                "accuracy before fine-tuning": before,
                "accuracy": reduced["accuracy"],
                "fine-tuning kept": finetuning.get("finetuning_kept", "-"),
                "parameters": reduced["parameters"],
                "MACs": reduced["MACs"],
                "params /": ratio["parameters"],
                "MACs /": ratio["MACs"],
                "acc. drop": ratio["accuracy"],
            }
        )
        print(format_table(rows[-1:]), flush=True)
    return rows


def part_attacks(args: argparse.Namespace) -> list[dict]:
    attack_args = AttackArguments(
        model_name_or_path=args.model_name_or_path,
        eps=args.eps,
        seeds=args.seeds,
        fit_samples=args.fit_samples,
        eval_samples=args.eval_samples,
        uap_passes=args.uap_passes,
    )
    training = TrainingArguments(output_dir=args.output_dir)
    return attack(DataArguments(dataset=args.dataset), attack_args, training)["tables"]["Universal attacks"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_name_or_path", required=True, help="A trained VGG-style model (train-cnn).")
    parser.add_argument("--dataset", default=DEBIAN_FASHION_MNIST)
    parser.add_argument("--cuts", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--max_ranks", type=int, nargs="+", default=[10, 50], help="rank = min(active, this)")
    parser.add_argument("--degree", type=int, default=2)
    parser.add_argument("--max_samples", type=int, default=8192)
    parser.add_argument("--finetune_epochs", type=float, default=1.0)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--eps", type=float, nargs="+", default=[2.0, 4.0, 6.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fit_samples", type=int, default=500)
    parser.add_argument("--eval_samples", type=int, default=2000)
    parser.add_argument("--uap_passes", type=int, default=1)
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--output_dir", default="outputs/asnet_benchmark")
    args = parser.parse_args()
    asnets = part_asnet(args) if 1 in args.parts else []
    attacks = part_attacks(args) if 2 in args.parts else []
    if asnets:
        print("\n" + format_table(asnets))
    if attacks:
        print("\n" + format_table(attacks))


if __name__ == "__main__":
    main()
