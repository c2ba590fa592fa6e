"""Normalisation in neural ODEs at convergence (Gusak et al., 2020).

The paper (CIFAR-10, ODENet10, Euler 8 steps): BN 76.2, WN 92.5, SN 92.6, none 92.7, LN 93.0, ResNet10 93.1 %.
Here: Fashion-MNIST (Debian files), the ODE function's normalisation BN / LN / none (stem and ResNet blocks keep
batch norm) and the same-layout ResNet, each trained with the same budget until the last two epochs differ by
< 0.2 pt. For 2 CPU cores the preset is narrowed to channels [16, 32] and training uses a fixed 20,000-image
subset of the training set; the test set is the full 10,000 images. Euler with 8 steps, as in the paper.
Targets: the best ODENet within 0.5 pt of the ResNet, BN clearly worst.

Each variant checkpoints every epoch and appends each epoch's test accuracy to ``results/ode_norms.json``; a
variant cut short (a session's end) resumes from its last checkpoint, so the study may span sessions. The
figure (test accuracy against epoch) regenerates from the JSON alone:

    python scripts/benchmarks/ode_norms.py                      # every variant not yet done, then the figure
    python scripts/benchmarks/ode_norms.py --variants LN ResNet
    python scripts/benchmarks/ode_norms.py --variants           # replot only

The paper's CIFAR-10 setting, unchanged, on a GPU (not run here: no CIFAR-10 offline, no GPU lent), once per
``--norm_ode`` in batch / layer / none and once with ``--preset resnet10_cifar``:

    accelerate launch scripts/train_ode.py --dataset cifar10 --preset odenet10_cifar --norm_ode layer \
        --method euler --n_steps 8 --num_train_epochs 100 --per_device_train_batch_size 128
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from _measure import ResultsFile

import hf_reduce  # noqa: F401
from hf_reduce.commands.common import channel_stats, format_table
from hf_reduce.data import DEBIAN_FASHION_MNIST, image_tensors, label_names, load_image_classification
from hf_reduce.ode import ODEConfig, ODEForImageClassification
from hf_reduce.training import TrainingArguments, evaluate_model, train

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results" / "ode_norms.json"
#: The ODE function's normalisation; None is the same-layout ResNet.
VARIANTS: dict[str, dict | None] = {
    "BN": {"norm_ode": "batch"},
    "LN": {"norm_ode": "layer"},
    "none": {"norm_ode": "none"},
    "ResNet": None,
}
CONVERGED_PT = 0.2


STORE = ResultsFile(RESULTS, {"settings": {}, "variants": {}})
load_results, save = STORE.load, STORE.update


def converged(epochs: list[dict]) -> bool:
    return len(epochs) >= 2 and abs(epochs[-1]["accuracy"] - epochs[-2]["accuracy"]) < CONVERGED_PT / 100


def data(args: argparse.Namespace):
    dsd = load_image_classification(args.dataset, seed=0, max_train_samples=args.train_samples)
    train_set, test_set = (image_tensors(dsd[s], 1) for s in ("train", "test"))
    mean, std = channel_stats(train_set, 1)
    return train_set, test_set, mean, std, len(label_names(dsd))


def run_variant(name: str, args: argparse.Namespace, train_set, test_set, mean, std, num_labels) -> None:
    common = dict(
        num_channels=1,
        image_size=28,
        image_mean=mean,
        image_std=std,
        num_labels=num_labels,
        channels=args.channels,
        method="euler",
        u=None,
        v=None,
        n_steps=8,
    )
    overrides = VARIANTS[name]
    if overrides is None:
        config = ODEConfig.from_preset("resnet_mnist", **common)
    else:
        config = ODEConfig.from_preset("odenet_mnist", **common, **overrides)
    torch.manual_seed(args.seed)
    model = ODEForImageClassification(config)
    out = ROOT / "outputs" / "bench-ode-norms" / f"{name}_seed{args.seed}_epochs{args.epochs}"
    steps_per_epoch = -(-len(train_set) // args.batch_size)
    training = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        lr_scheduler_type="cosine",
        warmup_ratio=0.05,
        logging_steps=0,
        seed=args.seed,
        checkpointing_steps=steps_per_epoch,
        save_total_limit=1,
        resume_from_checkpoint="latest" if (out / "checkpoints").exists() else None,
        disable_tqdm=True,
    )
    key = f"{name}|seed={args.seed}|epochs={args.epochs}"

    step = {"global": 0}

    def evaluator(model, dataset, **kwargs):  # every epoch's accuracy goes to the JSON as it happens
        metrics = evaluate_model(model, dataset, **kwargs)
        epoch = -(-step["global"] // steps_per_epoch)  # from the step, so a resumed run numbers alike

        def append(done):
            entry = done["variants"].setdefault(key, {"variant": name, "seed": args.seed, "epochs": []})
            entry["epochs"] = [e for e in entry["epochs"] if e["epoch"] < epoch]
            entry["epochs"].append({"epoch": epoch, "accuracy": metrics["accuracy"]})

        save(append)
        return metrics

    result = train(
        model,
        training,
        train_set,
        test_set,
        evaluator=evaluator,
        on_step_end=lambda global_step, _: step.update({"global": global_step}),
    )

    def finish(done):
        entry = done["variants"][key]
        entry.update(
            parameters=sum(p.numel() for p in model.parameters()),
            final=result.metrics["accuracy"],
            converged=converged(entry["epochs"]),
            finished=True,
        )

    save(finish)


def summary(results: dict) -> list[dict]:
    rows = []
    for key, entry in results["variants"].items():
        accs = [e["accuracy"] for e in entry["epochs"]]
        rows.append(
            {
                "run": key,
                "epochs done": len(accs),
                "last": accs[-1] if accs else None,
                "best": max(accs) if accs else None,
                "last two differ pt": round(100 * abs(accs[-1] - accs[-2]), 2) if len(accs) > 1 else None,
                "converged": converged(entry["epochs"]),
                "finished": entry.get("finished", False),
            }
        )
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for entry in results["variants"].values():
        epochs = [e["epoch"] for e in entry["epochs"]]
        accs = [100 * e["accuracy"] for e in entry["epochs"]]
        style = "--" if entry["variant"] == "ResNet" else "-"
        label = ("ResNet" if entry["variant"] == "ResNet" else f"ODENet {entry['variant']}") + (
            f" {accs[-1]:.2f} %" if accs else ""
        )
        if "seed" in entry:
            label += f" (seed {entry['seed']})"
        ax.plot(epochs, accs, style, marker="o", ms=3, label=label)
    finals = [100 * e["epochs"][-1]["accuracy"] for e in results["variants"].values() if e["epochs"]]
    if finals:
        ax.set_ylim(max(min(finals) - 5, 0), min(100, max(finals) + 1.5))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Fashion-MNIST, 20k training images, channels [16, 32], Euler 8 steps", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--dataset", default=DEBIAN_FASHION_MNIST)
    parser.add_argument("--channels", type=int, nargs=2, default=[16, 32])
    parser.add_argument("--train_samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = {k: v for k, v in vars(args).items() if k not in ("variants", "seed")}  # seeds add up
    if args.variants:
        recorded = load_results()["settings"]
        if recorded and recorded != settings:
            raise SystemExit(
                f"results/ode_norms.json was made with {recorded}, not {settings}: move it away first"
            )
        save(lambda done: done.update(settings=settings))
        splits = data(args)
        for name in args.variants:
            entry = load_results()["variants"].get(f"{name}|seed={args.seed}|epochs={args.epochs}", {})
            if not entry.get("finished"):
                run_variant(name, args, *splits)
    results = load_results()
    print(format_table(summary(results)))
    finals: dict[str, list[float]] = {}
    for entry in results["variants"].values():
        if entry.get("finished"):
            finals.setdefault(entry["variant"], []).append(entry["final"])
    means = {name: statistics.mean(values) for name, values in finals.items()}
    odenets = {name: m for name, m in means.items() if name != "ResNet"}
    if odenets and "ResNet" in means:
        best = max(odenets, key=odenets.get)
        print(
            f"best ODENet ({best}) {odenets[best]:.4f}; ResNet {means['ResNet']:.4f}; gap "
            f"{means['ResNet'] - odenets[best]:+.4f} (means over {dict((k, len(v)) for k, v in finals.items())} seeds)"
        )
    plot(results, RESULTS.with_suffix(".png"))
    print(RESULTS, RESULTS.with_suffix(".png"))


if __name__ == "__main__":
    main()
