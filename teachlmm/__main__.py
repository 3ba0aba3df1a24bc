"""``python -m teachlmm``: the lecture's models on the radon data (see :mod:`teachlmm.cli`)."""
import sys

from .cli import main

sys.exit(main())
