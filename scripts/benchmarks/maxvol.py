"""MaxVol reduced-order models where they should pay off, against the peer a user would try first; and our
maxvol / rect_maxvol against teneva's.

Part ``reduction``: for each network of ``_networks.py`` (the deep VGG-16-style one, whose late blocks run at
3x3 and 1x1, and the 437k-parameter reference VGG), for each tail start and each accuracy budget, the ranks
are chosen per subspace by validation accuracy (``hf_reduce.maxvol.search_ranks`` from the 0.999-energy ranks
down, on test images 0-4,999), the reduced model is distilled for ``--distill_epochs`` (kept only if it helps),
and accuracy is reported on test images 5,000-9,999 with parameters, MACs and interleaved latency at batch 1
and 64. Peer: structured channel
pruning of the same network with Torch-Pruning (``MetaPruner``, L2 group-magnitude importance, uniform ratio,
classifier output kept), its ratio bisected until its batch-64 latency matches the MaxVol model's, then the
same distillation budget. Targets: >= 1.5x measured speed-up at batch 64 at <= 1 pt.
Part ``algorithms``: maxvol / rect_maxvol timings against teneva (pip install teneva). teneva's LU keeps an
n x n permutation matrix (20 GB at n = 50,000), so the default shapes stay small.

Results accumulate in ``results/maxvol.json`` (a configuration already there is not run again); the
accuracy-latency frontier figure regenerates from the JSON alone:

    python scripts/benchmarks/maxvol.py                         # both parts, then table + figure
    python scripts/benchmarks/maxvol.py --networks deep --max_drops 0.01
    python scripts/benchmarks/maxvol.py --parts retime          # latencies again, on quiet cores
    python scripts/benchmarks/maxvol.py --parts                 # replot only

On a GPU, the paper's setting (VGG-19 on CIFAR-10; not run here: no CIFAR-10 offline, no GPU lent):

    hf-reduce train-cnn --dataset cifar10 --layers 64 64 M 128 128 M 256 256 256 256 M 512 512 512 512 M \
        512 512 512 512 M --classifier_hidden_sizes 512 512 --num_train_epochs 200 --output_dir outputs/vgg19
    hf-reduce reduce-maxvol --model_name_or_path outputs/vgg19/model --dataset cifar10 --keep_blocks 12
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _measure import ResultsFile
from _networks import fashion_mnist, trained_network
from torch.utils.data import DataLoader

from hf_reduce.commands.common import format_table
from hf_reduce.distillation import distill_if_better
from hf_reduce.maxvol import maxvol, rect_maxvol, reduce_model, sample_tail, search_ranks
from hf_reduce.profiling import interleaved_latency, model_costs
from hf_reduce.training import TrainingArguments, evaluate_model, make_accelerator

RESULTS = Path(__file__).resolve().parent / "results" / "maxvol.json"
#: Tail starts per network (blocks kept as convolutions): the deep VGG's stage 3 (7x7) or stage 4 (3x3) on.
KEEP_BLOCKS = {"deep": [7, 4], "reference": [4]}


STORE = ResultsFile(RESULTS, {"networks": {}, "reductions": {}})
load_results, save = STORE.load, STORE.update


def pruned(model, ratio: float):
    """Torch-Pruning's structured channel pruning of a copy of ``model`` at a uniform ``ratio``."""
    import torch_pruning as tp

    copy_ = copy.deepcopy(model).eval()
    c = model.config
    example = {"pixel_values": torch.rand(1, c.num_channels, c.image_size, c.image_size)}
    pruner = tp.pruner.MetaPruner(
        copy_,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[copy_.classifier[-1]],  # the 10 logits stay
        output_transform=lambda out: out.logits,
    )
    pruner.step()
    return copy_


def matched_pruning(model, reference, repeats: int) -> tuple[float, torch.nn.Module]:
    """The pruning ratio whose batch-64 latency is closest to ``reference``'s, by bisection on the latency
    ratio measured interleaved with ``reference`` (so that a change of machine load hits both alike)."""
    c = model.config
    low, high, best = 0.0, 0.95, (float("inf"), 0.0, model)
    for _ in range(7):
        ratio = (low + high) / 2
        candidate = pruned(model, ratio)
        ms = interleaved_latency(
            {"pruned": candidate, "reference": reference},
            lambda b: torch.rand(b, c.num_channels, c.image_size, c.image_size),
            batch_sizes=(64,),
            repeats=repeats,
        )
        slower = ms["pruned"][64] / ms["reference"][64]
        if abs(slower - 1) < best[0]:
            best = (abs(slower - 1), ratio, candidate)
        low, high = (ratio, high) if slower > 1 else (low, ratio)
    return best[1], best[2]


def part_reduction(args: argparse.Namespace) -> None:
    accelerator = make_accelerator(TrainingArguments(output_dir=args.output_dir))
    for network in args.networks:
        model = trained_network(network)
        train, validation, test = fashion_mnist(model)
        loader = DataLoader(train, batch_size=256, shuffle=True, generator=torch.Generator().manual_seed(0))
        if network not in load_results()["networks"]:
            row = model_costs({"original": model}, test, accelerator, args.repeats)["original"]
            save(lambda done, row=row, network=network: done["networks"].__setitem__(network, row))
        training = TrainingArguments(
            output_dir=args.output_dir,
            per_device_train_batch_size=128,
            learning_rate=args.learning_rate,
            logging_steps=0,
            disable_tqdm=True,
        )
        for keep in KEEP_BLOCKS[network]:
            sample = None
            for max_drop in args.max_drops:
                name = f"{network}|keep={keep}|max_drop={max_drop:g}|distill={args.distill_epochs:g}"
                if name in load_results()["reductions"]:
                    continue
                started = time.perf_counter()
                if sample is None:
                    sample = sample_tail(model, loader, keep_blocks=keep, max_samples=args.max_samples)
                found = search_ranks(
                    model,
                    None,
                    validation,
                    keep_blocks=keep,
                    max_drop=max_drop,
                    sample=sample,
                    start_energy=0.999,
                    accelerator=accelerator,
                )
                reduced = reduce_model(model, None, keep_blocks=keep, rank=found.ranks, sample=sample)
                search_s = time.perf_counter() - started
                before = evaluate_model(reduced, test, accelerator=accelerator, disable_tqdm=True)["accuracy"]
                kept = "-"
                if args.distill_epochs > 0:
                    kept = distill_if_better(
                        reduced, model, train, training, accelerator, epochs=args.distill_epochs
                    )["finetuning_kept"]
                ratio, peer = matched_pruning(model, reduced, args.repeats // 2)
                peer_before = evaluate_model(peer, test, accelerator=accelerator, disable_tqdm=True)[
                    "accuracy"
                ]
                peer_kept = "-"
                if args.distill_epochs > 0:
                    peer_kept = distill_if_better(
                        peer, model, train, training, accelerator, epochs=args.distill_epochs
                    )["finetuning_kept"]
                folder = Path(args.output_dir) / name.replace("|", "_")
                folder.mkdir(parents=True, exist_ok=True)
                torch.save({"maxvol": reduced, "pruned": peer}, folder / "models.pt")  # for --retime
                rows = model_costs(
                    {"original": model, "maxvol": reduced, "pruned": peer}, test, accelerator, args.repeats
                )
                result = {
                    "network": network,
                    "keep blocks": keep,
                    "max drop": max_drop,
                    "ranks": found.ranks,
                    "selected neurons": reduced.config.reduction["selected_neurons"],
                    "validation accuracy": found.validation_accuracy,
                    "original validation accuracy": found.original_accuracy,
                    "maxvol accuracy before distillation": before,
                    "maxvol distillation kept": kept,
                    "pruning ratio": round(ratio, 4),
                    "pruned accuracy before distillation": peer_before,
                    "pruned distillation kept": peer_kept,
                    **{f"{model_name} {k}": v for model_name, row in rows.items() for k, v in row.items()},
                    "search s": round(search_s, 1),
                    "wall s": round(time.perf_counter() - started, 1),
                }
                print(format_table([summary_row(result)]), flush=True)
                save(lambda done, name=name, result=result: done["reductions"].__setitem__(name, result))


def retime(args: argparse.Namespace) -> None:
    """Measure the latencies of every saved reduction again, interleaved with its original (on quiet cores:
    the first measurements may have shared the machine with training runs)."""
    for name, r in load_results()["reductions"].items():
        path = Path(args.output_dir) / name.replace("|", "_") / "models.pt"
        if not path.exists():
            print(f"{name}: no saved models at {path}, kept as measured")
            continue
        models = {"original": trained_network(r["network"]), **torch.load(path, weights_only=False)}
        c = models["original"].config
        latency = interleaved_latency(
            models,
            lambda b, c=c: torch.rand(b, c.num_channels, c.image_size, c.image_size),
            repeats=args.repeats,
        )

        def update(done, name=name, latency=latency):
            for model_name, by_batch in latency.items():
                for batch, seconds in by_batch.items():
                    done["reductions"][name][f"{model_name} latency b{batch} ms"] = round(1000 * seconds, 3)
            done["reductions"][name]["retimed"] = True

        save(update)
        print(format_table([summary_row(load_results()["reductions"][name])]), flush=True)


def summary_row(r: dict) -> dict:
    """One line per reduction: accuracy drop and speed-up of MaxVol and of the latency-matched pruning."""
    out = {"network": r["network"], "keep": r["keep blocks"], "budget pt": 100 * r["max drop"]}
    for m in ("maxvol", "pruned"):
        out[f"{m} drop pt"] = round(100 * (r["original accuracy"] - r[f"{m} accuracy"]), 2)
        out[f"{m} b64 x"] = round(r["original latency b64 ms"] / r[f"{m} latency b64 ms"], 2)
        out[f"{m} b1 x"] = round(r["original latency b1 ms"] / r[f"{m} latency b1 ms"], 2)
        out[f"{m} params x"] = round(r["original parameters"] / r[f"{m} parameters"], 2)
        out[f"{m} MACs x"] = round(r["original MACs"] / r[f"{m} MACs"], 2)
    return out


def plot(results: dict, path: Path) -> None:
    """Accuracy against latency at batch 1 and 64: originals, MaxVol reductions, latency-matched pruning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = {"deep": "tab:blue", "reference": "tab:green"}
    markers = {"original": "o", "maxvol": "^", "pruned": "s"}
    for ax, batch in zip(axes, (1, 64), strict=True):
        for r in results["reductions"].values():
            for m in ("original", "maxvol", "pruned"):
                ax.scatter(
                    r[f"{m} latency b{batch} ms"],
                    100 * r[f"{m} accuracy"],
                    color=colors.get(r["network"], "tab:grey"),
                    marker=markers[m],
                    facecolors="none" if m == "pruned" else None,
                )
        ax.set_xscale("log")
        ax.set_xlabel(f"latency at batch {batch} (ms, median, interleaved)")
        ax.set_ylabel("test accuracy (%, images 5,000-9,999)")
    handles = [
        plt.Line2D([], [], color=c, marker="o", ls="", label=f"{n} VGG") for n, c in colors.items()
    ] + [
        plt.Line2D(
            [],
            [],
            color="k",
            marker=mk,
            ls="",
            fillstyle="none" if m == "pruned" else "full",
            label={
                "original": "original",
                "maxvol": "MaxVol (ranks by validation)",
                "pruned": "Torch-Pruning, same b64 latency",
            }[m],
        )
        for m, mk in markers.items()
    ]
    axes[1].legend(handles=handles, fontsize=7)
    fig.suptitle("Fashion-MNIST: accuracy against measured latency (2 CPU threads)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


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
    parser.add_argument("--parts", nargs="*", default=["reduction", "algorithms"])
    parser.add_argument("--networks", nargs="+", default=["deep", "reference"], choices=sorted(KEEP_BLOCKS))
    parser.add_argument(
        "--max_drops", type=float, nargs="+", default=[0.005, 0.01], help="validation budgets"
    )
    parser.add_argument("--max_samples", type=int, default=4096)
    parser.add_argument("--distill_epochs", type=float, default=1.0)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--shapes",
        type=lambda s: tuple(int(v) for v in s.split("x")),
        nargs="+",
        default=[(5000, 50), (20000, 100)],
    )
    parser.add_argument("--algorithm_repeats", type=int, default=3)
    parser.add_argument("--output_dir", default="outputs/maxvol_benchmark")
    args = parser.parse_args()
    torch.manual_seed(0)
    if "reduction" in args.parts:
        part_reduction(args)
    if "retime" in args.parts:
        retime(args)
    algorithms = part_algorithms(args) if "algorithms" in args.parts else []
    results = load_results()
    if results["reductions"]:
        print(format_table([summary_row(r) for r in results["reductions"].values()]))
    if algorithms:
        print("\n" + format_table(algorithms))
    plot(results, RESULTS.with_suffix(".png"))
    print(RESULTS, RESULTS.with_suffix(".png"))


if __name__ == "__main__":
    main()
