"""``python -m nas.search``: see ``python -m nas.search --help``."""
import sys

from nas.search import main

if __name__ == "__main__":
    sys.exit(main())
