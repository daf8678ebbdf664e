"""``python -m leod``: see :mod:`leod.plumbing.cli`."""

import sys

from leod.plumbing.cli import main

sys.exit(main())
