"""Learning-rate sweep of LoTR's initialisations and PEFT's LoRA on a real task: the bundled all-MiniLM-L6-v2
(width 384) on BBC News topics, query + value, AdamW, 3 epochs, linear warm-up 6 %.

Settings: ``low`` (the first 10 % of the training set, 178 texts: the harder one, where methods differ) and
``full`` (all 1780). Each run is one (method, init, r, learning rate, seed); results accumulate in
``results/lotr_learning_rates.json`` (a run already there is not run again), so a sweep may span sessions.

    python scripts/benchmarks/lotr_learning_rates.py --setting low --seeds 0 \\
        --grid lotr:fan_in:8:1e-3,3e-3,1e-2,3e-2 lora::8:3e-4,1e-3,3e-3,1e-2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from hf_reduce.commands.common import HubArguments, format_table
from hf_reduce.commands.finetune_lotr import AdapterArguments, TextDataArguments, run
from hf_reduce.training import TrainingArguments
from hf_reduce.utils import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "lotr_learning_rates.json"
TRAIN_SAMPLES = {"low": 178, "full": None}


def key(setting: str, method: str, init: str, r: int, lr: float, seed: int) -> str:
    return f"{setting}|{method}|{init or '-'}|r={r}|lr={lr:g}|seed={seed}"


def one_run(setting: str, method: str, init: str, r: int, lr: float, seed: int, epochs: float) -> dict:
    out = Path("outputs/bench-lotr-lr") / key(setting, method, init, r, lr, seed).replace("|", "_")
    shutil.rmtree(out, ignore_errors=True)
    summary = run(
        TextDataArguments(dataset="bbc-news", max_train_samples=TRAIN_SAMPLES[setting]),
        AdapterArguments(method=method, r=r, max_length=96, **({"init_lotr": init} if init else {})),
        TrainingArguments(
            output_dir=str(out),
            num_train_epochs=epochs,
            per_device_train_batch_size=16,
            learning_rate=lr,
            warmup_ratio=0.06,
            seed=seed,
            logging_steps=0,
            eval_strategy="epoch",
            disable_tqdm=True,
            metrics=["accuracy", "f1"],
        ),
        HubArguments(),
    )
    shutil.rmtree(out, ignore_errors=True)
    return {
        "setting": setting,
        "method": method,
        "init": init,
        "r": r,
        "lr": lr,
        "seed": seed,
        "adapter params": summary["adapter_params"],
        "accuracy": summary["test_accuracy"],
        "macro-F1": summary["test_f1"],
        "train s": summary["train_seconds"],
    }


def aggregate(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["setting"], row["method"], row["init"], row["r"], row["lr"]), []).append(row)
    out = []
    for (setting, method, init, r, lr), runs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        accuracies = [run["accuracy"] for run in runs]
        out.append(
            {
                "setting": setting,
                "method": f"{method} {init}".strip(),
                "r": r,
                "lr": lr,
                "params": runs[0]["adapter params"],
                "accuracy": f"{statistics.mean(accuracies):.4f} ± {statistics.pstdev(accuracies):.4f}",
                "seeds": len(runs),
            }
        )
    return out


def _figure(rows: list[dict], xlabel: str, title: str, draw, path: Path) -> None:
    """One panel per setting: ``draw(ax, setting)`` plots it, the axes are labelled alike, the PNG saved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({row["setting"] for row in rows})
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 3.6), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        draw(ax, setting)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"MiniLM on BBC News ({setting}){title}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy against the learning rate, one curve per (method, init, r)."""

    def draw(ax, setting: str) -> None:
        curves: dict[str, dict[float, list[float]]] = {}
        for row in rows:
            if row["setting"] == setting:
                label = f"{row['method']} {row['init']} r={row['r']}".replace("  ", " ")
                curves.setdefault(label, {}).setdefault(row["lr"], []).append(row["accuracy"])
        for label, points in sorted(curves.items()):
            lrs = sorted(points)
            ax.plot(lrs, [statistics.mean(points[lr]) for lr in lrs], marker="o", label=label)

    _figure(rows, "AdamW learning rate", "", draw, path)


def plot_frontier(rows: list[dict], path: Path) -> None:
    """Accuracy (mean ± std over seeds) against adapter parameters, each method at its documented rate."""
    from hf_reduce.commands.finetune_lotr import DEFAULT_LEARNING_RATES

    def draw(ax, setting: str) -> None:
        for method, marker in (("lora", "s"), ("lotr", "o")):
            by_rank: dict[int, list[dict]] = {}
            for row in rows:
                if (
                    row["setting"] == setting
                    and row["method"] == method
                    and row["lr"] == DEFAULT_LEARNING_RATES[method]
                    and row["init"] in ("", "fan_in")
                ):
                    by_rank.setdefault(row["r"], []).append(row)
            ranks = sorted(by_rank)
            if not ranks:
                continue
            params = [by_rank[r][0]["adapter params"] for r in ranks]
            means = [statistics.mean(x["accuracy"] for x in by_rank[r]) for r in ranks]
            stds = [statistics.pstdev([x["accuracy"] for x in by_rank[r]]) for r in ranks]
            label = f"{method} (lr {DEFAULT_LEARNING_RATES[method]:g})"
            ax.errorbar(params, means, yerr=stds, marker=marker, capsize=3, label=label)
            for x, y, r in zip(params, means, ranks, strict=True):
                ax.annotate(f"r={r}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)

    _figure(rows, "adapter parameters", ", documented learning rates", draw, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setting", choices=sorted(TRAIN_SAMPLES), default="low")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument(
        "--grid", nargs="*", default=[], help="method:init:r:lr1,lr2,... (init empty for LoRA); none: replot."
    )
    args = parser.parse_args()
    done = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    for spec in args.grid:
        method, init, r, lrs = spec.split(":")
        for lr in (float(x) for x in lrs.split(",")):
            for seed in args.seeds:
                name = key(args.setting, method, init, int(r), lr, seed)
                if name in done["runs"]:
                    continue
                result = one_run(args.setting, method, init, int(r), lr, seed, args.epochs)
                print(format_table([result]), flush=True)
                # After every run, so that an interrupted sweep resumes here; re-read first, so that sweeps
                # running side by side keep each other's results.
                done = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
                done["runs"][name] = result
                write_json_atomic(RESULTS, done)
    rows = list(done["runs"].values())
    print(format_table(aggregate(rows)))
    plot(rows, RESULTS.with_suffix(".png"))
    frontier = RESULTS.with_name("lotr_vs_lora_parameters.png")
    plot_frontier(rows, frontier)
    print(RESULTS, RESULTS.with_suffix(".png"), frontier)


if __name__ == "__main__":
    main()
