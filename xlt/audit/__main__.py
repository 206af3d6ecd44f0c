"""``python -m xlt.audit``: see :mod:`xlt.audit.cli`."""

import sys

from xlt.audit.cli import main

if __name__ == "__main__":
    sys.exit(main())
