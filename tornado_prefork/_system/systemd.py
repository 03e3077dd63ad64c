"""systemd integration without a dependency: ``sd_notify`` and socket activation."""

from __future__ import annotations

import os
import socket

# The first fd systemd passes (SD_LISTEN_FDS_START).
_LISTEN_FDS_START = 3


def notify(*fields: str) -> bool:
    """Sends ``READY=1``-style fields to ``$NOTIFY_SOCKET``; False when there is none.

    A socket name starting with ``@`` is in the abstract namespace.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError:
        return False
    return True


def listen_sockets() -> list[socket.socket]:
    """The sockets systemd passed to this process (``LISTEN_FDS``), or none.

    The variables are removed from the environment so that no child or
    program it runs takes the sockets for its own.
    """
    pid = os.environ.get("LISTEN_PID")
    count = os.environ.get("LISTEN_FDS")
    if pid is None or count is None or not pid.isdigit() or int(pid) != os.getpid():
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    sockets = []
    for fd in range(_LISTEN_FDS_START, _LISTEN_FDS_START + int(count or 0)):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets
