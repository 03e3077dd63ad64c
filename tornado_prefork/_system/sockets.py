"""Binding the listening sockets in the parent, with errors that name the address.

With ``reuse_port`` the parent holds the address with bound sockets that do
not listen, and each worker binds and listens on its own right after fork,
before it drops privileges.

The listen backlog is how many connections the kernel completes and queues
before a worker accepts them; past it, new SYNs are dropped and each such
client tries again only after a second. The kernel silently lowers a larger
backlog to ``net.core.somaxconn``, which `bind` says in a log line.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import stat
import struct
from typing import Any

from tornado.log import gen_log
from tornado.netutil import bind_sockets, bind_unix_socket

from tornado_prefork.errors import StartupError

# 1 when the kernel moves the connections waiting on a closing SO_REUSEPORT
# listener to another listener of its group (Linux 5.14+, per network namespace).
MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"

# The listen backlog when none is given, gunicorn's and uvicorn's. Tornado's
# 128 is filled by a burst of connects (a client pool or a proxy starting up)
# faster than two workers accept them.
DEFAULT_BACKLOG = 2048
# The largest backlog the kernel grants (per network namespace).
SOMAXCONN = "/proc/sys/net/core/somaxconn"
# For a listening socket, Linux's TCP_INFO reports in tcpi_unacked the
# connections waiting to be accepted and in tcpi_sacked the backlog in force
# (struct tcp_info: eight one-byte fields, four u32, then these two).
_LISTENER_INFO = struct.Struct("=24xII")


@dataclasses.dataclass
class Listeners:
    """The sockets the workers serve on, and how to describe and release them."""

    sockets: list[socket.socket]
    urls: list[str]
    unix_path: str | None = None
    # With reuse_port the parent's sockets are bound but not listening: they
    # hold the address (no other user can bind it, nobody can connect to
    # them) while every worker listens on a socket of its own, bound to the
    # same address. A listening socket in the parent would get its share of
    # the connections and never accept them.
    reuse_port: bool = False
    backlog: int = DEFAULT_BACKLOG

    def for_child(self) -> list[socket.socket]:
        """The sockets a worker adds to its HTTPServer.

        With reuse_port, binds the worker's own listening sockets (call it
        before dropping privileges: the address may be a port below 1024, and
        only the parent's user may share it) and closes the parent's copies.
        Raises `StartupError` naming the address if that fails.
        """
        if not self.reuse_port:
            return self.sockets
        held, self.sockets = self.sockets, []
        try:
            return [_listen_beside(sock, self.backlog) for sock in held]
        finally:
            for sock in held:
                sock.close()

    def give_to(self, uid: int, gid: int, name: str) -> None:
        """Makes ``uid``:``gid`` the owner of the unix socket file, if there is one.

        On failure closes everything (removing the file) and raises
        `StartupError` naming the socket and the user.
        """
        if self.unix_path is None:
            return
        path = self.unix_path
        try:
            os.chown(path, uid, gid)
        except OSError as e:
            self.close()
            raise StartupError(
                f"cannot give unix socket {path} to user {name}: {e.strerror or e}"
            ) from e

    def close(self) -> None:
        """Closes the parent's sockets and removes the unix socket file it made.

        Idempotent: a second call must not remove a file a newer server made.
        """
        for sock in self.sockets:
            sock.close()
        path, self.unix_path = self.unix_path, None
        if path is not None:
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass


def bind(
    port: int,
    address: str | None,
    *,
    unix_socket: str | None,
    unix_socket_mode: int,
    reuse_port: bool,
    backlog: int,
    family: socket.AddressFamily,
    scheme: str,
) -> Listeners:
    """Binds what `tornado_prefork.serve` listens on; raises `StartupError`."""
    if unix_socket is not None:
        return _bind_unix(unix_socket, unix_socket_mode, backlog)
    where = f"{address or '*'}:{port}"
    try:
        if reuse_port:
            sockets = _hold(port, address, family)
        else:
            sockets = bind_sockets(port, address, family, backlog)
    except socket.gaierror as e:
        raise StartupError(f"cannot resolve address {address!r}: {e.strerror}") from e
    except OSError as e:
        raise StartupError(f"cannot listen on {where}: {_explain(e)}") from e
    urls = [describe(scheme, sock) for sock in sockets]
    _say_cap(backlog)
    return Listeners(sockets, urls, reuse_port=reuse_port, backlog=backlog)


def somaxconn() -> int | None:
    """``net.core.somaxconn``, the cap on every listen backlog; None if unreadable."""
    try:
        with open(SOMAXCONN) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _say_cap(backlog: int) -> None:
    # Not an error: the server works with the smaller queue, but a burst
    # larger than it has SYNs dropped, and nothing else would say why.
    cap = somaxconn()
    if cap is not None and backlog > cap:
        gen_log.info(
            "listen backlog %d is capped at %d by net.core.somaxconn "
            "(sysctl -w net.core.somaxconn=%d raises it)",
            backlog,
            cap,
            backlog,
        )


def accept_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(connections waiting to be accepted, the most that may wait) on the
    listening TCP socket ``sock``; None where the kernel does not say (a unix
    socket). One system call: cheap enough to ask before each hold."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _LISTENER_INFO.size)
    except OSError:
        return None
    if len(info) < _LISTENER_INFO.size:
        return None
    waiting, limit = _LISTENER_INFO.unpack(info)
    return waiting, limit


def _hold(port: int, address: str | None, family: socket.AddressFamily) -> list[socket.socket]:
    """Binds an ``SO_REUSEPORT`` socket, not listening, to each address
    ``address`` resolves to (every interface for None), all on one port."""
    found = socket.getaddrinfo(
        address or None, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    # IPv4 first, as Tornado binds them; each address once.
    addresses = dict.fromkeys((info[0], info[4]) for info in sorted(found, key=lambda i: i[0]))
    held: list[socket.socket] = []
    try:
        for af, sockaddr in addresses:
            if held and sockaddr[1] == 0:
                # Port 0: the other addresses take the port the first one got.
                sockaddr = (sockaddr[0], held[0].getsockname()[1], *sockaddr[2:])
            try:
                sock = _hold_one(af, sockaddr)
            except OSError as e:
                if e.errno == errno.EAFNOSUPPORT:
                    continue  # IPv6 disabled in this kernel
                raise
            held.append(sock)
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held


def _hold_one(af: int, sockaddr: tuple[Any, ...]) -> socket.socket:
    # Without SO_REUSEADDR: a bound socket that does not listen and has
    # SO_REUSEADDR would let any user's SO_REUSEADDR socket bind beside it.
    # With it only if the address is busy, which happens when an earlier
    # server without SO_REUSEPORT left connections in TIME_WAIT; a listener
    # still fails then.
    try:
        return _bound(af, sockaddr, reuse_address=False)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
    return _bound(af, sockaddr, reuse_address=True)


def _bound(af: int, sockaddr: tuple[Any, ...], reuse_address: bool) -> socket.socket:
    sock = _reuse_port_socket(af, reuse_address)
    try:
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def _listen_beside(held: socket.socket, backlog: int) -> socket.socket:
    """A listening ``SO_REUSEPORT`` socket on the address ``held`` holds."""
    where = held.getsockname()
    sock = _reuse_port_socket(held.family, reuse_address=True)
    try:
        sock.bind(where)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise StartupError(f"cannot listen on {where[0]}:{where[1]}: {_explain(e)}") from e
    sock.setblocking(False)
    return sock


def _reuse_port_socket(af: int, reuse_address: bool) -> socket.socket:
    sock = socket.socket(af, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if af == socket.AF_INET6:
            # As Tornado: IPv4 has a socket of its own.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    except OSError:
        sock.close()
        raise
    return sock


def reuse_port_caveat() -> str | None:
    """Why connections can be lost when a worker stops in reuse_port mode,
    or None when the kernel moves them to another worker.

    Each worker's socket has a queue of its own; when the worker stops (a
    reload, a scale-down, recycling) the connections that reached that queue
    after its last accept are reset, unless ``net.ipv4.tcp_migrate_req`` is 1.
    """
    try:
        with open(MIGRATE_REQ) as f:
            value = f.read().strip()
    except FileNotFoundError:
        return (
            "this kernel cannot move them to another worker "
            "(net.ipv4.tcp_migrate_req needs Linux 5.14 or newer)"
        )
    except OSError as e:
        return f"cannot read {MIGRATE_REQ}: {e.strerror}"
    if value != "0":
        return None
    return (
        "net.ipv4.tcp_migrate_req is 0; set it to 1 "
        "(sysctl -w net.ipv4.tcp_migrate_req=1) to have the kernel move them to another worker"
    )


def _bind_unix(path: str, mode: int, backlog: int) -> Listeners:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StartupError(
            f"cannot listen on unix socket {path}: directory {directory} does not exist"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StartupError(
            f"cannot listen on unix socket {path}: directory {directory} is not writable"
        )
    if _answers(path):
        raise StartupError(f"cannot listen on unix socket {path}: a server is listening on it")
    try:
        sock = bind_unix_socket(path, mode, backlog)
    except ValueError as e:
        raise StartupError(
            f"cannot listen on unix socket {path}: it exists and is not a socket"
        ) from e
    except OSError as e:
        raise StartupError(f"cannot listen on unix socket {path}: {_explain(e)}") from e
    _say_cap(backlog)
    return Listeners([sock], [f"unix:{path}"], unix_path=path)


def _answers(path: str) -> bool:
    # Tornado replaces any socket file; one that a live server listens on
    # would be stolen from it.
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _explain(e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return "address already in use"
    if e.errno == errno.EACCES:
        return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if e.errno == errno.EADDRNOTAVAIL:
        return "address not available on this host"
    return e.strerror or str(e)


def describe(scheme: str, sock: socket.socket) -> str:
    """The URL of a listening socket, for logs."""
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
