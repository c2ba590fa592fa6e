"""See ``hf_reduce.commands.build_asnet``; ``python scripts/build_asnet.py --help`` lists the arguments.

accelerate launch scripts/build_asnet.py --model_name_or_path outputs/vgg/model --dataset /usr/share/datasets/fashion-mnist
"""

from hf_reduce.commands.build_asnet import main

if __name__ == "__main__":
    main()
