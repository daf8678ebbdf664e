"""``python -m leod``: see :mod:`leod.cli`."""

import sys

from leod.cli import main

sys.exit(main())
