"""MaxVol reduced-order models vs the original CNN, and our maxvol / rect_maxvol vs teneva's, in one run.

Part 1: the reference VGG on Fashion-MNIST (trained here, or --model_name_or_path) reduced at several
settings: accuracy, parameters, MACs (FlopCounterMode), median interleaved latency at batch 1 and 64.
Part 2: maxvol / rect_maxvol timings against teneva (a benchmark-only dependency: pip install teneva).
teneva's LU keeps an n x n permutation matrix (20 GB at n = 50,000), so the default shapes stay small.

    python scripts/benchmarks/maxvol.py --model_name_or_path outputs/vgg/model
    python scripts/benchmarks/maxvol.py --epochs 4          # trains the reference CNN first
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForImageClassification

import hf_reduce  # noqa: F401
from hf_reduce.commands.common import DataArguments, HubArguments, format_table
from hf_reduce.commands.train_cnn import CNNArguments
from hf_reduce.commands.train_cnn import run as train_cnn
from hf_reduce.data import DEBIAN_FASHION_MNIST, image_tensors, load_image_classification
from hf_reduce.maxvol import maxvol, rect_maxvol, reduce_model
from hf_reduce.profiling import compare_models as compare
from hf_reduce.training import TrainingArguments, make_accelerator


def reference_model(args: argparse.Namespace) -> torch.nn.Module:
    if args.model_name_or_path:
        return AutoModelForImageClassification.from_pretrained(args.model_name_or_path)
    training = TrainingArguments(
        output_dir=f"{args.output_dir}/vgg",
        num_train_epochs=args.epochs,
        per_device_train_batch_size=128,
        learning_rate=2e-3,
        weight_decay=0.05,
        logging_steps=0,
    )
    summary = train_cnn(
        DataArguments(dataset=args.dataset), CNNArguments(dropout=0.3), training, HubArguments()
    )
    return summary["model"]


def part_reduction(args: argparse.Namespace) -> list[dict]:
    original = reference_model(args).eval()
    accelerator = make_accelerator(TrainingArguments(output_dir=args.output_dir))
    c = original.config
    dsd = load_image_classification(args.dataset)
    train_set, test_set = (image_tensors(dsd[s], c.num_channels, c.image_size) for s in ("train", "test"))
    loader = DataLoader(train_set, batch_size=256, shuffle=True, generator=torch.Generator().manual_seed(0))
    rows = []
    for keep in args.keep_blocks:
        for energy in args.energies:
            started = time.perf_counter()
            reduced = reduce_model(
                original, loader, keep_blocks=keep, energy=energy, max_samples=args.max_samples
            )
            seconds = time.perf_counter() - started
            table = compare(original, reduced, test_set, accelerator, args.repeats)
            if not rows:
                rows.append({"setting": "original", **{k: v for k, v in table[0].items() if k != "model"}})
            ratio = table[2]
            rows.append(
                {
                    "setting": f"keep {keep}, energy {energy}",
                    **{k: v for k, v in table[1].items() if k != "model"},
                    "neurons": reduced.config.reduction["selected_neurons"],
                    "acc. drop": ratio["accuracy"],
                    "MACs /": ratio["MACs"],
                    "speed-up b1": ratio["latency b1 ms"],
                    "speed-up b64": ratio["latency b64 ms"],
                    "reduce s": round(seconds, 1),
                }
            )
            print(format_table(rows[-1:]), flush=True)
    return rows


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def part_algorithms(args: argparse.Namespace) -> list[dict]:
    try:
        import teneva
    except ImportError:
        print("teneva is not installed (pip install teneva): skipping the comparison")
        return []
    rows = []
    rng = np.random.default_rng(0)
    for n, r in args.shapes:
        A = rng.standard_normal((n, r))
        At = torch.from_numpy(A)
        ours_sq = _median_seconds(lambda At=At: maxvol(At, tol=1.05, max_iters=100), args.algorithm_repeats)
        theirs_sq = _median_seconds(lambda A=A: teneva.maxvol(A, e=1.05, k=100), args.algorithm_repeats)
        ours_rect = _median_seconds(
            lambda At=At, r=r: rect_maxvol(At, tol=1.1, max_rows=2 * r), args.algorithm_repeats
        )
        theirs_rect = _median_seconds(
            lambda A=A, r=r: teneva.maxvol_rect(A, e=1.1, dr_max=r), args.algorithm_repeats
        )
        rows.append(
            {
                "matrix": f"{n} x {r}",
                "maxvol ours ms": 1000 * ours_sq,
                "maxvol teneva ms": 1000 * theirs_sq,
                "teneva / ours": theirs_sq / ours_sq,
                "rect ours ms": 1000 * ours_rect,
                "rect teneva ms": 1000 * theirs_rect,
                "rect teneva / ours": theirs_rect / ours_rect,
            }
        )
        print(format_table(rows[-1:]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default=DEBIAN_FASHION_MNIST)
    parser.add_argument("--model_name_or_path", default=None)
    parser.add_argument("--epochs", type=float, default=12)
    parser.add_argument("--keep_blocks", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--energies", type=float, nargs="+", default=[0.99, 0.95])
    parser.add_argument("--max_samples", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--shapes",
        type=lambda s: tuple(int(v) for v in s.split("x")),
        nargs="+",
        default=[(5000, 50), (20000, 100)],
    )
    parser.add_argument("--algorithm_repeats", type=int, default=3)
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--output_dir", default="outputs/maxvol_benchmark")
    args = parser.parse_args()
    torch.manual_seed(0)
    reduction = part_reduction(args) if 1 in args.parts else []
    algorithms = part_algorithms(args) if 2 in args.parts else []
    if reduction:
        print("\n" + format_table(reduction))
    if algorithms:
        print("\n" + format_table(algorithms))


if __name__ == "__main__":
    main()
