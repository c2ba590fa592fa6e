"""Train a neural-ODE image classifier with a meta-solver regime, evaluate its robustness, save and push it.

Regimes (Gusak et al., "Meta-Solver for Neural ODEs", 2021): ``fixed`` (one solver), ``switch`` (one member of
``--member_u`` per batch), ``smoothing`` (u, v drawn around the config's per batch), ``ensemble`` (every ODE
block averages the members). Optional FGSM-with-random-start adversarial training. The evaluation reports
clean accuracy, the solver-overfitting table and FGSM / PGD robust accuracy per solver.

accelerate launch scripts/train_ode.py --dataset /usr/share/datasets/fashion-mnist --preset odenet_mnist
hf-reduce train-ode --dataset digits --regime smoothing --sigma_u 0.1 --output_dir outputs/ode-digits
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from ..attacks import Attack, adversarial_loss
from ..hub import CardInfo
from ..ode import (
    FixedSolver,
    ODEConfig,
    ODEForImageClassification,
    SmoothingSolver,
    SolverEnsemble,
    SolverSampler,
    SolverSpec,
    SwitchSolver,
    solver_overfitting,
)
from ..ode.criterion import default_test_solvers
from ..ode.tableau import FAMILIES, check_parameters
from ..training import (
    TrainingArguments,
    arguments_dict,
    default_loss,
    evaluate_model,
    make_accelerator,
    train,
)
from .common import (
    DataArguments,
    HubArguments,
    command_main,
    count_parameters,
    prepare_image_training,
    publish,
    setup_logging,
)

logger = logging.getLogger(__name__)

REGIMES = ("fixed", "switch", "smoothing", "ensemble")


@dataclass
class ODEModelArguments:
    """The ODE classifier (ignored when starting from --model_name_or_path, except the solver fields)."""

    _argument_group_name = "model"

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from this saved/Hub model."}
    )
    preset: str | None = field(
        default=None, metadata={"help": "odenet_mnist, odenet10_cifar, resnet_mnist, resnet10_cifar."}
    )
    channels: list[int] = field(default_factory=lambda: [16, 32], metadata={"help": "Channels per stage."})
    ode_stages: list[str] = field(
        default_factory=lambda: ["false", "true"], metadata={"help": "Per stage: ODE block (true) or ResNet."}
    )
    norm_stem: str = field(default="batch", metadata={"help": "batch, layer, group, instance, none."})
    norm_resnet: str = field(default="batch", metadata={"help": "Normalisation inside ResNet blocks."})
    norm_ode: str = field(default="layer", metadata={"help": "Normalisation inside the ODE function."})
    ode_param_norm: str = field(default="none", metadata={"help": "none, weight or spectral."})
    method: str = field(
        default="rk4_u2", metadata={"help": "Solver: a torchdiffeq method or rk2_u ... rk4_u3."}
    )
    u: float | None = field(default=None, metadata={"help": "Family parameter u (default: family's own)."})
    v: float | None = field(default=None, metadata={"help": "Family parameter v (two-parameter families)."})
    n_steps: int = field(default=2, metadata={"help": "Steps of fixed-grid solvers over [0, 1]."})
    gradient_mode: str = field(default="backprop", metadata={"help": "backprop, adjoint or irdm."})
    image_size: int | None = field(default=None, metadata={"help": "Resize images (default: as is)."})
    preload: bool = field(default=True, metadata={"help": "Decode the whole dataset into memory once."})

    def config(
        self, channels: int, size: int, names: list[str], mean: list[float], std: list[float]
    ) -> ODEConfig:
        solver = {"method": self.method, "u": self.u, "v": self.v, "n_steps": self.n_steps}
        common = dict(
            num_channels=channels,
            image_size=size,
            gradient_mode=self.gradient_mode,
            image_mean=mean,
            image_std=std,
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
            **solver,
        )
        if self.preset:
            return ODEConfig.from_preset(self.preset, **common)
        return ODEConfig(
            channels=self.channels,
            ode_stages=[_as_bool(s) for s in self.ode_stages],
            norm_stem=self.norm_stem,
            norm_resnet=self.norm_resnet,
            norm_ode=self.norm_ode,
            ode_param_norm=self.ode_param_norm,
            **common,
        )


def _as_bool(value: str) -> bool:
    if str(value).lower() in ("1", "true", "yes", "ode"):
        return True
    if str(value).lower() in ("0", "false", "no", "resnet"):
        return False
    raise ValueError(f"ode_stages entries must be true/false, got {value!r}")


@dataclass
class MetaSolverArguments:
    """How the solver is chosen while training, adversarial training, and the robustness evaluation."""

    _argument_group_name = "method: meta-solver training and robustness"

    regime: str = field(default="fixed", metadata={"help": "fixed, switch, smoothing or ensemble."})
    member_u: list[float] = field(
        default_factory=list, metadata={"help": "switch / ensemble: the members' u (same method and steps)."}
    )
    member_v: list[float] = field(default_factory=list, metadata={"help": "The members' v (two-parameter)."})
    sigma_u: float = field(default=0.1, metadata={"help": "smoothing: spread of u around the config's u."})
    sigma_v: float | None = field(
        default=None, metadata={"help": "smoothing: spread of v (default sigma_u)."}
    )
    smoothing_distribution: str = field(default="normal", metadata={"help": "normal or cauchy."})
    adversarial_training: bool = field(
        default=False, metadata={"help": "Train on FGSM-RS adversarial images."}
    )
    train_eps: float = field(default=0.1, metadata={"help": "L-inf radius of adversarial training (pixels)."})
    eval_eps: float = field(default=0.1, metadata={"help": "L-inf radius of the FGSM / PGD evaluation."})
    pgd_steps: int = field(default=7, metadata={"help": "PGD iterations (step 2.5 eps / steps)."})
    max_attack_samples: int | None = field(
        default=500, metadata={"help": "Attack only the first N test samples (attacks are slow)."}
    )
    step_multipliers: list[int] = field(
        default_factory=lambda: [2, 4], metadata={"help": "Overfitting criterion: more steps at test time."}
    )
    overfitting_threshold: float = field(
        default=0.05, metadata={"help": "Accuracy drop that flags overfitting."}
    )
    overfitting_check: bool = field(
        default=True,
        metadata={"help": "Run the criterion: one test pass per test solver, a tight dopri5 among them."},
    )

    def __post_init__(self) -> None:
        if self.regime not in REGIMES:
            raise ValueError(f"unknown regime {self.regime!r}; available: {list(REGIMES)}")
        if self.regime in ("switch", "ensemble") and not self.member_u:
            raise ValueError(f"regime {self.regime!r} needs --member_u (the members' u values)")
        if self.member_v and len(self.member_v) != len(self.member_u):
            raise ValueError(f"need one --member_v per --member_u, got {self.member_v} for {self.member_u}")

    def members(self, base: SolverSpec) -> list[SolverSpec]:
        """The switch / ensemble members, or the smoothing centre and its ±sigma neighbours."""
        if self.regime == "smoothing":
            centre = SmoothingSolver(base, self.sigma_u, self.sigma_v).base  # u, v filled in
            out = [centre]
            for sign in (-1, 1):
                with contextlib.suppress(ValueError):  # a neighbour outside the family's domain: not shown
                    out.append(replace(centre, u=centre.u + sign * self.sigma_u))
            return out
        if self.regime == "fixed":
            return [base]
        vs = self.member_v or [base.v] * len(self.member_u)
        return [replace(base, u=u, v=v) for u, v in zip(self.member_u, vs, strict=True)]

    def sampler(self, base: SolverSpec, seed: int) -> SolverSampler | SolverEnsemble:
        if self.regime == "fixed":
            return FixedSolver(base)
        if self.regime == "switch":
            return SwitchSolver(self.members(base), seed=seed)
        if self.regime == "smoothing":
            return SmoothingSolver(base, self.sigma_u, self.sigma_v, self.smoothing_distribution, seed=seed)
        members = self.members(base)
        return SolverEnsemble(tuple(members), (1.0,) * len(members))


def _solver_sampling_loss(model: ODEForImageClassification, sampler: SolverSampler, base_loss: Any) -> Any:
    """Draw the batch's solver (the same on every process: the samplers are seeded alike), then the loss."""

    def loss_fn(wrapped: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        model.set_solver(sampler.sample())
        return base_loss(wrapped, batch)

    return loss_fn


def _regime_detail(meta_args: MetaSolverArguments, members: list[SolverSpec]) -> str:
    if meta_args.regime == "smoothing":
        sigma_v = f", sigma_v {meta_args.sigma_v:g}" if meta_args.sigma_v else ""
        return (
            f"{members[0].label()}; u, v drawn per batch from a {meta_args.smoothing_distribution} law, "
            f"sigma_u {meta_args.sigma_u:g}{sigma_v}"
        )
    if meta_args.regime in ("switch", "ensemble"):
        return "members: " + ", ".join(s.label() for s in members)
    return members[0].label()


def _reset_solver(step: int, model: ODEForImageClassification) -> None:
    model.set_solver()


def _accuracy(
    model: ODEForImageClassification, data: Any, accelerator: Any, forward: Any = None, desc: str = "eval"
) -> float:
    return evaluate_model(model, data, accelerator=accelerator, forward=forward, desc=desc)["accuracy"]


def robustness_rows(
    model: ODEForImageClassification,
    data: Any,
    solvers: list[tuple[str, SolverSpec | SolverEnsemble]],
    eps: float,
    pgd_steps: int,
    accelerator: Any = None,
) -> list[dict[str, Any]]:
    """Clean, FGSM and PGD (L-inf ``eps``) accuracy for each ``(label, solver or ensemble)``."""
    attacks = {"FGSM": Attack("fgsm", eps=eps), "PGD": Attack("pgd", eps=eps, steps=pgd_steps)}
    rows = []
    for label, solver in solvers:
        if isinstance(solver, SolverEnsemble):
            model.set_solver(ensemble=solver)
        else:
            model.set_solver(solver)
        row: dict[str, Any] = {"solver": label, "clean": _accuracy(model, data, accelerator)}
        for name, attack in attacks.items():

            def attacked(
                m: torch.nn.Module, batch: dict[str, torch.Tensor], attack: Attack = attack
            ) -> torch.Tensor:
                with torch.enable_grad():
                    adversarial = attack(
                        lambda x: m(pixel_values=x).logits, batch["pixel_values"], batch["labels"]
                    )
                with torch.no_grad():
                    return m(pixel_values=adversarial).logits

            row[name] = _accuracy(model, data, accelerator, forward=attacked, desc=name)
        logger.debug("robustness %s", row)
        rows.append(row)
    return rows


def run(
    data_args: DataArguments,
    model_args: ODEModelArguments,
    meta_args: MetaSolverArguments,
    training_args: TrainingArguments,
    hub_args: HubArguments,
) -> dict[str, Any]:
    """Train + evaluate (clean, overfitting criterion, FGSM / PGD) + save (+ push). Returns a summary dict;
    ``summary["model"]`` is the trained model, ``summary["tables"]`` the overfitting and robustness tables."""
    accelerator = make_accelerator(training_args)
    setup_logging(accelerator.is_main_process)
    model, train_data, test_data, collate = prepare_image_training(
        data_args,
        training_args.seed,
        ODEForImageClassification,
        model_args.model_name_or_path,
        model_args.image_size,
        model_args.preload,
        model_args.config,
    )
    base = model.config_solver()
    if base.method in FAMILIES:  # the family's default u / v made explicit, for the tables
        base = replace(base, **check_parameters(base.method, base.u, base.v))
    sampler = meta_args.sampler(base, seed=training_args.seed)

    loss, on_step_end = default_loss, None
    if meta_args.adversarial_training:
        loss = adversarial_loss(Attack("fgsm_rs", eps=meta_args.train_eps))
    if isinstance(sampler, SolverEnsemble):
        model.config.solver_ensemble = [{"u": s.u, "v": s.v, "weight": 1.0} for s in sampler.specs]
        model.set_solver(ensemble=sampler)
    elif not isinstance(sampler, FixedSolver):
        loss = _solver_sampling_loss(model, sampler, loss)
        on_step_end = _reset_solver  # between steps (and in the epoch evaluations): the config's solver

    result = train(
        model,
        training_args,
        train_data,
        test_data,
        data_collator=collate,
        accelerator=accelerator,
        loss_fn=loss,
        on_step_end=on_step_end,
        stateful={"solver_sampler": sampler} if isinstance(sampler, SolverSampler) else None,
    )
    model = accelerator.unwrap_model(model)
    model.set_solver()  # the config's solver (or ensemble) from now on
    metrics = dict(result.metrics)  # with num_samples: the test-set size in the card's model-index

    # Solver overfitting: the evaluation solver with more steps, other members, a tight dopri5.
    members = meta_args.members(base)
    overfitting = None
    if meta_args.overfitting_check:
        overfitting = solver_overfitting(
            lambda spec: (model.set_solver(spec), _accuracy(model, test_data, accelerator))[1],
            base,
            test_solvers=default_test_solvers(
                base, meta_args.step_multipliers, [{"u": s.u, "v": s.v} for s in members if s != base]
            ),
            threshold=meta_args.overfitting_threshold,
        )
    attack_data = test_data
    if meta_args.max_attack_samples is not None and meta_args.max_attack_samples < len(test_data):
        attack_data = Subset(test_data, range(meta_args.max_attack_samples))
    solvers: list[tuple[str, SolverSpec | SolverEnsemble]] = [(s.label(), s) for s in members]
    if isinstance(sampler, SolverEnsemble):
        solvers.append(("ensemble of the above", sampler))
    robustness = robustness_rows(
        model, attack_data, solvers, meta_args.eval_eps, meta_args.pgd_steps, accelerator
    )
    model.set_solver()
    attack_args: dict[str, dict[str, Any]] = {}
    for row in robustness[-1:]:
        for attack in ("FGSM", "PGD"):
            if attack in row:
                metrics[f"{attack.lower()}_accuracy"] = row[attack]
                # One set of args for both attacks: the Hub groups them into one result (same split).
                attack_args[f"{attack.lower()}_accuracy"] = {
                    "num_samples": len(attack_data),
                    "eps": meta_args.eval_eps,
                    "norm": "linf",
                    "pgd_steps": meta_args.pgd_steps,
                }

    tables = {
        **(
            {"Accuracy across test-time solvers (solver-overfitting criterion)": overfitting.rows}
            if overfitting
            else {}
        ),
        f"Robust accuracy, L-inf eps {meta_args.eval_eps:g} ({len(attack_data)} test images)": robustness,
    }
    summary: dict[str, Any] = {
        "dataset": data_args.dataset,
        "regime": meta_args.regime,
        "parameters": count_parameters(model),
        "train_seconds": round(result.train_runtime, 1),
        **{f"test_{k}": v for k, v in metrics.items() if k != "num_samples"},
        "overfits": overfitting.overfits if overfitting else None,
    }
    if accelerator.is_main_process:
        info = CardInfo(
            dataset=data_args.dataset,
            dataset_args={"split_seed": data_args.split_seed},
            metrics=metrics,
            metric_args=attack_args,
            training_args=arguments_dict(training_args),
            tables=tables,
            extra={
                "regime": meta_args.regime,
                "regime_detail": _regime_detail(meta_args, members),
                "adversarial": f"FGSM with random start, eps {meta_args.train_eps:g}"
                if meta_args.adversarial_training
                else "",
                "overfitting_verdict": overfitting.verdict()
                if overfitting
                else "not checked (--overfitting_check false)",
            },
        )
        published = publish(model, Path(training_args.output_dir) / "model", info, hub_args, "your-name/ode")
        summary["model_dir"] = published.pop("dir")
        summary.update(published)
    accelerator.wait_for_everyone()
    summary["model"] = model
    summary["tables"] = tables
    return summary


def main(argv: list[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    return command_main(
        (DataArguments, ODEModelArguments, MetaSolverArguments, TrainingArguments, HubArguments),
        run,
        argv,
        prog,
        __doc__,
    )
