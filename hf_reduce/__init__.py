"""hf_reduce: cheaper fine-tuning, training and inference for Hugging Face models."""
