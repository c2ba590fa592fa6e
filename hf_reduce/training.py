"""The one train / evaluate loop that every hf_reduce script shares, driven by accelerate.

accelerate gives device placement, DDP, mixed precision, gradient accumulation and checkpoint state; this
module adds what a script would otherwise repeat: seeding, a seeded sampler whose order survives a resume,
an LR schedule, progress bars on the main process, metrics gathered once per sample, atomic checkpoints and
``resume_from_checkpoint``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader, Dataset
from transformers import get_scheduler

from . import checkpoints
from .checkpoints import find_checkpoint as find_checkpoint  # re-exported
from .metrics import load_metric
from .progress import progress
from .runs import active_run, display_name, resolve_checkpoint

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, dict[str, Any]], tuple[torch.Tensor, Any]]


@dataclass
class TrainingArguments:
    """Arguments of :func:`train`; names follow ``transformers.TrainingArguments`` where they overlap."""

    _argument_group_name = "training"

    output_dir: str = field(
        default="outputs/run",
        metadata={
            "help": "Where checkpoints and the model go (default on the CLI: outputs/<command>-<dataset>)."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the run already in output_dir (its checkpoints and model) with this one."},
    )
    num_train_epochs: float = field(
        default=3.0, metadata={"help": "Epochs to train (ignored if max_steps > 0)."}
    )
    max_steps: int = field(
        default=-1, metadata={"help": "Optimizer steps to train; overrides num_train_epochs."}
    )
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Training batch per process."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Evaluation batch per process."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "Decoupled weight decay (AdamW) or L2 (SGD)."})
    optimizer: str = field(default="adamw", metadata={"help": "adamw or sgd (with momentum)."})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Any transformers scheduler name."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of steps of linear warm-up."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    max_grad_norm: float = field(
        default=0.0, metadata={"help": "Clip gradients to this norm (0: no clipping)."}
    )
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16."})
    seed: int = field(default=42, metadata={"help": "Seed of weights' init, dropout and data order."})
    logging_steps: int = field(default=50, metadata={"help": "Log the running loss every N optimizer steps."})
    eval_strategy: str = field(default="epoch", metadata={"help": "no or epoch: when to evaluate."})
    checkpointing_steps: int = field(default=0, metadata={"help": "Save the state every N steps (0: never)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint folder, 'latest' (the newest intact one in output_dir) or 'auto' (as latest, "
            "but start afresh when there is none yet: for preemptible jobs)."
        },
    )
    metrics: list[str] = field(default_factory=lambda: ["accuracy"], metadata={"help": "accuracy and/or f1."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})
    report_to: list[str] = field(
        default_factory=lambda: ["none"],
        metadata={"help": "Experiment trackers (accelerate's): tensorboard, trackio, wandb, all or none."},
    )

    def __post_init__(self) -> None:
        """Every argument checked now, before any work, with the bad value and the allowed ones."""
        from transformers import SchedulerType

        from .metrics import AVAILABLE_METRICS

        choices = {
            "optimizer": ("adamw", "sgd"),
            "eval_strategy": ("no", "epoch"),
            "mixed_precision": ("no", "fp16", "bf16"),
            "lr_scheduler_type": tuple(t.value for t in SchedulerType),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        trackers = ("none", "all", "tensorboard", "trackio", "wandb")
        if not self.report_to or any(t not in trackers for t in self.report_to):
            raise ValueError(f"report_to must be among {list(trackers)}, got {self.report_to}")
        unknown = [m for m in self.metrics if m not in AVAILABLE_METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"metrics must be among {list(AVAILABLE_METRICS)}, got {self.metrics}")
        at_least = {
            "per_device_train_batch_size": 1,
            "per_device_eval_batch_size": 1,
            "gradient_accumulation_steps": 1,
            "save_total_limit": 1,  # 0 would delete every checkpoint right after writing it
            "logging_steps": 0,
            "checkpointing_steps": 0,
            "dataloader_num_workers": 0,
            "weight_decay": 0,
            "max_grad_norm": 0,
            "momentum": 0,
        }
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:  # numpy's and accelerate's seeding take 32-bit seeds
            raise ValueError(f"--seed must lie in [0, 2**32), got {self.seed}")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise ValueError(
                f"num_train_epochs must be > 0 when max_steps <= 0, got num_train_epochs={self.num_train_epochs} "
                f"and max_steps={self.max_steps}"
            )


class NonFiniteError(ArithmeticError):
    """Training produced a NaN or infinite loss or gradient: the run stops instead of saving a broken model."""


def _non_finite_inputs(batch: dict[str, Any]) -> str:
    for name, value in batch.items():
        if torch.is_tensor(value) and value.is_floating_point():
            bad = ~torch.isfinite(value.reshape(len(value), -1)).all(1)
            if bad.any():
                return (
                    f"; the batch's {name!r} holds non-finite values (first in row {int(bad.nonzero()[0])})"
                )
    return "; the batch's inputs are finite (the learning rate or the model diverged)"


def _non_finite_report(what, value, batch, global_step, epoch, batch_index, scheduler) -> str:
    return (
        f"non-finite {what} ({value.detach().float().flatten()[0].item()}) at optimizer step {global_step + 1}, "
        f"epoch {epoch + 1}, batch {batch_index + 1}, learning rate {scheduler.get_last_lr()[0]:.3g}"
        + _non_finite_inputs(batch)
    )


def _check_gradients(model, batch, global_step, epoch, batch_index, scheduler) -> None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if grads and not torch.stack([torch.isfinite(g).all() for g in grads]).all():
        bad = next(g for g in grads if not torch.isfinite(g).all())
        raise NonFiniteError(_non_finite_report("gradient", bad[~torch.isfinite(bad)], batch, global_step, epoch,
                                                batch_index, scheduler))  # fmt: skip


@dataclass
class TrainOutput:
    """What :func:`train` returns: the final step, mean training loss, last metrics and the log history."""

    global_step: int
    train_loss: float
    metrics: dict[str, float]
    log_history: list[dict[str, float]]
    train_runtime: float


def _in_brief(metrics: dict[str, float]) -> str:
    """``accuracy 0.9667, f1 0.9650 (360 samples)``: a metrics dict as one short log line."""
    shown = ", ".join(
        f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}" for k, v in metrics.items() if k != "num_samples"
    )
    return f"{shown} ({metrics['num_samples']} samples)" if "num_samples" in metrics else shown


def default_loss(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, Any]:
    """Hugging Face convention: the model computes the loss when the batch holds ``labels``."""
    outputs = model(**batch)
    return outputs.loss, outputs


def make_accelerator(args: TrainingArguments, cpu: bool | None = None) -> Accelerator:
    """The Accelerator that :func:`train` uses when none is given."""
    trackers = [t for t in args.report_to if t != "none"]
    return Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        cpu=bool(cpu),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        step_scheduler_with_optimizer=False,
        log_with=("all" if "all" in trackers else trackers) or None,
        project_dir=args.output_dir if trackers else None,
    )


def _start_tracking(accelerator: Accelerator, args: TrainingArguments) -> bool:
    """Start accelerate's trackers once per accelerator (logging_steps and evaluations go there)."""
    if not accelerator.log_with:
        return False
    if not getattr(accelerator, "_hf_reduce_tracking", False):
        config = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in asdict(args).items()}
        accelerator.init_trackers(display_name(args.output_dir) or "hf_reduce", config=config)
        accelerator._hf_reduce_tracking = True
    return True


def _loader(
    dataset: Dataset, batch_size: int, shuffle: bool, collate: Callable | None, workers: int, seed: int = 0
) -> DataLoader:
    # A private generator: starting an epoch's iterator must not draw from the global RNG, or a resumed
    # run (whose RNG state comes from the checkpoint) would see different dropout masks afterwards.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate,
        num_workers=workers,
        generator=generator,
    )


def _optimizer(model: torch.nn.Module, args: TrainingArguments) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if args.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay
        )
    return torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)


def _evaluation_loader(
    dataset: Dataset | DataLoader,
    batch_size: int,
    data_collator: Callable | None,
    accelerator: Accelerator | None,
) -> tuple[Accelerator, DataLoader]:
    """The accelerator (a CPU/GPU one when none is given) and its prepared, unshuffled evaluation loader."""
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    loader = (
        dataset if isinstance(dataset, DataLoader) else _loader(dataset, batch_size, False, data_collator, 0)
    )
    return accelerator, accelerator.prepare_data_loader(loader)


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    dataset: Dataset | DataLoader,
    *,
    metrics: Iterable[str] = ("accuracy",),
    batch_size: int = 256,
    data_collator: Callable | None = None,
    accelerator: Accelerator | None = None,
    forward: Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor] | None = None,
    desc: str = "eval",
    disable_tqdm: bool = False,
) -> dict[str, float]:
    """Classification metrics of ``model`` on ``dataset``, gathered over processes once per sample.

    ``forward(model, batch) -> logits`` replaces ``model(**inputs).logits`` (for attacks, other solvers...).
    """
    accelerator, loader = _evaluation_loader(dataset, batch_size, data_collator, accelerator)
    was_training = model.training
    model.eval()
    modules = {name: load_metric(name) for name in metrics}
    n_seen = 0
    for batch in progress(
        loader, desc=desc, disable=disable_tqdm or not accelerator.is_main_process, leave=False
    ):
        labels = batch["labels"]
        if forward is None:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            logits = model(**inputs).logits
        else:
            logits = forward(model, batch)
        predictions, references = accelerator.gather_for_metrics((logits.argmax(-1), labels))
        n_seen += len(references)
        for module in modules.values():
            module.add_batch(predictions=predictions.cpu(), references=references.cpu())
    model.train(was_training)
    results: dict[str, float] = {}
    for name, module in modules.items():
        kwargs = {"num_classes": int(logits.shape[-1])} if name == "f1" else {}
        results.update(module.compute(**kwargs))
    results["num_samples"] = n_seen
    return results


@torch.no_grad()
def evaluate_language_model(
    model: torch.nn.Module,
    dataset: Dataset | DataLoader,
    *,
    metrics: Iterable[str] = (),
    batch_size: int = 256,
    data_collator: Callable | None = None,
    accelerator: Accelerator | None = None,
    desc: str = "eval",
    disable_tqdm: bool = False,
) -> dict[str, float]:
    """Causal-LM loss (mean next-token NLL over the labelled tokens) and perplexity of ``model`` on ``dataset``.

    Rows carry ``labels`` aligned with ``input_ids`` (``-100``: not scored), as transformers' causal-LM
    collators make them; the shift by one token is done here. Sums are gathered once per sample, so the mean
    is over tokens of all processes, whatever the batch or process count. ``metrics`` is not used (the
    signature is :func:`evaluate_model`'s, so :func:`train` takes either).
    """
    accelerator, loader = _evaluation_loader(dataset, batch_size, data_collator, accelerator)
    was_training = model.training
    model.eval()
    nll, tokens, n_seen = 0.0, 0, 0
    for batch in progress(
        loader, desc=desc, disable=disable_tqdm or not accelerator.is_main_process, leave=False
    ):
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits[:, :-1].float()
        targets = labels[:, 1:]
        per_token = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=-100, reduction="none"
        )
        row_nll, row_tokens = per_token.sum(1), (targets != -100).sum(1)
        row_nll, row_tokens = accelerator.gather_for_metrics((row_nll, row_tokens))
        nll += float(row_nll.double().sum())
        tokens += int(row_tokens.sum())
        n_seen += len(row_tokens)
    model.train(was_training)
    if tokens == 0:
        raise ValueError("no labelled tokens to evaluate: every label is -100 (texts too short?)")
    loss = nll / tokens
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "num_tokens": tokens,
        "num_samples": n_seen,
    }


@dataclass
class _Loop:
    """What the stages of :func:`train` share: the prepared objects, the schedule and where training stands."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_loader: DataLoader
    scheduler: Any
    steps_per_epoch: int
    total_steps: int
    num_epochs: int
    adapter_run: bool
    trainable: set[str]
    global_step: int = 0
    start_epoch: int = 0
    skip_batches: int = 0


def _prepare(model, args, train_dataset, data_collator, optimizer, accelerator) -> _Loop:
    """Stage 1: seed, build the loader, optimizer and LR schedule, and hand them to accelerate."""
    set_seed(args.seed)
    train_loader = _loader(
        train_dataset,
        args.per_device_train_batch_size,
        True,
        data_collator,
        args.dataloader_num_workers,
        args.seed,
    )
    optimizer = optimizer or _optimizer(model, args)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_epoch = max(1, math.ceil(len(train_loader) / args.gradient_accumulation_steps))
    total_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    # The scheduler's state goes into trainer_state.json (not accelerate's custom-object pickle, which
    # load_state would unpickle), and the RNG states into rng_state_<rank>.json.
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=int(args.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    # Adapter runs (PEFT models) checkpoint their trainable parameters only, not the frozen base model.
    adapter_run = isinstance(getattr(accelerator.unwrap_model(model), "peft_config", None), dict)
    return _Loop(
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        train_loader=train_loader,
        scheduler=scheduler,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        num_epochs=math.ceil(total_steps / steps_per_epoch),
        adapter_run=adapter_run,
        trainable={n for n, p in model.named_parameters() if p.requires_grad},
    )


def _resume(loop: _Loop, args: TrainingArguments, stateful: dict[str, Any] | None) -> None:
    """Stage 2: restore the verified checkpoint that ``resume_from_checkpoint`` names (``auto`` with none:
    start afresh), refusing a damaged one or one whose counters disagree with this run's schedule."""
    if loop.accelerator.is_main_process:
        checkpoints.remove_stray_checkpoints(args.output_dir)
    if not args.resume_from_checkpoint:
        return
    checkpoint = resolve_checkpoint(args.output_dir, args.resume_from_checkpoint, active_run(args.output_dir))
    if checkpoint is None:
        logger.info("no checkpoint in %s yet: starting afresh", args.output_dir)
        return
    state = checkpoints.load_checkpoint(
        loop.accelerator,
        checkpoint,
        loop.scheduler,
        stateful,
        adapter_run=loop.adapter_run,
        trainable=loop.trainable,
        steps_per_epoch=loop.steps_per_epoch,
        accumulation=args.gradient_accumulation_steps,
    )
    loop.global_step, loop.start_epoch = state["global_step"], state["epoch"]
    loop.skip_batches = state["batches_in_epoch"]
    logger.info("resumed from %s at step %d (epoch %d)", checkpoint, loop.global_step, loop.start_epoch)


def _checkpoint(loop: _Loop, args: TrainingArguments, epoch: int, batches_done: int, stateful) -> None:
    """Stage 4: save where training stands so that a resume continues exactly here."""
    state = {"global_step": loop.global_step, "epoch": epoch, "batches_in_epoch": batches_done}
    if batches_done >= len(loop.train_loader):  # the epoch is complete: resume at the next one
        state.update(epoch=epoch + 1, batches_in_epoch=0)
    extra = {name: obj.state_dict() for name, obj in (stateful or {}).items()}
    checkpoints.save_checkpoint(
        loop.accelerator,
        args.output_dir,
        args.save_total_limit,
        {**state, "scheduler": loop.scheduler.state_dict(), "stateful": extra},
    )


def train(
    model: torch.nn.Module,
    args: TrainingArguments,
    train_dataset: Dataset,
    eval_dataset: Dataset | None = None,
    *,
    data_collator: Callable | None = None,
    loss_fn: LossFn = default_loss,
    optimizer: torch.optim.Optimizer | None = None,
    accelerator: Accelerator | None = None,
    on_step_end: Callable[[int, torch.nn.Module], None] | None = None,
    stateful: dict[str, Any] | None = None,
    evaluator: Callable[..., dict[str, float]] = evaluate_model,
) -> TrainOutput:
    """Train ``model`` on ``train_dataset``; evaluate on ``eval_dataset`` after each epoch.

    The stages: :func:`_prepare` (loader, optimizer, schedule), :func:`_resume` (a verified checkpoint),
    the epoch loop (below; :func:`_checkpoint` every ``checkpointing_steps``); publishing the result is the
    command's (see :mod:`hf_reduce.runs`).

    Args:
        model: any module whose ``loss_fn(model, batch)`` gives ``(loss, outputs)``; by default the model
            returns ``.loss`` when the batch has ``labels`` (transformers convention).
        args: :class:`TrainingArguments`.
        train_dataset, eval_dataset: map-style datasets whose rows ``data_collator`` turns into dict batches.
        loss_fn: override the loss (adversarial training, distillation, solver sampling...).
        optimizer: a custom optimizer (e.g. per-group learning rates); AdamW/SGD over trainable params if None.
        accelerator: an existing Accelerator; one is made from ``args`` otherwise.
        on_step_end: called with ``(global_step, model)`` after each optimizer step.
        stateful: further random sources that shape training (``{name: obj}`` with JSON-able
            ``state_dict()`` / ``load_state_dict()``: solver samplers...), checkpointed and restored with the rest.
        evaluator: the per-epoch evaluation, :func:`evaluate_model` (classification metrics) or
            :func:`evaluate_language_model` (causal-LM loss and perplexity).

    Returns:
        :class:`TrainOutput`. The trained weights are in ``model`` (unwrapped).
    """
    loop = _prepare(
        model, args, train_dataset, data_collator, optimizer, accelerator or make_accelerator(args)
    )
    accelerator, model, optimizer, scheduler = loop.accelerator, loop.model, loop.optimizer, loop.scheduler
    hook = (
        accelerator.register_save_state_pre_hook(checkpoints.keep_only(loop.trainable))
        if loop.adapter_run
        else None
    )
    _resume(loop, args, stateful)
    processes = (
        f" on {accelerator.num_processes} processes ({accelerator.distributed_type.value})"
        if accelerator.num_processes > 1
        else ""
    )
    logger.info(
        "training on %d examples: %d epoch(s), %d optimizer steps%s",
        len(train_dataset),
        loop.num_epochs,
        loop.total_steps,
        processes,
    )
    tracking = _start_tracking(accelerator, args)
    history: list[dict[str, float]] = []
    losses: list[float] = []
    metrics: dict[str, float] = {}
    started = time.perf_counter()
    bar = progress(
        total=loop.total_steps,
        initial=loop.global_step,
        desc="train",
        disable=args.disable_tqdm or not accelerator.is_main_process,
    )
    model.train()
    # Resuming the final checkpoint trains no further (never a step past max_steps) but still evaluates
    # below, so the run reports and publishes exactly what the uninterrupted run did.
    finished = loop.global_step >= loop.total_steps
    evaluating = eval_dataset is not None and args.eval_strategy == "epoch"

    def evaluate() -> dict[str, float]:
        return evaluator(
            model,
            eval_dataset,
            metrics=args.metrics,
            batch_size=args.per_device_eval_batch_size,
            data_collator=data_collator,
            accelerator=accelerator,
            disable_tqdm=args.disable_tqdm,
        )

    # Stage 3: the epoch loop.
    for epoch in range(loop.start_epoch, loop.num_epochs if not finished else loop.start_epoch):
        loop.train_loader.set_epoch(epoch)
        loader = loop.train_loader
        batches_done = 0
        if epoch == loop.start_epoch and loop.skip_batches:
            loader = accelerator.skip_first_batches(loop.train_loader, loop.skip_batches)
            batches_done = loop.skip_batches
        running = []
        for batch in loader:
            with accelerator.accumulate(model):
                loss, _ = loss_fn(model, batch)
                if not torch.isfinite(loss.detach()).all():
                    raise NonFiniteError(
                        _non_finite_report(
                            "loss", loss, batch, loop.global_step, epoch, batches_done, scheduler
                        )
                    )
                accelerator.backward(loss)
                # fp16's grad scaler expects (and skips) overflowing steps; elsewhere a NaN/inf gradient is fatal.
                if accelerator.sync_gradients and args.mixed_precision != "fp16":
                    _check_gradients(model, batch, loop.global_step, epoch, batches_done, scheduler)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            batches_done += 1
            running.append(loss.detach().float().item())
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            loop.global_step += 1
            bar.update(1)
            losses.append(sum(running) / len(running))
            running = []
            if on_step_end is not None:
                on_step_end(loop.global_step, accelerator.unwrap_model(model))
            if args.logging_steps and loop.global_step % args.logging_steps == 0:
                entry = {"step": loop.global_step, "loss": losses[-1], "lr": scheduler.get_last_lr()[0]}
                history.append(entry)
                if tracking:
                    accelerator.log(
                        {"train/loss": entry["loss"], "train/learning_rate": entry["lr"]},
                        step=loop.global_step,
                    )
                bar.set_postfix(loss=f"{entry['loss']:.4f}")
                logger.debug("step %d: loss %.4f lr %.3g", loop.global_step, entry["loss"], entry["lr"])
            if args.checkpointing_steps and loop.global_step % args.checkpointing_steps == 0:
                _checkpoint(loop, args, epoch, batches_done, stateful)
            if loop.global_step >= loop.total_steps:
                break
        if evaluating:
            metrics = evaluate()
            history.append(
                {"epoch": epoch + 1, "step": loop.global_step, **{f"eval_{k}": v for k, v in metrics.items()}}
            )
            # Quiet: earlier epochs go to the bar and the debug log, the last one to the log.
            last = loop.global_step >= loop.total_steps or epoch + 1 == loop.num_epochs
            logger.log(logging.INFO if last else logging.DEBUG, "epoch %d: %s", epoch + 1, _in_brief(metrics))
            bar.set_postfix({f"eval_{k}": f"{v:.4f}" for k, v in metrics.items() if k != "num_samples"})
            if tracking:
                accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=loop.global_step)
            model.train()
        if loop.global_step >= loop.total_steps:
            break
    if finished and evaluating:
        metrics = evaluate()
        logger.info("resumed a finished run (step %d): %s", loop.global_step, _in_brief(metrics))
    bar.close()
    if hook is not None:
        hook.remove()
    if tracking:
        accelerator.end_training()
        accelerator._hf_reduce_tracking = False
    accelerator.wait_for_everyone()
    return TrainOutput(
        global_step=loop.global_step,
        train_loss=sum(losses) / max(1, len(losses)),
        metrics=metrics,
        log_history=history,
        train_runtime=time.perf_counter() - started,
    )


def arguments_dict(args: Any) -> dict[str, Any]:
    """A dataclass of arguments as a JSON-friendly dict (for model cards and logs)."""
    return {k: v for k, v in asdict(args).items() if v is not None}
