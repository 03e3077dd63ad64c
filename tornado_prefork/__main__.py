"""``python -m tornado_prefork``: the same as the ``tornado-prefork`` command."""

import sys

from tornado_prefork.cli import main

if __name__ == "__main__":
    sys.exit(main())
