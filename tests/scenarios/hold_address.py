"""reuse_port: the parent's sockets hold the address without taking connections.

argv: none (needs root). Prints what another user's bind got (an errno, 0 if
it succeeded), whether a client is refused, and what a worker's own socket accepts.
"""

import os
import socket

from tornado_prefork._system import sockets as _sockets

listeners = _sockets.bind(
    0,
    "127.0.0.1",
    unix_socket=None,
    unix_socket_mode=0o600,
    reuse_port=True,
    backlog=16,
    family=socket.AF_UNSPEC,
    scheme="http",
)
port = listeners.sockets[0].getsockname()[1]


def attempt(as_user):
    # In a child: another user tries to share the address, as a server would.
    pid = os.fork()
    if pid == 0:
        if as_user:
            os.setgid(65534)
            os.setuid(65534)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as e:
            os._exit(e.errno)
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


print("other user:", attempt(as_user=True))
try:
    socket.create_connection(("127.0.0.1", port), timeout=2)
    print("connect: accepted")
except ConnectionRefusedError:
    print("connect: refused")
worker = listeners.for_child()
client = socket.create_connection(("127.0.0.1", port), timeout=2)
print("worker accepts:", worker[0].accept()[1][0], "held:", len(listeners.sockets))
