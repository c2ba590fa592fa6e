"""Workers for the 2-process DDP tests, started as fresh interpreters by ``accelerate launch``.

(A fork-based launcher such as ``accelerate.debug_launcher`` deadlocks in the children once the pytest
process has run multi-threaded torch code, so the tests spawn real processes instead.)

    python tests/ddp_workers.py cnn OUT_DIR
"""

import json
import os
import sys

import torch
from accelerate.utils import set_seed

sys.path.insert(0, os.path.dirname(__file__))


def _report(accelerator, out_dir, model, extra):
    rank = accelerator.process_index
    torch.save(
        {k: v.detach().cpu() for k, v in model.state_dict().items()}, os.path.join(out_dir, f"rank{rank}.pt")
    )
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world": accelerator.num_processes, **extra}, f)


def _setup(out_dir, **overrides):
    """TrainingArguments for a short quiet run, its Accelerator, and a seeded start."""
    from hf_reduce.training import TrainingArguments, make_accelerator

    kwargs = dict(output_dir=out_dir, learning_rate=1e-2, disable_tqdm=True, logging_steps=0)
    args = TrainingArguments(**{**kwargs, **overrides})
    accelerator = make_accelerator(args)
    set_seed(0)
    return args, accelerator


def _random_images(n, size=8, labels=3):
    from hf_reduce.data import TensorDictDataset

    g = torch.Generator().manual_seed(0)
    return TensorDictDataset(
        pixel_values=torch.rand(n, 1, size, size, generator=g),
        labels=torch.randint(0, labels, (n,), generator=g),
    )


def cnn(out_dir):
    from hf_reduce.cnn import VGGConfig, VGGForImageClassification
    from hf_reduce.training import train

    args, accelerator = _setup(
        out_dir, num_train_epochs=2, per_device_train_batch_size=8, metrics=["accuracy", "f1"]
    )
    config = VGGConfig(
        layers=[4, "M", 8], num_channels=1, image_size=8, num_labels=3, classifier_hidden_sizes=[16]
    )
    model = VGGForImageClassification(config)
    data = _random_images(101)
    out = train(model, args, data, data, accelerator=accelerator)
    _report(accelerator, out_dir, model, {"metrics": out.metrics, "step": out.global_step})


def lotr(out_dir):
    from lotr_models import VOCAB, tiny_bert
    from peft import get_peft_model

    import hf_reduce  # noqa: F401  (registers LoTR)
    from hf_reduce.data import TensorDictDataset
    from hf_reduce.lotr import LoTRConfig
    from hf_reduce.training import train

    args, accelerator = _setup(out_dir, max_steps=6, per_device_train_batch_size=4, eval_strategy="no")
    model = get_peft_model(
        tiny_bert(), LoTRConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS")
    )
    # Different data on each rank: without gradient averaging the shared factors would drift apart.
    g = torch.Generator().manual_seed(0)
    data = TensorDictDataset(
        input_ids=torch.randint(0, VOCAB, (48, 9), generator=g),
        labels=torch.randint(0, 3, (48,), generator=g),
    )
    before = {k: v.clone() for k, v in model.state_dict().items() if "lotr_A" in k}
    train(model, args, data, accelerator=accelerator)
    moved = any(not torch.equal(before[k], model.state_dict()[k]) for k in before)
    _report(accelerator, out_dir, model, {"factors_moved": moved})


def ode(out_dir):
    import hf_reduce  # noqa: F401
    from hf_reduce.ode import ODEConfig, ODEForImageClassification
    from hf_reduce.training import train

    args, accelerator = _setup(out_dir, max_steps=3, per_device_train_batch_size=4, eval_strategy="no")
    config = ODEConfig(
        channels=[4],
        ode_stages=[True],
        image_size=8,
        num_labels=3,
        n_steps=2,
        norm_stem="layer",
        norm_ode="layer",
        group_norm_groups=2,
    )
    model = ODEForImageClassification(config)
    out = train(model, args, _random_images(24), accelerator=accelerator)
    _report(
        accelerator, out_dir, model, {"step": out.global_step, "nfe": accelerator.unwrap_model(model).nfe}
    )


if __name__ == "__main__":
    {"cnn": cnn, "lotr": lotr, "ode": ode}[sys.argv[1]](sys.argv[2])
