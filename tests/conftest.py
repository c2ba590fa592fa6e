import os

# Tests never touch the network: the Hub hangs ~25 s per call here before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_vgg_config():
    from hf_reduce.cnn import VGGConfig

    return VGGConfig(
        layers=[4, "M", 8],
        num_channels=1,
        image_size=8,
        num_labels=3,
        classifier_hidden_sizes=[16],
        dropout=0.2,
    )


@pytest.fixture
def toy_image_dataset():
    """200 random 8x8 images whose class is decided by which third of the image is brightest."""
    from hf_reduce.data import TensorDictDataset

    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 8, 8, generator=g)
    labels = torch.stack([x[:, 0, :, c * 3 : c * 3 + 2].mean((1, 2)) for c in range(3)], 1).argmax(1)
    return TensorDictDataset(pixel_values=x, labels=labels)


@pytest.fixture(scope="session")
def quick_demo_run(tmp_path_factory):
    """``hf-reduce demo --quick`` once per session: (the process, its all_results.json rows, its folder).
    The demo's tests check it; the Space's tests use its models."""
    import json
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(
        [sys.executable, "-m", "hf_reduce_cli", "demo", "--quick", "--output_dir", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads((out / "all_results.json").read_text()), out
