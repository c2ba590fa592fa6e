"""Entry points shared by ``scripts/`` and the ``hf-reduce`` CLI: argument dataclasses + a ``run`` each."""
