"""The application's code in the parent, before the fork, so that every worker shares its pages.

What ``preload`` does for each kind of application given to `tornado_prefork.serve`:

================================  ======================  =====================  ==============
app                               ``None`` (the default)  ``True``               ``False``
================================  ======================  =====================  ==============
`~tornado.web.Application`        built already           built already          ``ValueError``
factory (a function)              called in each worker   called in the parent   as ``None``
async factory                     called in each worker   ``ValueError``         as ``None``
lifespan                          entered in each worker  ``ValueError``         as ``None``
import string of an application   imported in the parent  imported in the parent imported in
                                                                                 each worker
import string of a factory        module imported in the  imported and called    imported and
                                  parent, factory called  in the parent          called in each
                                  in each worker                                 worker
================================  ======================  =====================  ==============

The default shares what a module builds at import (tables, templates,
compiled code) and keeps a factory where it belongs: in each worker, where
connections, threads and the event loop are per process. An async factory
awaits things that live on a worker's event loop, and a lifespan is entered
and exited on it, so neither is called in the parent.

The import and a factory called in the parent are watched: an event loop
they create is refused (every worker would share its selector), threads they
start and file descriptors they open (a database connection, a socket: every
worker would read and write the same one) are named in a `RuntimeWarning`. A
factory that starts a server itself (a ``main()`` that never returns) is
refused as it tries, as in a worker.
"""

from __future__ import annotations

import gc
import inspect
import os
import socket
import stat
import sysconfig
import threading
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from tornado.httputil import HTTPServerConnectionDelegate
from tornado.log import gen_log

from tornado_prefork._serve import app as _app
from tornado_prefork._serve.app import AppSource
from tornado_prefork._supervisor import children as _children
from tornado_prefork.errors import StartupError

_O_ACCMODE = 0o3
_O_WRONLY = 0o1
_O_APPEND = 0o2000

_FDS = "/proc/self/fd"
_STDLIB = sysconfig.get_paths()["stdlib"] + os.sep


def load(app: AppSource, preload: bool | None, stacklevel: int = 2) -> AppSource:
    """Loads in this process (the parent) what ``preload`` asks for ``app`` (see the module).

    Returns what each worker builds its application from: the application
    itself, a factory, or the import string when nothing was preloaded.
    Raises `ValueError` for a ``preload`` that cannot apply to ``app``,
    `.StartupError` when the import or the factory fails, creates an event
    loop or starts a server itself, and `TypeError` when a factory called
    here returns no application. Warns (`RuntimeWarning`, at ``stacklevel``)
    about threads started and file descriptors opened by the application's
    code here.
    """
    if preload not in (None, True, False):
        raise TypeError(f"preload must be True, False or None, not {preload!r}")
    if isinstance(app, HTTPServerConnectionDelegate):
        if preload is False:
            raise ValueError(
                "preload=False needs a factory or an import string: an Application "
                "object is built in the parent already"
            )
        return app
    if isinstance(app, str):
        if preload is False:
            return app
        module = app.partition(":")[0]
        with _watch(f"importing {module} (from {app!r})", stacklevel + 2):
            try:
                loaded = _app.import_target(app)
            except Exception as e:
                raise StartupError(_failure(f"cannot import {module} ({app!r})", e)) from e
        if isinstance(loaded, HTTPServerConnectionDelegate):
            return loaded
        if not callable(loaded):
            raise TypeError(
                f"{app!r} is {type(loaded).__name__} {loaded!r}, not a "
                "tornado.web.Application or a function that returns one"
            )
        factory = cast(_app.Factory, loaded)
    else:
        factory = app
    if preload is not True:
        return factory
    return _call_factory(app, factory, stacklevel + 1)


def freeze() -> None:
    """Moves every object this process holds now out of reach of the garbage collector.

    Call it in the parent right before forking workers (and again before each
    later fork). A collection writes to the header of every object it
    visits; without this, the first full collection in a worker (or in the
    parent) writes to every inherited page, and the copy-on-write copies them
    all. Frozen objects are never collected: what is frozen is what the
    parent keeps anyway.
    """
    gc.freeze()


def _call_factory(
    app: AppSource, factory: _app.Factory, stacklevel: int
) -> HTTPServerConnectionDelegate:
    name = _app.describe(app)
    if inspect.iscoroutinefunction(factory):
        raise ValueError(
            f"preload=True cannot call the async factory {name} in the parent: it "
            "runs on each worker's event loop; use preload=None (the default)"
        )
    with _watch(f"calling {name}", stacklevel + 2):
        try:
            with _app.servers_refused(app, in_parent=True):
                built = factory()
        except StartupError:
            # Its message says it all (a main() refused: what to give
            # instead), as a worker shows it.
            raise
        except Exception as e:
            raise StartupError(_failure(f"{name} failed in the parent (preload)", e)) from e
    if inspect.isawaitable(built):
        if inspect.iscoroutine(built):
            built.close()
        raise ValueError(
            f"preload=True cannot await what {name} returned in the parent: it "
            "runs on each worker's event loop; use preload=None (the default)"
        )
    if _app.is_lifespan(built):
        raise ValueError(
            f"preload=True cannot enter the lifespan {name} in the parent: it is "
            "entered and exited on each worker's event loop; use preload=None (the default)"
        )
    if not isinstance(built, HTTPServerConnectionDelegate):
        raise TypeError(f"{name} gave {type(built).__name__} {built!r}, not an Application")
    return built


def _failure(what: str, error: Exception) -> str:
    """One line: what failed, the error, and where it was raised."""
    gen_log.debug("%s", what, exc_info=error)
    frames = traceback.extract_tb(error.__traceback__)
    # The user's line, not the standard library's that raised for it (os.environ[...]).
    ours = [f for f in frames if not f.filename.startswith(("<", _STDLIB))]
    where = ""
    if ours or frames:
        frame = (ours or frames)[-1]
        where = f" ({frame.filename}:{frame.lineno})"
    return f"{what}: {type(error).__name__}: {error}{where}"


@contextmanager
def _watch(what: str, stacklevel: int) -> Iterator[None]:
    """Checks what the user's code in the ``with`` block left in the parent."""
    fds = _open_fds()
    threads = set(threading.enumerate())
    loops = set(_children._open_event_loops())
    yield
    new_loops = [loop for loop in _children._open_event_loops() if loop not in loops]
    if new_loops:
        raise StartupError(
            f"{what} created an event loop ({', '.join(map(repr, new_loops))}) that every "
            "worker would share; create it in a factory (called in each worker, on its own "
            "loop), or do not preload"
        )
    new_threads = [t.name for t in threading.enumerate() if t not in threads]
    if new_threads:
        warnings.warn(
            f"{what} started {len(new_threads)} thread(s): {', '.join(new_threads)}. Threads "
            "do not exist in the workers and any lock they hold stays locked there; start "
            "them in a factory (called in each worker), or do not preload",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
    new_fds = [_describe_fd(fd) for fd, target in _open_fds().items() if fds.get(fd) != target]
    shared = [text for text in new_fds if text is not None]
    if shared:
        warnings.warn(
            f"{what} opened {'; '.join(shared)}. Every worker would share it (one "
            "connection read and written by all, one file offset): create connections "
            "and open files in a factory (called in each worker) or per worker, not at "
            "import, or do not preload",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def _open_fds() -> dict[int, str]:
    """This process's open file descriptors and what each refers to (Linux; else none)."""
    try:
        names = os.listdir(_FDS)
    except OSError:
        return {}
    found = {}
    for name in names:
        try:
            found[int(name)] = os.readlink(f"{_FDS}/{name}")
        except (OSError, ValueError):
            # The descriptor of the listing itself, closed by now.
            continue
    return found


def _describe_fd(fd: int) -> str | None:
    """What descriptor ``fd`` is, for the warning; None for one that is safe to share."""
    try:
        target = os.readlink(f"{_FDS}/{fd}")
        mode = os.fstat(fd).st_mode
    except OSError:
        return None
    if stat.S_ISSOCK(mode):
        return f"fd {fd}, {_describe_socket(fd)}"
    if stat.S_ISREG(mode) and _append_only(fd):
        # A log file: writes in append mode never step on each other.
        return None
    if target == "/dev/null":
        return None
    if stat.S_ISFIFO(mode):
        return f"fd {fd}, a pipe"
    if target.startswith("anon_inode:"):
        return f"fd {fd}, {target.partition(':')[2]} (a selector or an event loop's)"
    return f"fd {fd}, {target}"


def _append_only(fd: int) -> bool:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            fields = dict(line.split(":", 1) for line in info if ":" in line)
        flags = int(fields["flags"].strip(), 8)
    except (OSError, KeyError, ValueError):
        return False
    return flags & _O_ACCMODE == _O_WRONLY and bool(flags & _O_APPEND)


def _describe_socket(fd: int) -> str:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return "a socket"
    with sock:
        kind = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "datagram"}.get(sock.type, "raw")
        family = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6", socket.AF_UNIX: "unix"}.get(
            sock.family, str(sock.family)
        )
        text = f"{'an' if family.startswith('IP') else 'a'} {family} {kind} socket"
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
        if peer:
            return f"{text} connected to {_address(peer)}"
        try:
            local = sock.getsockname()
        except OSError:
            return text
        return f"{text} bound to {_address(local)}" if local else text


def _address(address: object) -> str:
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return repr(address)
