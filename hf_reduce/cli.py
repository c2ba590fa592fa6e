"""``hf_reduce.cli``: the ``hf-reduce`` command (kept in :mod:`hf_reduce_cli`, outside the package, so that
``hf-reduce --help`` does not import torch)."""

from hf_reduce_cli import ANTICIPATED, COMMANDS, main

__all__ = ["ANTICIPATED", "COMMANDS", "main"]

if __name__ == "__main__":
    import sys

    sys.exit(main())
