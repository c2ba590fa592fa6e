"""Trainable adapter parameters as depth grows: LoTR vs PEFT's LoRA and VeRA on Llama-shaped models.

q_proj and v_proj adapted at r = 8 and 32, on Llama configurations of 12, 24, 32 and 80 layers (hidden sizes of
the usual 1B / 7B / 70B shapes), built on the meta device: nothing is downloaded or allocated, and the counts
are those of the real PEFT models (``get_peft_model`` on each), not a formula. Results:
``results/lotr_parameter_growth.json``.

    python scripts/benchmarks/lotr_parameter_growth.py
"""

from __future__ import annotations

import torch
from _measure import write_results
from peft import LoraConfig, VeraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

import hf_reduce  # noqa: F401  (registers LoTR)
from hf_reduce.commands.common import format_table
from hf_reduce.lotr import LoTRConfig

SHAPES = [  # (layers, hidden, intermediate, heads, kv heads)
    (12, 2048, 5632, 16, 4),
    (24, 2048, 5632, 16, 4),
    (32, 4096, 11008, 32, 32),
    (80, 8192, 28672, 64, 8),
]
TARGETS = ["q_proj", "v_proj"]


def count(layers: int, hidden: int, intermediate: int, heads: int, kv: int, method: str, r: int) -> int:
    config = LlamaConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=32000,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    adapter = {
        "LoTR": lambda: LoTRConfig(r=r, target_modules=TARGETS),
        "LoRA": lambda: LoraConfig(r=r, target_modules=TARGETS),
        "VeRA": lambda: VeraConfig(r=r, target_modules=["q_proj"]),  # VeRA needs one shape per shared pair
    }[method]()
    peft_model = get_peft_model(model, adapter)
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def main() -> None:
    rows = []
    for layers, hidden, intermediate, heads, kv in SHAPES:
        for r in (8, 32):
            counts = {
                m: count(layers, hidden, intermediate, heads, kv, m, r) for m in ("LoTR", "LoRA", "VeRA")
            }
            rows.append(
                {
                    "layers": layers,
                    "hidden": hidden,
                    "r": r,
                    "LoTR": counts["LoTR"],
                    "LoRA": counts["LoRA"],
                    "VeRA (q only)": counts["VeRA"],
                    "LoRA / LoTR": round(counts["LoRA"] / counts["LoTR"], 1),
                }
            )
            print(format_table(rows[-1:]), flush=True)
    print(format_table(rows))
    print(write_results("lotr_parameter_growth", {"targets": TARGETS, "rows": rows}))


if __name__ == "__main__":
    main()
