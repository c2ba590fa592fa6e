import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Image

from hf_reduce.data import (
    DEBIAN_FASHION_MNIST,
    DataSourceError,
    ImageCollator,
    image_tensors,
    label_names,
    load_image_classification,
    load_text_classification,
    read_idx,
)


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_digits_schema_and_deterministic_split():
    a = load_image_classification("digits", split_seed=3)
    b = load_image_classification("digits", split_seed=3)
    assert set(a) == {"train", "test"}
    assert isinstance(a["train"].features["pixel_values"], Image)
    assert isinstance(a["train"].features["label"], ClassLabel)
    assert len(a["train"]) + len(a["test"]) == 1797
    assert a["test"]["label"] == b["test"]["label"]
    assert a["test"]["label"] != load_image_classification("digits", split_seed=4)["test"]["label"]
    assert np.asarray(a["train"][0]["pixel_values"]).max() <= 255


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder(tmp_path, gz):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 255, (30, 6, 6)), gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(30) % 3, gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 255, (9, 6, 6)), gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.arange(9) % 3, gz)
    dsd = load_image_classification(tmp_path, label_names=["a", "b", "c"])
    assert (len(dsd["train"]), len(dsd["test"])) == (30, 9)
    assert label_names(dsd) == ["a", "b", "c"]
    assert dsd["test"]["label"] == list(np.arange(9) % 3)
    pixels = np.asarray(dsd["train"][0]["pixel_values"])
    assert np.array_equal(pixels, read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}")[0])


@pytest.mark.skipif(not Path(DEBIAN_FASHION_MNIST).is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_debian_fashion_mnist():
    images = read_idx(Path(DEBIAN_FASHION_MNIST) / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(Path(DEBIAN_FASHION_MNIST) / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10


def test_imagefolder(tmp_path):
    from PIL import Image as PILImage

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            PILImage.fromarray(np.full((4, 4, 3), i * 40, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    dsd = load_image_classification(tmp_path, test_size=0.4)
    assert label_names(dsd) == ["cat", "dog"]
    assert len(dsd["train"]) + len(dsd["test"]) == 10


def test_bbc_news_embedded():
    dsd = load_text_classification("bbc-news")
    assert label_names(dsd) == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(dsd["train"]) + len(dsd["test"]) == 2225
    assert dsd["train"].column_names == ["text", "label"]
    assert len(dsd["train"][0]["text"]) > 100


def test_text_folder_with_splits(tmp_path):
    for split in ("train", "test"):
        for cls in ("neg", "pos"):
            (tmp_path / split / cls).mkdir(parents=True)
            (tmp_path / split / cls / "a.txt").write_text(f"{split} {cls}")
    dsd = load_text_classification(tmp_path)
    assert dsd["test"]["text"] == ["test neg", "test pos"]
    assert dsd["test"]["label"] == [0, 1]


def test_csv_with_custom_columns_and_string_labels(tmp_path):
    rows = ["body,topic"] + [f"text number {i},{'spam' if i % 2 else 'ham'}" for i in range(20)]
    (tmp_path / "data.csv").write_text("\n".join(rows))
    dsd = load_text_classification(
        tmp_path / "data.csv", text_column="body", label_column="topic", test_size=0.25
    )
    assert label_names(dsd) == ["ham", "spam"]
    assert len(dsd["test"]) == 5
    row = dsd["train"][0]
    assert (row["label"] == 1) == (int(row["text"].split()[-1]) % 2 == 1)


def test_csv_integer_labels_keep_their_values(tmp_path):
    rows = ["text,label"] + [f"t{i},{i % 12}" for i in range(48)]
    (tmp_path / "d.csv").write_text("\n".join(rows))
    dsd = load_text_classification(tmp_path / "d.csv")
    assert label_names(dsd) == [str(i) for i in range(12)]
    for row in dsd["train"]:
        assert row["label"] == int(row["text"][1:]) % 12


def test_bad_sources_and_columns(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        load_image_classification("./no/such/folder")
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(DataSourceError, match="unsupported file"):
        load_text_classification(tmp_path / "x.xml")
    (tmp_path / "d.csv").write_text("body,topic\nhello,a\nworld,b\n")
    with pytest.raises(DataSourceError, match=r"columns are \['body', 'topic'\]"):
        load_text_classification(tmp_path / "d.csv")
    with pytest.raises(DataSourceError, match="label column 'nope' not found"):
        load_text_classification(tmp_path / "d.csv", text_column="body", label_column="nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="holds no"):
        load_image_classification(tmp_path / "empty")


def test_image_collator_and_tensors():
    dsd = load_image_classification("digits", max_train_samples=10, max_test_samples=4)
    batch = ImageCollator(num_channels=3, image_size=16)([dsd["train"][i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 16, 16)
    assert batch["pixel_values"].min() >= 0.0 and batch["pixel_values"].max() <= 1.0
    tensors = image_tensors(dsd["train"], 1)
    assert len(tensors) == 10 and tensors[0]["pixel_values"].shape == (1, 8, 8)
    assert torch.equal(tensors.tensors["labels"], torch.tensor(dsd["train"]["label"]))
    with pytest.raises(ValueError, match="num_channels must be 1 or 3"):
        ImageCollator(num_channels=2)


def test_labels_are_aligned_by_class_name_across_splits(tmp_path):
    # Before: train/ with {business, sport, tech} and test/ with {sport, tech} numbered each folder on its
    # own, so "sport" was 1 in train and 0 in test (a model right on every text scored 50%).
    for split, classes in (("train", ["business", "sport", "tech"]), ("test", ["sport", "tech"])):
        for name in classes:
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                (folder / f"{i}.txt").write_text(f"{name} article {i}")
    dsd = load_text_classification(tmp_path)
    names = label_names(dsd)
    assert names == ["business", "sport", "tech"]
    for split in ("train", "test"):
        for row in dsd[split]:
            assert row["text"].startswith(names[row["label"]]), (split, row)


def test_fewer_than_two_classes_is_an_error(tmp_path):
    folder = tmp_path / "only"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text("the same topic")
    with pytest.raises(DataSourceError, match="1 class .* needs at least 2"):
        load_text_classification(tmp_path)


def test_the_split_does_not_depend_on_the_training_seed():
    # Before: commands split with the training --seed, so 297 of 360 digits test images at seed 42 were
    # training images at seed 7. Now the split has its own fixed seed.
    import inspect

    from hf_reduce.commands.common import DataArguments

    assert "seed" not in inspect.signature(DataArguments.load).parameters
    a, b = DataArguments(dataset="digits").load("image"), DataArguments(dataset="digits").load("image")
    assert a["test"]["label"] == b["test"]["label"] and DataArguments().split_seed == 0
