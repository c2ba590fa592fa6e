"""Push hf_reduce models and PEFT adapters to the Hub with a model card rendered from ``model_cards/``.

Everything goes through huggingface_hub: the card is a ``ModelCard`` rendered from the family's Jinja
template with ``ModelCardData`` front matter (library, tags, datasets, base model, ``model-index`` with the
measured metrics); weights are saved as safetensors into a temporary folder and uploaded in one commit.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .utils import atomic_directory, no_space_error

logger = logging.getLogger(__name__)

LIBRARY_NAME = "hf_reduce"  # a tag on every card; the card's library is the one that loads the files
_SOURCE_TEMPLATES = Path(__file__).resolve().parent.parent / "model_cards"
#: The Hub datasets behind hf_reduce's source names (None: a local / embedded set with no Hub twin).
HUB_DATASET_IDS: dict[str, str | None] = {
    "digits": None,  # scikit-learn's bundled 8x8 digits
    "bbc-news": "SetFit/bbc-news",
    "fashion_mnist": "zalando-datasets/fashion_mnist",
    "mnist": "ylecun/mnist",
    "cifar10": "uoft-cs/cifar10",
}
#: What a push replaces in the repo (stale files from an earlier push matching these are deleted).
REPLACED_ON_PUSH = ["*.safetensors", "*.bin", "*.pt", "*.pth", "*.py", "*.json", "README.md"]
#: Arguments that only say where a run wrote its files on its machine.
_LOCAL_ARGUMENTS = ("output_dir", "logging_dir", "resume_from_checkpoint", "cache_dir")


def _is_local_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or ("/" in value and Path(value).exists())


def public_model_id(name: str | None) -> str | None:
    """``name`` if it can be a Hub model id (``org/name`` or ``name``), ``None`` for a local path."""
    if not name or _is_local_path(name) or name.count("/") > 1:
        return None
    return name


def hub_dataset_id(name: str | None) -> str | None:
    """The Hub id of a dataset name: hf_reduce's known sources, or the name if it is a Hub id."""
    if not name:
        return None
    if name in HUB_DATASET_IDS:
        return HUB_DATASET_IDS[name]
    return public_model_id(name)


def _public(value: Any) -> Any:
    """``value`` without machine-local paths (replaced by ``"<local>"``), recursively."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if k not in _LOCAL_ARGUMENTS}
    if isinstance(value, (list, tuple)):
        return [_public(v) for v in value]
    if isinstance(value, str) and value and _is_local_path(value):
        return "<local>"
    return value


@dataclass
class CardInfo:
    """What a model card says beyond the weights: where they come from and how well they do.

    Args:
        dataset: dataset id or name the metrics were measured on (e.g. ``"fashion_mnist"``, ``"digits"``);
            the card's ``datasets`` gets its Hub id (:data:`HUB_DATASET_IDS`), local data gets none.
        dataset_args: how the data was prepared (``{"split_seed": 0}``), the model-index dataset ``args``.
        license: the card's license (default: hf_reduce's own, Apache-2.0).
        metrics: measured metrics, e.g. ``{"accuracy": 0.93}``; they go to the card's ``model-index``, with
            the test-set size (``metrics["num_samples"]``) as the dataset's ``args``.
        metric_args: per-metric ``args`` that differ (``{"pgd_accuracy": {"num_samples": 32, "eps": 0.1}}``).
        task: the Hub task of the metrics (``image-classification``, ``text-classification``).
        base_model: the model this one adapts or reduces, if any (a Hub id; local paths are left out).
        training_args: the arguments of the run, shown in the card.
        results: extra rows for the results table (``[{"setting": ..., "accuracy": ...}, ...]``).
        tables: further titled result tables (``{"Solver overfitting": [row, ...]}``), rendered in order.
        extra: template-specific values (reduction settings, ...).
    """

    dataset: str | None = None
    dataset_args: dict[str, Any] = field(default_factory=dict)
    license: str = "apache-2.0"
    metrics: dict[str, float] = field(default_factory=dict)
    metric_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    task: str = "image-classification"
    base_model: str | None = None
    training_args: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def template_dir() -> Path:
    """Where the model-card templates are: inside the installed wheel, else the source checkout."""
    packaged = resources.files("hf_reduce").joinpath("model_cards")
    if packaged.is_dir():
        return Path(str(packaged))
    if _SOURCE_TEMPLATES.is_dir():
        return _SOURCE_TEMPLATES
    raise FileNotFoundError("hf_reduce's model_cards/ templates are missing from this installation")


def available_families() -> list[str]:
    return sorted(p.stem for p in template_dir().glob("*.md") if not p.stem.startswith("_"))


def _is_peft_model(model: Any) -> bool:
    peft_config = getattr(model, "peft_config", None)
    return isinstance(peft_config, dict) and bool(peft_config)


def model_family(model: Any) -> str:
    """The family of a model: the PEFT type of an adapter (``lotr``, ``lora``), or the config's model type."""
    peft_config = getattr(model, "peft_config", None)
    if _is_peft_model(model):
        adapter = getattr(model, "active_adapter", None) or next(iter(peft_config))
        return str(peft_config[adapter].peft_type.value).lower().removeprefix("hf_reduce_")
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if not model_type:
        raise ValueError(f"cannot tell the model family of {type(model).__name__}: pass family=...")
    return str(model_type).removeprefix("hf_reduce_")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` (model cards, reports)."""
    if not rows:
        return ""
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _config_json(config: Any) -> str:
    if hasattr(config, "to_json_string"):  # transformers configs
        return json.dumps(_public(json.loads(config.to_json_string())), indent=2, sort_keys=True)
    if hasattr(config, "to_dict"):  # PEFT configs
        return json.dumps(_public(config.to_dict()), indent=2, sort_keys=True, default=str)
    return ""


def render_model_card(
    model: Any,
    info: CardInfo,
    *,
    repo_id: str = "your-name/your-model",
    family: str | None = None,
) -> ModelCard:
    """Render the family's template into a ``huggingface_hub.ModelCard``."""
    family = family or model_family(model)
    template = "peft_adapter" if _is_peft_model(model) else family
    path = template_dir() / f"{template}.md"
    if not path.is_file():
        raise ValueError(f"no model card template for family {family!r}; available: {available_families()}")
    dataset_id = hub_dataset_id(info.dataset)
    dataset_label = info.dataset if info.dataset and not _is_local_path(info.dataset) else "local data"
    test_size = info.metrics.get("num_samples")
    base_args = {**info.dataset_args}
    if isinstance(test_size, (int, float)):
        base_args["num_samples"] = int(test_size)
    eval_results = [
        EvalResult(
            task_type=info.task,
            dataset_type=dataset_id or dataset_label,
            dataset_name=dataset_label,
            # A metric on the first n test images only (attacks) is on split "test[:n]": the Hub groups
            # model-index results by split, not by args.
            dataset_split=_split(base_args, info.metric_args.get(name, {})),
            dataset_args={**base_args, **info.metric_args.get(name, {})} or None,
            metric_type=name,
            metric_value=float(value),
        )
        for name, value in info.metrics.items()
        if isinstance(value, (int, float)) and name != "num_samples"
    ]
    adapter = _is_peft_model(model)
    base_model = public_model_id(info.base_model)
    card_data = ModelCardData(
        library_name="peft" if adapter else "transformers",
        license=info.license,
        tags=[LIBRARY_NAME, family, info.task],
        datasets=[dataset_id] if dataset_id else None,
        base_model=base_model,
        pipeline_tag=info.task,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
    )
    metric_rows = [{"metric": k, "value": v} for k, v in info.metrics.items()]
    config = getattr(model, "config", None)
    if _is_peft_model(model):
        adapter = getattr(model, "active_adapter", None) or next(iter(model.peft_config))
        config = model.peft_config[adapter]
    return ModelCard.from_template(
        card_data,
        template_str=path.read_text(encoding="utf-8"),
        repo_id=repo_id,
        family=family,
        model_name=repo_id.split("/")[-1],
        model_class=type(model).__name__,
        info=info,
        dataset_label=dataset_label,
        base_model=base_model,
        metrics_table=markdown_table(metric_rows),
        results_table=markdown_table(info.results),
        tables={title: markdown_table(rows) for title, rows in info.tables.items()},
        training_args_json=json.dumps(_public(info.training_args), indent=2, default=str),
        config=config,
        config_json=_config_json(config),
        extra=info.extra,
        num_labels=getattr(getattr(model, "config", None), "num_labels", None),
        hf_reduce_version=_version(),
        install=INSTALL,
        use_it=""
        if adapter
        else _render_partial(
            "_use_image_model.md", repo_id=repo_id, family=family, config=config, install=INSTALL
        ),
    )


#: How a card tells its reader to install hf_reduce. No release is on PyPI yet, so not ``pip install hf-reduce``.
INSTALL = "install hf_reduce from its source repository (`pip install <a clone or the repository URL>`)"


def _version() -> str:
    from . import __version__

    return __version__


def _split(base_args: dict[str, Any], args: dict[str, Any]) -> str:
    n = args.get("num_samples")
    return f"test[:{n}]" if n is not None and n != base_args.get("num_samples") else "test"


def _render_partial(name: str, **values: Any) -> str:
    """A section shared by several templates (``model_cards/_*.md``), rendered with ``values``."""
    import jinja2

    return jinja2.Template((template_dir() / name).read_text(encoding="utf-8")).render(**values).strip()


def _check_finite(model: Any) -> None:
    """Refuse to save or push a model with NaN / infinite weights (a diverged run)."""
    import torch

    bad = [
        name
        for name, t in model.state_dict().items()
        if t.is_floating_point() and not torch.isfinite(t).all()
    ]
    if bad:
        raise ArithmeticError(
            f"refusing to save a model with non-finite weights: {len(bad)} tensors, e.g. {bad[:3]}"
        )


def _save_kwargs(model: Any) -> dict[str, Any]:
    """For a PEFT model whose base was loaded from a local folder, answer PEFT's ``save_embedding_layers="auto"``
    question here: was the vocabulary resized? "auto" asks the Hub for the base's config instead, which offline
    means retries and a warning on every save. Anything else keeps PEFT's own "auto"."""
    if not isinstance(getattr(model, "peft_config", None), dict):
        return {}
    base = model.get_base_model()
    local = Path(getattr(base.config, "_name_or_path", "") or "")
    targeted = any(
        "embed" in name and p.requires_grad
        for name, p in model.named_parameters()
        if "modules_to_save" not in name
    )
    if targeted or not (local / "config.json").is_file() or base.get_input_embeddings() is None:
        return {}
    original = json.loads((local / "config.json").read_text()).get("vocab_size")
    return {"save_embedding_layers": original != base.get_input_embeddings().num_embeddings}


def save_for_hub(
    model: Any, folder: str | Path, info: CardInfo, *, repo_id: str = "your-name/your-model"
) -> Path:
    """Save safetensors weights, config, the image processor (image models) and the rendered README.md into
    ``folder`` atomically."""
    folder = Path(folder)
    _check_finite(model)
    card = render_model_card(model, info, repo_id=repo_id)
    try:
        with atomic_directory(folder) as staging:
            # image models: + their processor
            model.save_pretrained(str(staging), safe_serialization=True, **_save_kwargs(model))
            pickled = [p.name for p in staging.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
            if pickled:
                raise RuntimeError(
                    f"refusing to publish pickled weights {pickled}: only safetensors are allowed"
                )
            card.save(staging / "README.md")
    except Exception as error:  # a full disk: safetensors reports a short write in its own words
        size = sum(p.numel() * p.element_size() for p in model.state_dict().values())
        full = no_space_error(error, folder, "the model", size)
        if full is None:
            raise
        raise full from error
    return folder


def push_to_hub(
    model: Any,
    repo_id: str,
    info: CardInfo | None = None,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload the model (safetensors) with its model card in one commit.

    Works for every hf_reduce ``PreTrainedModel`` and for PEFT models carrying a LoTR or LoRA adapter.
    Returns the commit URL.
    """
    info = info or CardInfo()
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_for_hub(model, Path(tmp) / "upload", info, repo_id=repo_id)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message=commit_message or f"Upload {model_family(model)} model with hf_reduce",
            # The push replaces the model: weights, code, configs and card of an earlier push that this one
            # does not carry are deleted in the same commit (other files, e.g. .gitattributes, stay).
            delete_patterns=REPLACED_ON_PUSH,
        )
    logger.info("pushed %s: %s", repo_id, commit.commit_url)
    return str(commit.commit_url)
