"""``python -m mg_tune.cli``: the same as the ``mg-tune`` console script."""

import sys

from mg_tune.cli import main

sys.exit(main())
