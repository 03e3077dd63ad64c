"""serve() on 127.0.0.1 with the app and settings given on the command line.

argv: ``APP [NAME=VALUE ...]`` where APP is ``module:name`` (the object is
imported here, in the parent; with ``--string`` the import string itself is
passed) and each VALUE a Python literal; ``--fail-if FILE`` exits before
serve() while FILE exists. Logs go to stdout, one line per
record, with the lines the app says; "parent returned" once serve() returns.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys

from tests import scenarios

parser = argparse.ArgumentParser()
parser.add_argument("app")
parser.add_argument("settings", nargs="*", help="NAME=VALUE, VALUE a Python literal")
parser.add_argument("--processes", type=int, default=2)
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--string", action="store_true", help="pass APP as an import string")
parser.add_argument("--path", action="append", default=[], help="put DIR first on sys.path")
parser.add_argument("--hide", action="append", default=[], help="a module that is not installed")
parser.add_argument("--rlimit", action="append", default=[], help="NAME=N, as RLIMIT_NAME")
parser.add_argument("--listen-fd", type=int, help="socket activation: this fd as fd 3")
parser.add_argument("--log-file", help="the root logger also writes to this file")
parser.add_argument(
    "--fail-if", help="exit before serve() while this file exists (but in a check of new code)"
)
args = parser.parse_args()

scenarios.log_to(1)
sys.path[:0] = args.path
scenarios.hide(args.hide)
for limit in args.rlimit:
    name, _, value = limit.partition("=")
    resource.setrlimit(getattr(resource, f"RLIMIT_{name.upper()}"), (int(value), int(value)))
if args.listen_fd is not None:
    # As systemd does after its fork: the socket as fd 3, LISTEN_PID = this process.
    os.dup2(args.listen_fd, 3)
    os.close(args.listen_fd)
    os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
if args.log_file:
    import tornado_prefork.logs  # noqa: F401  (SIGUSR1 reopens the handlers' files)

    logging.getLogger().addHandler(logging.FileHandler(args.log_file))

import tornado_prefork  # noqa: E402

if args.fail_if and os.path.exists(args.fail_if) and "TORNADO_PREFORK_CHECK" not in os.environ:
    # A start script broken by a deploy after the check of the new code ran.
    sys.exit("the start script failed")
settings = {"address": "127.0.0.1", **scenarios.settings(args.settings)}
tornado_prefork.serve(
    scenarios.app(args.app, args.string), port=args.port, processes=args.processes, **settings
)
scenarios.say("parent returned")
