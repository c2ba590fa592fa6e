"""ASNet on a deep network (Cui et al., 2020): active neurons per layer, ASNets at several cuts, universal attacks.

The paper's 23.98x fewer parameters / 7.30x fewer FLOPs come from VGG-19 on CIFAR-10, whose parameters sit in
the late layers an ASNet removes. Here the network is the deep VGG of ``_networks.py`` (VGG-16-style layer list,
narrow early and wide late stages) trained on Fashion-MNIST; it is trained first if ``outputs/networks/deep``
holds none. Targets: >= 10x fewer parameters and >= 4x fewer MACs at <= 1.5 pt, and the active-subspace attack
>= 10 pt above a fairly tuned DeepFool UAP at the middle norm.

- Active neurons: the gradient covariance of every conv block's output over 8,192 training images, threshold
  0.05 (the paper's 95 % of the spectrum).
- ASNets: pre-model = the first ``cut`` blocks, projection on the top ``rank`` directions (the active-neuron
  count, the paper's choice, or a given rank), degree-2 Hermite PCE fitted to the logits, then distillation
  (kept only if it helps on held-out training images). Accuracy is reported on test images 5,000-9,999.
- Attacks on the deep VGG itself, each vector fitted on 500 training images (a different draw per seed) and
  evaluated on test images 5,000-9,999: active subspace (5 iterations), DeepFool UAP with the UAP paper's
  settings (overshoot 0.02, 10 DeepFool iterations, passes until 80 % of the fit images are fooled, at most
  ``--uap_passes``), and a random direction, each at the same l2 norms.

Results accumulate in ``results/asnet.json`` (a configuration already there is not run again); the figure
regenerates from the JSON alone:

    python scripts/benchmarks/asnet.py                      # everything not yet done, then table + figure
    python scripts/benchmarks/asnet.py --parts attacks --seeds 0 1 2
    python scripts/benchmarks/asnet.py --parts               # replot only

The paper's own setting (VGG-19 on CIFAR-10, not run here: no CIFAR-10 offline, no GPU lent):

    hf-reduce train-cnn --dataset cifar10 --layers 64 64 M 128 128 M 256 256 256 256 M 512 512 512 512 M \
        512 512 512 512 M --classifier_hidden_sizes 512 512 --num_train_epochs 200 --output_dir outputs/vgg19
    hf-reduce build-asnet --model_name_or_path outputs/vgg19/model --dataset cifar10 --cut 5 --rank 50
    hf-reduce attack --model_name_or_path outputs/vgg19/model --dataset cifar10 --eps 5 10 15 --uap_passes 10
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from _measure import ResultsFile
from _networks import fashion_mnist, trained_network
from torch.utils.data import DataLoader

from hf_reduce.asnet import (
    active_subspaces,
    build_asnet,
    sparse_train,
    universal_report,
)
from hf_reduce.commands.attack import universal_vector
from hf_reduce.commands.common import format_table
from hf_reduce.distillation import distill_if_better
from hf_reduce.profiling import compare_models, count_parameters
from hf_reduce.training import TrainingArguments, evaluate_model, make_accelerator

RESULTS = Path(__file__).resolve().parent / "results" / "asnet.json"
ATTACKS = ("active_subspace", "uap", "random")


STORE = ResultsFile(RESULTS, {"layers": [], "asnets": {}, "attacks": {}, "sparse": {}})
load_results, save = STORE.load, STORE.update


def part_layers(model, train, args) -> list[dict]:
    loader = DataLoader(train, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(0))
    names = [f"features.{i}" for i in range(len(model.features))]
    subspaces = active_subspaces(model, names, loader, max_samples=args.max_samples)
    rows = []
    for i, name in enumerate(names):
        s = subspaces[name]
        share = s.eigenvalues / s.eigenvalues.sum()
        rows.append(
            {
                "block": i,
                "channels": model.features[i].conv.out_channels,
                "neurons": s.neurons,
                "active neurons": s.n_active,
                "top-50 spectrum share": [round(float(v), 6) for v in share[:50]],
            }
        )
    save(lambda done: done.update(layers=rows))
    return rows


def training_args(folder: Path, learning_rate: float) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(folder),
        per_device_train_batch_size=128,
        learning_rate=learning_rate,
        logging_steps=0,
        disable_tqdm=True,
    )


def distilled_asnet(model, train, test, cut: int, wanted: str, subspaces: dict, args, accelerator):
    """``(ASNet, subspace, accuracy before distillation, distillation report)`` at ``cut`` and rank ``wanted``
    (subspaces computed once per cut into ``subspaces``)."""
    loader = DataLoader(train, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(0))
    layer = f"features.{cut - 1}"
    if cut not in subspaces:
        subspaces[cut] = active_subspaces(model, [layer], loader, max_samples=args.max_samples)[layer]
    subspace = subspaces[cut]
    rank = subspace.n_active if wanted == "active" else int(wanted)
    asnet = build_asnet(model, loader, cut=cut, rank=rank, subspace=subspace, max_samples=args.max_samples)
    before = evaluate_model(asnet, test, accelerator=accelerator)["accuracy"]
    folder = Path(args.output_dir) / f"cut={cut}_rank={wanted}_epochs={args.finetune_epochs:g}"
    tuning = distill_if_better(
        asnet,
        model,
        train,
        training_args(folder, args.learning_rate),
        accelerator,
        epochs=args.finetune_epochs,
    )
    return asnet, subspace, before, tuning


def part_asnets(model, train, test, args) -> None:
    accelerator = make_accelerator(TrainingArguments(output_dir=args.output_dir))
    subspaces: dict[int, object] = {}  # per cut, computed once for all its ranks
    for cut in args.cuts:
        for wanted in args.ranks:
            name = f"cut={cut}|rank={wanted}|epochs={args.finetune_epochs:g}"
            if name in load_results()["asnets"]:
                continue
            started = time.perf_counter()
            asnet, subspace, before, tuning = distilled_asnet(
                model, train, test, cut, wanted, subspaces, args, accelerator
            )
            rank = asnet.config.rank
            rows = compare_models(model, asnet, test, accelerator, args.repeats)
            original, reduced = rows[0], rows[1]
            result = {
                "cut": cut,
                "rank": rank,
                "active neurons": subspace.n_active,
                "PCE terms": asnet.config.n_terms,
                "accuracy before distillation": before,
                "distillation kept": tuning["finetuning_kept"],
                "original accuracy": original["accuracy"],
                "accuracy": reduced["accuracy"],
                "acc. drop pt": round(100 * (original["accuracy"] - reduced["accuracy"]), 2),
                "parameters": reduced["parameters"],
                "params /": round(original["parameters"] / reduced["parameters"], 2),
                "MACs": reduced["MACs"],
                "MACs /": round(original["MACs"] / reduced["MACs"], 2),
                "speed-up b64": round(original["latency b64 ms"] / reduced["latency b64 ms"], 2),
                "original parameters": original["parameters"],
                "original MACs": original["MACs"],
                "wall s": round(time.perf_counter() - started, 1),
            }
            print(format_table([result]), flush=True)
            save(lambda done, name=name, result=result: done["asnets"].__setitem__(name, result))


def part_sparse(model, train, test, args) -> None:
    """The paper's sparse phase on the distilled ASNet at ``--sparse_cut`` / ``--sparse_rank``: proximal SGD
    with an L1 penalty, one run per strength from the same distilled ASNet; non-zeros counted as the paper's
    storage. The zeros are stored densely, so MACs and latency do not change (not re-measured)."""
    accelerator = make_accelerator(TrainingArguments(output_dir=args.output_dir))
    cut, wanted = args.sparse_cut, args.sparse_rank
    names = {
        strength: f"cut={cut}|rank={wanted}|epochs={args.finetune_epochs:g}|strength={strength:g}"
        f"|sparse_epochs={args.sparse_epochs:g}|lr={args.sparse_learning_rate:g}"
        for strength in args.sparse_strengths
    }
    todo = [s for s, name in names.items() if name not in load_results()["sparse"]]
    if not todo:
        return
    started = time.perf_counter()
    distilled, _, _, _ = distilled_asnet(model, train, test, cut, wanted, {}, args, accelerator)
    dense_accuracy = evaluate_model(distilled, test, accelerator=accelerator)["accuracy"]
    original = evaluate_model(model, test, accelerator=accelerator)["accuracy"]
    distilled_s = time.perf_counter() - started
    for strength in todo:
        started = time.perf_counter()
        asnet = copy.deepcopy(distilled)
        report = sparse_train(
            asnet,
            train,
            training_args(Path(args.output_dir) / "sparse", args.sparse_learning_rate),
            accelerator,
            epochs=args.sparse_epochs,
            strength=strength,
        )
        accuracy = evaluate_model(asnet, test, accelerator=accelerator)["accuracy"]
        after = report["nonzero_after"]
        original_parameters = count_parameters(model)
        result = {
            "cut": cut,
            "rank": asnet.config.rank,
            "strength": strength,
            "sparse epochs": args.sparse_epochs,
            "learning rate": args.sparse_learning_rate,
            "original accuracy": original,
            "dense ASNet accuracy": dense_accuracy,
            "accuracy": accuracy,
            "acc. drop pt": round(100 * (original - accuracy), 2),
            "parameters": after["dense_total"],
            "params /": round(original_parameters / after["dense_total"], 2),
            "nonzero": after["total"],
            "nonzero params /": round(original_parameters / after["total"], 2),
            "nonzero pre-model / projection / PCE": [after["pre_model"], after["projection"], after["pce"]],
            "dense pre-model / projection / PCE": [
                count_parameters(part) for part in (asnet.pre_model, asnet.projection, asnet.pce)
            ],
            "distilled ASNet s": round(distilled_s, 1),
            "wall s": round(time.perf_counter() - started, 1),
        }
        print(format_table([{k: v for k, v in result.items() if "/ PCE" not in k}]), flush=True)
        save(lambda done, name=names[strength], result=result: done["sparse"].__setitem__(name, result))


def part_attacks(model, train, test, args) -> None:
    images, labels = train.tensors["pixel_values"], train.tensors["labels"]
    test_x, test_y = test.tensors["pixel_values"], test.tensors["labels"]
    for seed in args.seeds:
        pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[: args.fit_samples]
        x, y = images[pick], labels[pick]
        for eps in args.eps:
            for attack in ATTACKS:
                name = f"{attack}|eps={eps:g}|seed={seed}|passes={args.uap_passes}"
                if name in load_results()["attacks"]:
                    continue
                started = time.perf_counter()
                delta = universal_vector(
                    attack, model, x, y, eps, seed, args
                )  # as hf-reduce attack computes it
                report = universal_report(model, test_x, test_y, delta)
                result = {
                    "attack": attack,
                    "eps": eps,
                    "seed": seed,
                    **report,
                    "wall s": round(time.perf_counter() - started, 1),
                }
                print(format_table([result]), flush=True)
                save(lambda done, name=name, result=result: done["attacks"].__setitem__(name, result))


def attack_summary(results: dict) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in results["attacks"].values():
        groups.setdefault((row["eps"], row["attack"]), []).append(row)
    out = []
    for (eps, attack), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], ATTACKS.index(kv[0][1]))):
        fooling = [r["fooling_rate"] for r in rows]
        errors = [r["error"] for r in rows]
        out.append(
            {
                "eps": eps,
                "attack": attack,
                "seeds": len(rows),
                "fooling rate": f"{statistics.mean(fooling):.4f} ± {statistics.pstdev(fooling):.4f}",
                "error": f"{statistics.mean(errors):.4f} ± {statistics.pstdev(errors):.4f}",
            }
        )
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    layers = results["layers"]
    if layers:
        blocks = [r["block"] for r in layers]
        axes[0].bar(blocks, [r["active neurons"] for r in layers], color="tab:blue")
        axes[0].set_yscale("log")
        for r in layers:
            axes[0].annotate(f"/{r['neurons']}", (r["block"], r["active neurons"]), ha="center", fontsize=5)
        axes[0].set_xticks(blocks)
        axes[0].set_xlabel("conv block of the deep VGG")
        axes[0].set_ylabel("active neurons (95 % of the spectrum)")
        axes[0].set_title("active neurons / neurons per block", fontsize=9)
    asnets = list(results["asnets"].values())
    if asnets:
        for row in asnets:
            axes[1].scatter(row["MACs /"], row["acc. drop pt"], color="tab:orange")
            axes[1].annotate(
                f"cut {row['cut']}, r {row['rank']}\n{row['params /']:.0f}x params",
                (row["MACs /"], row["acc. drop pt"]),
                fontsize=6,
            )
        axes[1].axhline(1.5, color="grey", ls="--", lw=0.8)
        axes[1].axvline(4.0, color="grey", ls="--", lw=0.8)
        axes[1].set_xlabel("MACs: original / ASNet")
        axes[1].set_ylabel("accuracy drop (pt)")
        axes[1].set_title("ASNets (target: right of 4x, under 1.5 pt)", fontsize=9)
    if results["attacks"]:
        for attack, color in zip(ATTACKS, ("tab:red", "tab:purple", "tab:grey"), strict=True):
            by_eps: dict[float, list[float]] = {}
            for row in results["attacks"].values():
                if row["attack"] == attack:
                    by_eps.setdefault(row["eps"], []).append(row["fooling_rate"])
            eps = sorted(by_eps)
            axes[2].errorbar(
                eps,
                [statistics.mean(by_eps[e]) for e in eps],
                yerr=[statistics.pstdev(by_eps[e]) for e in eps],
                marker="o",
                capsize=3,
                color=color,
                label=attack.replace("_", " "),
            )
        axes[2].set_xlabel("l2 norm of the universal vector")
        axes[2].set_ylabel("fooling rate (test images)")
        axes[2].set_title("universal attacks (mean ± std over seeds)", fontsize=9)
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", nargs="*", default=["layers", "asnets", "attacks", "sparse"])
    parser.add_argument("--cuts", type=int, nargs="+", default=[2, 4, 7])
    parser.add_argument(
        "--ranks", nargs="+", default=["active", "50"], help="ints, or 'active' (the active-neuron count)"
    )
    parser.add_argument("--max_samples", type=int, default=8192)
    parser.add_argument("--finetune_epochs", type=float, default=4.0)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--eps", type=float, nargs="+", default=[2.0, 4.0, 6.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fit_samples", type=int, default=500)
    parser.add_argument("--uap_passes", type=int, default=5)
    parser.add_argument("--as_iterations", type=int, default=5)
    parser.add_argument("--sparse_cut", type=int, default=4)
    parser.add_argument("--sparse_rank", default="50")
    parser.add_argument("--sparse_strengths", type=float, nargs="+", default=[0.05, 0.2, 1.0])
    parser.add_argument("--sparse_epochs", type=float, default=4.0)
    parser.add_argument("--sparse_learning_rate", type=float, default=1e-3)
    parser.add_argument("--output_dir", default="outputs/asnet_benchmark")
    args = parser.parse_args()
    if args.parts:
        torch.manual_seed(0)
        model = trained_network("deep")
        train, _, test = fashion_mnist(model)
        if "layers" in args.parts and not load_results()["layers"]:
            print(
                format_table(
                    [
                        {k: v for k, v in r.items() if "spectrum" not in k}
                        for r in part_layers(model, train, args)
                    ]
                )
            )
        if "asnets" in args.parts:
            part_asnets(model, train, test, args)
        if "attacks" in args.parts:
            part_attacks(model, train, test, args)
        if "sparse" in args.parts:
            part_sparse(model, train, test, args)
    results = load_results()
    if results["asnets"]:
        print(format_table(list(results["asnets"].values())))
    if results["attacks"]:
        print(format_table(attack_summary(results)))
    if results["sparse"]:
        print(
            format_table(
                [{k: v for k, v in r.items() if "/ PCE" not in k} for r in results["sparse"].values()]
            )
        )
    plot(results, RESULTS.with_suffix(".png"))
    print(RESULTS, RESULTS.with_suffix(".png"))


if __name__ == "__main__":
    main()
