"""The ``hf-reduce`` console command: ``hf-reduce <command> [--help] [--debug]``.

It lives outside the ``hf_reduce`` package on purpose: importing ``hf_reduce`` registers its models with
transformers, PEFT and torchdiffeq (seconds of imports), which ``hf-reduce --help`` or a mistyped command
should not pay for. A command's own module is imported only when that command runs.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "demo": ("hf_reduce.commands.demo", "Run every method end to end on embedded data (minutes, CPU)."),
    "train-cnn": ("hf_reduce.commands.train_cnn", "Train the reference VGG classifier on an image dataset."),
    "train-ode": (
        "hf_reduce.commands.train_ode",
        "Train a neural-ODE classifier (meta-solver regimes), evaluate robustness.",
    ),
    "reduce-maxvol": (
        "hf_reduce.commands.reduce_maxvol",
        "Reduce a trained CNN with MaxVol reduced-order modelling; compare, save, push.",
    ),
    "build-asnet": (
        "hf_reduce.commands.build_asnet",
        "Count active neurons per layer and build an ASNet (active subspace + PCE head).",
    ),
    "attack": (
        "hf_reduce.commands.attack",
        "Universal adversarial perturbations: active-subspace attack vs UAP vs random.",
    ),
    "finetune-lotr": (
        "hf_reduce.commands.finetune_lotr",
        "Fine-tune a text classifier with a LoTR or LoRA adapter.",
    ),
}


#: Errors a user can cause and fix (bad argument, missing data or model, unknown solver...): one or two
#: lines and exit status 2 (ArithmeticError: a diverged run, nothing saved). Anything else keeps its traceback.
ANTICIPATED = (ValueError, FileNotFoundError, NotImplementedError, OSError, ArithmeticError)


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: hf-reduce <command> [options] [--verbose] [--debug]  |  hf-reduce --version",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += [
        "",
        "Run 'hf-reduce <command> --help' for a command's options. --verbose (or HF_REDUCE_VERBOSE=1) shows",
        "every log line and library warning; --debug (or HF_REDUCE_DEBUG=1) the traceback of an error.",
    ]
    return "\n".join(lines)


def _short(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    return "\n".join(lines[:2])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HF_REDUCE_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":  # the installed distribution's version, read without importing torch
        from importlib.metadata import version

        print(f"hf-reduce {version('hf-reduce')}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"hf-reduce: unknown command {name!r}; choose from {', '.join(COMMANDS)}\n\n{_usage()}",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        module.main(rest, prog=f"hf-reduce {name}")
    except ANTICIPATED as error:
        if debug:
            raise
        print(f"hf-reduce {name}: error: {_short(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
