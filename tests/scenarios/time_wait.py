"""reuse_port starts on a port where an earlier server left TIME_WAIT connections.

argv: none. Prints "served on 127.0.0.1" once a worker's socket accepted.
"""

import socket

from tornado_prefork._system import sockets as _sockets

# An earlier server without SO_REUSEPORT closed a connection first: its side
# of it stays in TIME_WAIT on the port for a minute.
old = socket.socket()
old.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
old.bind(("127.0.0.1", 0))
old.listen()
port = old.getsockname()[1]
client = socket.create_connection(("127.0.0.1", port))
conn, _ = old.accept()
conn.close()
client.recv(1)
client.close()
old.close()
listeners = _sockets.bind(
    port,
    "127.0.0.1",
    unix_socket=None,
    unix_socket_mode=0o600,
    reuse_port=True,
    backlog=16,
    family=socket.AF_UNSPEC,
    scheme="http",
)
(worker,) = listeners.for_child()
socket.create_connection(("127.0.0.1", port), timeout=2)
print("served on", worker.accept()[1][0])
