"""Train the reference VGG classifier (see ``hf_reduce.commands.train_cnn``).

accelerate launch scripts/train_cnn.py --dataset digits --output_dir outputs/vgg-digits
"""

from hf_reduce.commands.train_cnn import main

if __name__ == "__main__":
    main()
