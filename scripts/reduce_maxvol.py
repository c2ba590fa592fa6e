"""Reduce a trained VGG-style classifier with MaxVol (see ``hf_reduce.commands.reduce_maxvol``).

accelerate launch scripts/reduce_maxvol.py --model_name_or_path outputs/vgg/model \
    --dataset /usr/share/datasets/fashion-mnist --keep_blocks 2
"""

from hf_reduce.commands.reduce_maxvol import main

if __name__ == "__main__":
    main()
