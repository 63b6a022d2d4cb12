"""``python -m server [--host H] [--port P] [--workers N]``: the same as ``strata serve``."""

import sys

from codec.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
