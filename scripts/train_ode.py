"""Train a neural-ODE image classifier (see ``hf_reduce.commands.train_ode``).

accelerate launch scripts/train_ode.py --dataset /usr/share/datasets/fashion-mnist --preset odenet_mnist
python scripts/train_ode.py --dataset digits --regime smoothing --sigma_u 0.1
"""

from hf_reduce.commands.train_ode import main

if __name__ == "__main__":
    main()
