"""``python -m xlt.plan``: see :mod:`xlt.plan`."""

import sys

from xlt.plan.cli import main

if __name__ == "__main__":
    sys.exit(main())
