"""Binding the listening sockets in the parent, with errors that name the address."""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import stat

from tornado.netutil import bind_sockets, bind_unix_socket

from tornado_prefork.errors import StartupError

# The listen backlog when none is given: Tornado's default, written out
# because Tornado's name for it (tornado.netutil._DEFAULT_BACKLOG) is private.
DEFAULT_BACKLOG = 128


@dataclasses.dataclass
class Listeners:
    """The sockets the workers serve on, and how to describe and release them."""

    sockets: list[socket.socket]
    urls: list[str]
    unix_path: str | None = None
    # With reuse_port every child binds its own socket to this (port, address,
    # family, backlog): a listening socket kept in the parent would get its
    # share of the connections and never accept them.
    reuse_port: tuple[int, str | None, socket.AddressFamily, int] | None = None

    def for_child(self) -> list[socket.socket]:
        """The sockets a worker adds to its HTTPServer."""
        if self.reuse_port is None:
            return self.sockets
        port, address, family, backlog = self.reuse_port
        return bind_sockets(port, address, family, backlog, reuse_port=True)

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
        sockets = bind_sockets(port, address, family, backlog, reuse_port=reuse_port)
    except socket.gaierror as e:
        raise StartupError(f"cannot resolve address {address!r}: {e.strerror}") from e
    except OSError as e:
        raise StartupError(f"cannot listen on {where}: {_explain(e)}") from e
    urls = [describe(scheme, sock) for sock in sockets]
    if not reuse_port:
        return Listeners(sockets, urls)
    # The parent's sockets proved the address works and fixed the port (when
    # it was 0); the children bind their own.
    bound_port = sockets[0].getsockname()[1]
    for sock in sockets:
        sock.close()
    return Listeners([], urls, reuse_port=(bound_port, address, family, backlog))


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
