"""``python -m xlt.e5 [--cache-dir DIR] [--force]``: build (or reuse) the converted multilingual-e5-small."""

import sys

from xlt.e5.build import main

if __name__ == "__main__":
    sys.exit(main())
