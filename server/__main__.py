"""``python -m strata.server [--host H] [--port P] [--workers N] [--models DIR]``: run the service."""

import sys

from strata.server.run import main

if __name__ == "__main__":
    sys.exit(main())
