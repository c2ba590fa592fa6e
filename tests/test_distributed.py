"""Two real gloo ranks on CPU through accelerate's debug_launcher."""

import json
import os

import torch
from accelerate import debug_launcher

from hf_reduce.data import TensorDictDataset


def _ddp_worker(out_dir):
    from accelerate.utils import set_seed

    from hf_reduce.cnn import VGGConfig, VGGForImageClassification
    from hf_reduce.training import TrainingArguments, make_accelerator, train

    args = TrainingArguments(
        output_dir=out_dir,
        num_train_epochs=2,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        disable_tqdm=True,
        logging_steps=0,
        metrics=["accuracy", "f1"],
    )
    accelerator = make_accelerator(args, cpu=True)
    set_seed(0)
    config = VGGConfig(
        layers=[4, "M", 8], num_channels=1, image_size=8, num_labels=3, classifier_hidden_sizes=[16]
    )
    model = VGGForImageClassification(config)
    g = torch.Generator().manual_seed(0)
    data = TensorDictDataset(
        pixel_values=torch.rand(101, 1, 8, 8, generator=g), labels=torch.randint(0, 3, (101,), generator=g)
    )
    out = train(model, args, data, data, accelerator=accelerator)
    rank = accelerator.process_index
    torch.save(model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world": accelerator.num_processes, "metrics": out.metrics, "step": out.global_step}, f)


def test_two_rank_ddp_identical_weights_and_gathered_metrics(tmp_path):
    debug_launcher(_ddp_worker, args=(str(tmp_path),), num_processes=2)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in reports)
    # 101 samples, 8 per rank per step -> ceil(101 / 16) = 7 steps per epoch.
    assert all(r["step"] == 14 for r in reports)
    # gather_for_metrics drops the padding that evens out the last batch: each sample counts once.
    assert all(r["metrics"]["num_samples"] == 101 for r in reports)
    assert reports[0]["metrics"] == reports[1]["metrics"]
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for name in a:
        assert torch.equal(a[name], b[name]), name
