"""Fine-tune a text classifier with a LoTR or LoRA adapter (see ``hf_reduce.commands.finetune_lotr``).

accelerate launch scripts/finetune_lotr.py --method lotr --r 8 --output_dir outputs/lotr-bbc
"""

from hf_reduce.commands.finetune_lotr import main

if __name__ == "__main__":
    main()
