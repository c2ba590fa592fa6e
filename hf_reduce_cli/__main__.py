"""``python -m hf_reduce_cli``: the same as the ``hf-reduce`` console command."""

import sys

from . import main

sys.exit(main())
