"""The command line, tornado_prefork.cli.main, on a listening socket passed to
it as systemd passes one: for a test that knows the port without reading the
server's output.

argv: ``FD -- ARGS``: the socket FD becomes fd 3 (``LISTEN_FDS=1``,
``LISTEN_PID`` this process), ARGS are the command line's.
"""

import os
import sys

fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))

from tornado_prefork.cli import main  # noqa: E402

args = sys.argv[2:]
sys.exit(main(args[1:] if args[:1] == ["--"] else args))
