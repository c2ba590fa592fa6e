"""See ``hf_reduce.commands.attack``; ``python scripts/attack.py --help`` lists the arguments.

accelerate launch scripts/attack.py --model_name_or_path outputs/vgg/model --dataset /usr/share/datasets/fashion-mnist
"""

from hf_reduce.commands.attack import main

if __name__ == "__main__":
    main()
