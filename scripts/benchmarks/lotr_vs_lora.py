"""LoTR vs PEFT's LoRA, side by side in one run.

Part 1 (cost): same base model, same rank, same target modules. Trainable parameters, median training step
time (30 interleaved steps, after warm-up) and training memory. On a GPU memory is the peak allocated; on a CPU
it is what a training step has to hold beyond the frozen weights: the tensors autograd saves for backward
(unique storages), the gradients and AdamW's two moments. Bases: the bundled MiniLM (sequence
classification) and tiny random Llamas of 4 and 32 layers (causal LM; hidden 256, built from a config), q + v,
r = 8. Results: ``results/lotr_step_cost.json``.

Part 2 (quality): the bundled all-MiniLM-L6-v2 fine-tuned on BBC News topics with LoTR and LoRA at several
ranks, accuracy against trainable adapter parameters.

    python scripts/benchmarks/lotr_vs_lora.py               # both parts, ~15 min on 2 quiet CPU cores
    python scripts/benchmarks/lotr_vs_lora.py --quick       # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _measure import saved_tensor_bytes, write_results
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

import hf_reduce  # noqa: F401  (registers LoTR)
from hf_reduce.commands.common import HubArguments, format_table
from hf_reduce.commands.finetune_lotr import AdapterArguments, TextDataArguments, bundled_minilm_path, run
from hf_reduce.lotr import LoTRConfig
from hf_reduce.training import TrainingArguments


def minilm() -> torch.nn.Module:
    return AutoModelForSequenceClassification.from_pretrained(bundled_minilm_path(), num_labels=5)


def tiny_llama(layers: int) -> torch.nn.Module:
    config = LlamaConfig(
        vocab_size=2000,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=8,
    )
    return LlamaForCausalLM(config)


#: name -> (base factory, PEFT task type, targets, vocabulary for random inputs)
BASES = {
    "MiniLM-L6": (minilm, "SEQ_CLS", ["query", "value"], (1000, 20000)),
    "Llama 4 layers": (lambda: tiny_llama(4), "CAUSAL_LM", ["q_proj", "v_proj"], (0, 2000)),
    "Llama 32 layers": (lambda: tiny_llama(32), "CAUSAL_LM", ["q_proj", "v_proj"], (0, 2000)),
}


def make_model(method: str, r: int, base_name: str, device: torch.device) -> torch.nn.Module:
    factory, task_type, targets, _ = BASES[base_name]
    torch.manual_seed(0)
    config = (
        LoTRConfig(r=r, target_modules=targets, task_type=task_type)
        if method == "lotr"
        else LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, task_type=task_type)
    )
    return get_peft_model(factory(), config).to(device).train()


def cost_table(
    base_name: str, r: int, batch: int, length: int, repeats: int, device: torch.device
) -> list[dict]:
    models = {m: make_model(m, r, base_name, device) for m in ("lotr", "lora")}
    optimizers = {
        m: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        for m, model in models.items()
    }
    g = torch.Generator().manual_seed(0)
    task_type, vocab = BASES[base_name][1], BASES[base_name][3]
    ids = torch.randint(*vocab, (batch, length), generator=g).to(device)
    labels = ids if task_type == "CAUSAL_LM" else torch.randint(0, 5, (batch,), generator=g).to(device)
    inputs = {"input_ids": ids, "labels": labels}

    def step(method: str) -> float:
        model, optimizer = models[method], optimizers[method]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for method in models:  # warm-up: allocator, kernels, optimizer state
        step(method)
        step(method)
    times: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(repeats):  # interleaved, so drift of the machine hits both alike
        for method in models:
            times[method].append(step(method))

    rows = []
    for method, model in models.items():
        trainable = [p for n, p in model.named_parameters() if p.requires_grad and "modules_to_save" not in n]
        n_trainable = sum(p.numel() for p in trainable)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step(method)
            memory = torch.cuda.max_memory_allocated() - base
        else:
            counter = {"bytes": 0}
            with saved_tensor_bytes(counter):
                loss = model(**inputs).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
            # adapter gradients + AdamW's exp_avg and exp_avg_sq
            memory = counter["bytes"] + 3 * sum(p.numel() * p.element_size() for p in trainable)
        rows.append(
            {
                "base": base_name,
                "method": method,
                "r": r,
                "adapter params": n_trainable,
                "step ms (median)": 1000 * statistics.median(times[method]),
                "memory MiB": memory / 2**20,
            }
        )
    lotr, lora = rows
    rows.append(
        {
            "base": base_name,
            "method": "LoTR / LoRA",
            "r": r,
            "adapter params": round(lotr["adapter params"] / lora["adapter params"], 4),
            "step ms (median)": lotr["step ms (median)"] / lora["step ms (median)"],
            "memory MiB": lotr["memory MiB"] / lora["memory MiB"],
        }
    )
    return rows


def quality_table(
    configs: list[tuple[str, int, float]], epochs: float, length: int, max_train: int | None
) -> list[dict]:
    rows = []
    for method, r, lr in configs:
        summary = run(
            TextDataArguments(dataset="bbc-news", max_train_samples=max_train, max_test_samples=max_train),
            AdapterArguments(method=method, r=r, max_length=length),
            TrainingArguments(
                output_dir=f"outputs/bench-lotr/{method}-r{r}",
                num_train_epochs=epochs,
                per_device_train_batch_size=16,
                learning_rate=lr,
                warmup_ratio=0.06,
                logging_steps=0,
                disable_tqdm=True,
                metrics=["accuracy", "f1"],
            ),
            HubArguments(),
        )
        rows.append(
            {
                "method": method,
                "r": r,
                "lr": lr,
                "adapter params": summary["adapter_params"],
                "test accuracy": summary["test_accuracy"],
                "test macro-F1": summary["test_f1"],
                "train s": summary["train_seconds"],
            }
        )
        print(format_table(rows[-1:]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="Tiny settings: checks that the script runs.")
    parser.add_argument("--skip_quality", action="store_true")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--max_length", type=int, default=96)
    parser.add_argument("--lotr_lr", type=float, default=1e-2)
    parser.add_argument("--lora_lr", type=float, default=3e-3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    print(f"== cost: q + v (MiniLM: query + value), r = 8, device {device}")
    cost = []
    for base_name in BASES if not args.quick else ["MiniLM-L6", "Llama 4 layers"]:
        cost += cost_table(
            base_name,
            r=8,
            batch=4 if args.quick else 16 if base_name == "MiniLM-L6" else 8,
            length=32 if args.quick else 128,
            repeats=2 if args.quick else 30,  # 10 gave 1.17x once on a loaded machine, 30 gave 1.01-1.02x
            device=device,
        )
    print(format_table(cost), flush=True)
    if not args.quick:
        print(write_results("lotr_step_cost", {"device": str(device), "rows": cost}))
    if args.skip_quality:
        return

    print("== quality: MiniLM-L6 on BBC News (1780 train / 445 test)")
    configs = [
        ("lotr", 2, args.lotr_lr),
        ("lotr", 4, args.lotr_lr),
        ("lotr", 8, args.lotr_lr),
        ("lora", 2, args.lora_lr),
        ("lora", 8, args.lora_lr),
    ]
    if args.quick:
        configs = [("lotr", 4, args.lotr_lr), ("lora", 4, args.lora_lr)]
    rows = quality_table(
        configs,
        epochs=0.5 if args.quick else args.epochs,
        length=32 if args.quick else args.max_length,
        max_train=64 if args.quick else None,
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
