"""The command line, tornado_prefork.cli.main, with some modules not installed.

argv: ``[--hide MODULE ...] -- ARGS``, ARGS being the command line's.
"""

import argparse
import sys

from tests import scenarios

parser = argparse.ArgumentParser()
parser.add_argument("--hide", action="append", default=[], help="a module that is not installed")
parser.add_argument("args", nargs=argparse.REMAINDER)
args = parser.parse_args()
scenarios.hide(args.hide)

from tornado_prefork.cli import main  # noqa: E402

sys.exit(main(args.args[1:] if args.args[:1] == ["--"] else args.args))
