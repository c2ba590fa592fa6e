"""Argument groups that every command shares, and small helpers for their reports."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import textwrap
from argparse import SUPPRESS, ArgumentDefaultsHelpFormatter, RawDescriptionHelpFormatter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import HfArgumentParser

from ..hub import CardInfo, push_to_hub, save_for_hub
from ..profiling import count_parameters  # noqa: F401  (re-exported for the commands)
from ..runs import RunFolderError, fingerprint, run_folder

logger = logging.getLogger(__name__)


class HelpFormatter(ArgumentDefaultsHelpFormatter, RawDescriptionHelpFormatter):
    """The description as written, and each option's default (unless it has none to show)."""

    def _get_help_string(self, action: Any) -> str:
        if action.default in (None, [], "", SUPPRESS) or "(default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


@dataclass
class DatasetArguments:
    """Which data to use (see :mod:`hf_reduce.data` for the accepted sources): what image and text commands
    share. Each modality's subclass names its embedded sources and its column."""

    _argument_group_name = "data"

    dataset: str = field(default="digits", metadata={"help": "Hub dataset name or local file/folder."})
    label_column: str | None = field(default=None, metadata={"help": "Label column of the source."})
    test_size: float = field(
        default=0.2, metadata={"help": "Held-out fraction when the source has no test split."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows."}
    )
    max_test_samples: int | None = field(default=None, metadata={"help": "Use only the first N test rows."})
    split_seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the train/test split when the source has none (fixed: not the training seed)."
        },
    )

    def __post_init__(self) -> None:
        for name in ("max_train_samples", "max_test_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or left out for all rows), got {value}")
        if not 0 < self.test_size < 1:
            raise ValueError(f"test_size must lie in (0, 1), got {self.test_size}")

    def load(self, task: str) -> Any:
        """The ``DatasetDict`` these arguments describe, for ``task`` ``"image"``, ``"text"`` (classification)
        or ``"corpus"`` (texts alone, for causal-LM fine-tuning)."""
        from ..data import load_image_classification, load_text_classification, load_text_corpus

        splits = dict(
            test_size=self.test_size,
            split_seed=self.split_seed,
            max_train_samples=self.max_train_samples,
            max_test_samples=self.max_test_samples,
        )
        if task == "corpus":
            if self.label_column is not None:
                raise ValueError(f"--label_column {self.label_column!r}: a causal-LM corpus has no labels")
            return load_text_corpus(self.dataset, text_column=getattr(self, "text_column", None), **splits)
        if task == "image":
            loader, column = load_image_classification, {"image_column": getattr(self, "image_column", None)}
        else:
            loader, column = load_text_classification, {"text_column": getattr(self, "text_column", None)}
        return loader(self.dataset, label_column=self.label_column, **splits, **column)


@dataclass
class DataArguments(DatasetArguments):
    """Which image data to use."""

    dataset: str = field(
        default="digits",
        metadata={
            "help": "Hub dataset name, local file/folder, or the embedded digits (scikit-learn's 8x8)."
        },
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column of the source."})


@dataclass
class HubArguments:
    """Publishing the result."""

    _argument_group_name = "Hub"

    push_to_hub: bool = field(default=False, metadata={"help": "Upload the result with its model card."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repository id, e.g. you/vgg-digits."})
    hub_private: bool = field(default=False, metadata={"help": "Create the repository as private."})

    def __post_init__(self) -> None:
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/model-name)")
        if self.hub_model_id is not None:
            from huggingface_hub.utils import HFValidationError, validate_repo_id

            try:
                validate_repo_id(self.hub_model_id)
            except HFValidationError:
                raise ValueError(
                    f"--hub_model_id {self.hub_model_id!r} is not a Hub repository id: use 'name' or "
                    "'your-name/name' (letters, digits, '-', '_' and '.', at most 96 characters)"
                ) from None


def format_table(rows: list[dict[str, Any]], max_width: int = 100) -> str:
    """A plain-text table for terminals (the CLI's and benchmarks' output), at most ``max_width`` columns
    wide where words allow: the widest columns wrap onto further lines first."""
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, int) and abs(value) >= 10_000:
            return f"{value:,}"
        if isinstance(value, float):
            if value != 0 and abs(value) < 1e-3:
                return f"{value:.2e}"
            return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"
        return str(value)

    table = [columns, *([cell(row.get(c, "")) for c in columns] for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    # The narrowest a column can get: its longest word (words are never broken).
    floors = [max(len(w) for r in table for w in (r[i].split() or [""])) for i in range(len(columns))]
    while sum(widths) + 2 * (len(widths) - 1) > max_width:
        shrinkable = [i for i in range(len(widths)) if widths[i] > floors[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1

    def render(values: list[str]) -> list[str]:
        wrapped = [
            textwrap.wrap(v, w, break_long_words=False) or [""] for v, w in zip(values, widths, strict=True)
        ]
        height = max(len(lines) for lines in wrapped)
        return [
            "  ".join(
                (lines[k] if k < len(lines) else "").ljust(w)
                for lines, w in zip(wrapped, widths, strict=True)
            ).rstrip()
            for k in range(height)
        ]

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([*render(table[0]), rule, *(line for r in table[1:] for line in render(r))])


def image_geometry(dataset: Any, image_size: int | None) -> tuple[int, int]:
    """(channels, size) of an image dataset's first image, or ``image_size`` when given."""
    first = dataset[0]["pixel_values"]
    channels = 1 if first.mode in ("L", "1", "I", "F") else 3
    return channels, image_size or first.size[0]


def channel_stats(data: Any, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean / std of preloaded images (0.5 / 0.5 when the data is not preloaded)."""
    pixels = data.tensors["pixel_values"] if hasattr(data, "tensors") else None
    if pixels is None:
        return [0.5] * channels, [0.5] * channels
    mean = pixels.mean(dim=(0, 2, 3))
    std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def default_output_dir(command: str, dataset: str) -> str:
    """``outputs/<command>-<data>``: each command's own default folder, so one never overwrites another's."""
    data = Path(dataset).name if "/" in dataset and Path(dataset).exists() else dataset.replace("/", "-")
    return f"outputs/{command}-{data or 'data'}"


#: Where ``hf-reduce train-cnn`` saves its model by default: what the reducing commands read by default.
DEFAULT_TRAINED_CNN = f"{default_output_dir('train-cnn', 'digits')}/model"


def load_trained_model(model_class: Any, model_name_or_path: str, *, expected_type: str | None = None) -> Any:
    """``model_class.from_pretrained`` that refuses what would silently be wrong: no model at a local path
    (with the command that makes one), a model of another family, and weights that do not match the config
    (missing or unexpected keys, which transformers would otherwise fill with random values)."""
    path = Path(model_name_or_path).expanduser()
    looks_local = model_name_or_path.startswith((".", "/", "~")) or model_name_or_path.count("/") != 1
    if looks_local and not path.exists():
        raise FileNotFoundError(
            f"no model at {model_name_or_path}; train one with `hf-reduce train-cnn` (it saves to "
            "outputs/<run>/model) or pass a Hub model id"
        )
    if path.is_file():
        raise ValueError(
            f"--model_name_or_path {model_name_or_path} is a file; give the folder that holds its config.json "
            "and weights"
        )
    if path.is_dir():
        _check_config_types(path / "config.json", getattr(model_class, "config_class", None))
    if expected_type is not None:
        from transformers import AutoConfig

        found = AutoConfig.from_pretrained(model_name_or_path).model_type
        if found != expected_type:
            raise ValueError(
                f"{model_name_or_path} is a {found} model; this command needs a {expected_type} model"
            )
    from safetensors import SafetensorError

    try:
        model, info = model_class.from_pretrained(model_name_or_path, output_loading_info=True)
    except SafetensorError as error:
        raise ValueError(
            f"the weights in {model_name_or_path} are damaged ({error}); save or download the model again"
        ) from None
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        detail = "; ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {v[:3]})" for k, v in problems.items())
        raise ValueError(f"the weights in {model_name_or_path} do not match its config: {detail}")
    return model


def _check_config_types(path: Path, config_class: type | None) -> None:
    """Each value of a saved ``config.json`` has the type of the config class's default (a hand-edited
    ``"image_size": "8"`` would otherwise fail deep inside the model's constructor)."""
    from ..runs import read_json

    if not path.is_file():
        return
    saved = read_json(path, "the model's config")
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds a JSON {type(saved).__name__}, not a config object")
    if config_class is None:  # an Auto class: the config class of the saved model_type
        from transformers import CONFIG_MAPPING

        if saved.get("model_type") not in CONFIG_MAPPING:
            return
        config_class = CONFIG_MAPPING[saved["model_type"]]
    defaults = config_class().to_dict()
    for key, value in saved.items():
        default = defaults.get(key)
        if default is None or value is None:
            continue
        kinds = (int, float) if isinstance(default, float) else (type(default),)
        wrong = not isinstance(value, kinds) or (isinstance(value, bool) != isinstance(default, bool))
        if wrong:
            raise ValueError(
                f"{path}: {key} is {value!r} (a {type(value).__name__}) where a {type(default).__name__} is "
                "expected; correct it or save the model again"
            )


def prepare_image_training(
    data_args: DataArguments,
    seed: int,
    model_class: Any,
    model_name_or_path: str | None,
    image_size: int | None,
    preload: bool,
    build_config: Callable[[int, int, list[str], list[float], list[float]], Any],
) -> tuple[Any, Any, Any, Callable | None]:
    """``(model, train data, test data, collator)`` for an image-classifier training command.

    The model comes from ``model_name_or_path`` (its geometry decides the image size), or is built from
    ``build_config(channels, size, label names, channel means, channel stds)`` with the data's geometry.
    ``preload`` decodes the images into tensors once; otherwise a collator decodes each batch.
    """
    from ..data import ImageCollator, image_tensors, label_names

    dsd = data_args.load("image")
    if model_name_or_path:
        model = load_trained_model(
            model_class, model_name_or_path, expected_type=model_class.config_class.model_type
        )
        channels, size = model.config.num_channels, model.config.image_size
        if image_size is not None and image_size != size:
            raise ValueError(
                f"--image_size {image_size} conflicts with the image_size {size} of {model_name_or_path}; drop it "
                "(a trained model's input size is fixed)"
            )
    else:
        channels, size = image_geometry(dsd["train"], image_size)
    if preload:
        train_data, test_data = (image_tensors(dsd[s], channels, size) for s in ("train", "test"))
        collate = None
    else:
        train_data, test_data, collate = dsd["train"], dsd["test"], ImageCollator(channels, size)
    if not model_name_or_path:
        mean, std = channel_stats(train_data, channels)
        config = build_config(channels, size, label_names(dsd), mean, std)
        torch.manual_seed(seed)
        model = model_class(config)
    return model, train_data, test_data, collate


#: Set by ``--verbose`` (or ``HF_REDUCE_VERBOSE=1``): every log line and peer warning, with timestamps.
VERBOSE_ENV = "HF_REDUCE_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def pop_verbose(argv: list[str] | None) -> list[str]:
    """``argv`` without ``--verbose``, which switches :func:`setup_logging` to verbose for this process."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:
        os.environ[VERBOSE_ENV] = "1"
    return [a for a in argv if a != "--verbose"]


class _BriefFormatter(logging.Formatter):
    """INFO lines as bare messages; warnings and errors keep their level and source."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO:
            return record.getMessage()
        return f"{record.levelname} {record.name}: {record.getMessage()}"


def setup_logging(main_process: bool = True) -> None:
    """Quiet by default: our own INFO lines (what is loaded, where it is saved, the final metrics) and every
    warning or error. The peers' INFO chatter, their progress bars (weights loading, shard writing,
    tokenising) and their LOAD REPORT tables are hidden; ``--verbose`` shows everything."""
    loud = verbose()
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s") if loud else _BriefFormatter()
    )
    logging.basicConfig(level=logging.INFO if loud else logging.WARNING, handlers=[handler])
    ours = logging.DEBUG if loud else logging.INFO
    logging.getLogger("hf_reduce").setLevel(ours if main_process else logging.WARNING)
    if loud:
        return
    import datasets
    import huggingface_hub
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    logging.getLogger("accelerate").setLevel(logging.WARNING)


def publish(
    model: Any, folder: Path, info: CardInfo, hub_args: HubArguments, default_repo: str
) -> dict[str, str]:
    """Save ``model`` with its card into ``folder`` (atomically) and push it when asked."""
    save_for_hub(model, folder, info, repo_id=hub_args.hub_model_id or default_repo)
    logger.info("saved %s", folder)
    published = {"dir": str(folder)}
    if hub_args.push_to_hub:
        published["hub_commit"] = push_to_hub(
            model, hub_args.hub_model_id, info, private=hub_args.hub_private
        )
    return published


def _write_all_results(output_dir: str, summary: dict[str, Any]) -> None:
    """The run's final numbers as ``all_results.json`` in its folder, like the transformers examples."""
    from ..utils import write_json_atomic

    results = {
        k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) and k != "model_dir"
    }
    write_json_atomic(Path(output_dir) / "all_results.json", results)


def _process_state() -> PartialState:
    """accelerate's process state, created as ``accelerate launch --cpu`` asks. A bare ``PartialState()`` made
    first would ignore ``ACCELERATE_USE_CPU`` (only the Accelerator reads it), so on a CPU machine every rank of a
    multi-process launch would run alone, as rank 0, in the same folder."""
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _held_run(training: Any, groups: tuple[Any, ...], run: Callable) -> Any:
    """:func:`hf_reduce.runs.run_folder` for this command's arguments (the main process holds the folder)."""
    return run_folder(
        training.output_dir,
        fingerprint(run.__module__, *groups),
        overwrite=training.overwrite_output_dir,
        resume=getattr(training, "resume_from_checkpoint", None),
        resumable=hasattr(training, "resume_from_checkpoint"),
    )


def _share_plan(plan: dict[str, Any] | None, error: BaseException | None) -> dict[str, Any]:
    """The main process's plan (working folder, checkpoint) on every rank; its refusal raised on every rank."""
    from accelerate.utils import broadcast_object_list

    shared = [plan, None if error is None else _one_line(error)]
    if _process_state().num_processes > 1:
        broadcast_object_list(shared, from_process=0)
    if shared[1] is not None:
        raise error if error is not None else RunFolderError(shared[1])
    return shared[0]


def _one_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _apply_plan(training: Any, plan: dict[str, Any]) -> None:
    """Point the run at its working folder (the staging folder of an overwrite) and resolved checkpoint."""
    training.output_dir = plan["work_dir"]
    if hasattr(training, "resume_from_checkpoint"):
        training.resume_from_checkpoint = plan["checkpoint"]


def _published_paths(value: Any, work_dir: str, folder: str) -> Any:
    """``value`` with paths inside a staged run's working folder moved to where the publish put them."""
    if isinstance(value, str) and value.startswith(work_dir):
        return folder + value[len(work_dir) :]
    if isinstance(value, dict):
        return {k: _published_paths(v, work_dir, folder) for k, v in value.items()}
    return value


def command_main(
    argument_types: tuple[type, ...],
    run: Callable[..., dict[str, Any]],
    argv: list[str] | None,
    prog: str | None,
    description: str | None,
) -> dict[str, Any]:
    """Parse ``argv`` into the argument dataclasses, ``run`` them and print the summary table (on the main
    process). Returns ``run``'s summary. The command holds its ``--output_dir`` for the run through
    :func:`hf_reduce.runs.run_folder` (refusing another run's folder, staging an overwrite, resolving the
    checkpoint to resume), and every process works where the main process's plan says."""
    argv = pop_verbose(argv)
    parser = HfArgumentParser(
        argument_types, prog=prog, description=description, formatter_class=HelpFormatter
    )
    groups = parser.parse_args_into_dataclasses(args=argv)
    # The group that says where the run writes: TrainingArguments, or a command's own (attack's report).
    training = next((g for g in groups if hasattr(g, "output_dir")), None)
    data = next((g for g in groups if isinstance(g, DatasetArguments)), None)
    if training is not None and not any(a == "--output_dir" or a.startswith("--output_dir=") for a in argv):
        command = run.__module__.rsplit(".", 1)[-1].replace("_", "-")
        training.output_dir = default_output_dir(command, data.dataset if data is not None else "data")
    state = _process_state()
    if training is None:
        summary = run(*groups)
    elif not state.is_main_process:
        _apply_plan(training, _share_plan(None, None))
        summary = run(*groups)
    else:  # one run per output folder (see hf_reduce.runs)
        folder = training.output_dir
        try:
            held = _held_run(training, groups, run)
            active = held.__enter__()
        except Exception as error:
            _share_plan(None, error)
            raise
        plan = {"work_dir": str(active.work_dir), "checkpoint": active.checkpoint and str(active.checkpoint)}
        _share_plan(plan, None)
        with contextlib.ExitStack() as stack:
            stack.push(held)
            _apply_plan(training, plan)
            summary = run(*groups)
            _write_all_results(training.output_dir, summary)
        summary = _published_paths(summary, plan["work_dir"], str(Path(folder)))
        training.output_dir = folder
    if state.is_main_process:
        for title, rows in summary.get("tables", {}).items():
            print(f"{title}\n{format_table(rows)}\n")
        print(format_table([{k: v for k, v in summary.items() if k not in ("model", "tables")}]))
    return summary
