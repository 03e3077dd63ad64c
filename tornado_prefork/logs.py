"""Logging for a multi-process server: who wrote each line, and reopening files.

Every record gets ``%(worker)s``: ``master`` in the parent, ``worker N`` (the
task id) in a worker; ``%(process)d`` is the pid. `FORMAT` uses both and
works with Tornado's `tornado.log.LogFormatter` (colours on a terminal).
`reopen_files` reopens every file a logging handler writes to, for logrotate;
`tornado_prefork.serve` calls it on SIGUSR1 in the parent and in each worker.
`NonBlockingStreamHandler` writes to stderr or stdout without ever waiting for
the reader: a log shipper that stops reading costs log lines, counted and
reported, never the server.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import logging.handlers
import os
import select
import socket
import stat
import sys
import time
import weakref
from typing import TYPE_CHECKING, TextIO, TypeGuard

from tornado.log import LogFormatter, gen_log

from tornado_prefork._supervisor import children as _children
from tornado_prefork._system import python_names as _python_names

FORMAT = (
    "%(color)s[%(levelname)1.1s %(asctime)s %(worker)s %(process)d "
    "%(module)s:%(lineno)d]%(end_color)s %(message)s"
)


# What a process that is neither the parent nor a worker calls itself.
_name: str | None = None


class ProcessFilter(logging.Filter):
    """Adds ``worker`` (``master``, ``worker N``, or the name of a helper
    process such as ``file watcher``) to every record.

    .. versionadded:: 0.1
    """

    def filter(self, record: logging.LogRecord) -> bool:
        task = _children.task_id()
        if _name is not None:
            record.worker = _name
        else:
            record.worker = "master" if task is None else f"worker {task}"
        return True


def name_process(name: str) -> None:
    """Has every log line of this process say ``name`` instead of ``master``:
    for a helper process of the server that is no worker.

    .. versionadded:: 0.1
    """
    global _name
    _name = name


def enable(level: int | str | None = logging.INFO, access_log: bool = True) -> None:
    """Logs to stderr in `FORMAT` at ``level`` (None: keep the root logger's
    level); ``access_log=False`` silences Tornado's per-request lines.

    Handlers already on the root logger get the `ProcessFilter`, so that
    ``%(worker)s`` works in their formats. Their formatters are kept, except
    Tornado's plain default (`tornado.log.enable_pretty_logging`'s), which is
    given `FORMAT`: a format the user configured (``logging.config``,
    ``--log-config``) is never replaced.

    The handler it adds for stderr is a `NonBlockingStreamHandler`, and the
    plain `logging.StreamHandler` that `tornado.log.enable_pretty_logging`
    adds (``tornado.options`` does) is replaced by one, with its level and
    filters: no process of the server then waits for whoever reads its logs.
    Handlers the user configured are kept as they are.

    .. versionadded:: 0.1
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(NonBlockingStreamHandler())
    for index, handler in enumerate(root.handlers):
        if _is_tornado_stream_handler(handler):
            replacement = NonBlockingStreamHandler(handler.stream)
            replacement.setLevel(handler.level)
            for kept in handler.filters:
                replacement.addFilter(kept)
            root.handlers[index] = replacement
            handler.close()
    for handler in root.handlers:
        _add_filter(handler)
        if handler.formatter is None or _is_tornado_default(handler.formatter):
            handler.setFormatter(LogFormatter(fmt=FORMAT))
    if level is not None:
        root.setLevel(level)
    logging.getLogger("tornado.access").disabled = not access_log


def access_log_to(path: str) -> None:
    """Writes Tornado's access log (``tornado.access``) to the file ``path``
    instead of the root logger's handlers (``-``: stderr, through a
    `NonBlockingStreamHandler`). The file is reopened on SIGUSR1
    (`reopen_files`) and when logrotate moved it.

    Raises `OSError` if the file cannot be opened.

    .. versionadded:: 0.1
    """
    handler: logging.Handler
    if path == "-":
        handler = NonBlockingStreamHandler(sys.stderr)
    else:
        handler = logging.handlers.WatchedFileHandler(path)
    _add_filter(handler)
    handler.setFormatter(LogFormatter(fmt=FORMAT, color=False))
    access = logging.getLogger("tornado.access")
    access.addHandler(handler)
    access.propagate = False


def reopen_files() -> None:
    """Reopens the file of every `logging.FileHandler` (after logrotate moved it).

    A `logging.handlers.WatchedFileHandler` reopens its file if it was moved; any
    other file handler in append mode is closed and opens its file again on its
    next record. Handlers that truncate (mode ``w``) are left alone: reopening
    would erase what they wrote.

    .. versionadded:: 0.1
    """
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.handlers.WatchedFileHandler):
                handler.reopenIfNeeded()
            elif isinstance(handler, logging.FileHandler) and handler.mode != "w":
                handler.close()
    # Also the first line of the new files: a closed handler opens its file
    # only when it next writes.
    gen_log.info("log files reopened")


# How much a handler keeps for a reader that is behind; beyond it, lines are
# dropped and counted. About 1,300 access lines: a log shipper that pauses
# for a few seconds at a few hundred lines a second loses nothing, and a
# stuck one costs each process no more memory than this.
PENDING_LIMIT = 256 * 1024

# One write(2) of at most this many bytes to a pipe is atomic (POSIX): the
# lines of the parent and of every worker, all writing to the same pipe, never
# mix mid-line. A longer record (a traceback) is written line by line.
_ATOMIC = select.PIPE_BUF

# How often a worker's event loop retries the lines still pending when no
# new record comes to carry them.
_RETRY = 0.5

# How long a handler that is closed (at the end of the process: the parent's
# last lines, a worker's after its drain) waits for a slow reader to take its
# pending lines, instead of dropping them at once.
_CLOSE_WAIT = 0.25

if TYPE_CHECKING:
    _StreamHandler = logging.StreamHandler[TextIO]
else:
    _StreamHandler = logging.StreamHandler


class NonBlockingStreamHandler(_StreamHandler):
    """A `logging.StreamHandler` for stderr or stdout that never makes its
    process wait for the reader of the stream.

    When the stream is a pipe nobody reads (a stuck log shipper) or a
    terminal that does not take output, a plain `logging.StreamHandler`
    blocks its process on the next line, and with it the event loop of a
    worker or the supervisor of the server. This handler writes what the
    stream takes at once and keeps the rest, up to ``limit`` bytes, to write
    before the next record (and, in a process with a running asyncio event
    loop, every half second); what does not fit is dropped and counted. Once
    the stream takes lines again, one line says how many were dropped and why
    (``1,234 log lines dropped: stderr is not being read``), where they were.

    Each write is of whole lines and at most ``select.PIPE_BUF`` bytes, which
    the kernel writes to a pipe at once: lines of processes sharing the
    stream do not mix. A child made by `os.fork` starts with nothing pending
    (its parent writes what it had).

    For a pipe or a terminal, the handler writes through a descriptor of its
    own, opened from ``/proc/self/fd`` and non-blocking: a write that would
    wait fails at once. Setting ``O_NONBLOCK`` on the stream's descriptor
    instead would change it for every process sharing it, the shell or the
    terminal included, which may not expect it. Where that open is refused
    (no ``/proc``, or the pipe belongs to another user) it polls the stream
    with a timeout of 0 before each write. A socket (systemd's journal) is
    sent to with ``MSG_DONTWAIT``; a regular file is written as usual, since
    a write to it does not wait for a reader. A stream without a descriptor
    (an `io.StringIO`) is written as `logging.StreamHandler` does.

    The handler writes to the stream as it was when the handler was made or
    given it (`setStream`): a descriptor replaced afterwards (``os.dup2``
    onto 2) is not followed.

    .. versionadded:: 0.1
    """

    def __init__(self, stream: TextIO | None = None, limit: int = PENDING_LIMIT) -> None:
        super().__init__(stream)
        #: The most bytes kept for the stream while it does not take them.
        self.limit = limit
        # Whole lines (bytes) in order, and where lines were dropped (_Gap).
        self._pending: collections.deque[bytes | _Gap] = collections.deque()
        self._size = 0
        self._sink = _sink_for(self.stream)
        self._writing = False
        self._retry: asyncio.TimerHandle | None = None
        self._retry_loop: asyncio.AbstractEventLoop | None = None
        _handlers.add(self)

    @property
    def pending(self) -> int:
        """How many bytes are waiting for the stream to take them."""
        return self._size

    def emit(self, record: logging.LogRecord) -> None:
        sink = self._sink
        if sink is None:
            super().emit(record)
            return
        try:
            data = self._encode(self.format(record) + self.terminator)
            # Lines written before this one go first, so the order is kept.
            self._write_pending()
            if self._size + len(data) > self.limit:
                self._drop(_lines(data), f"{sink.name} is not being read")
            else:
                self._pending.extend(_pieces(data))
                self._size += len(data)
                self._write_pending()
            if self._pending:
                self._retry_later()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Writes what the stream takes now of the pending lines; never waits."""
        if self._sink is None:
            super().flush()
            return
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def setStream(self, stream: TextIO) -> TextIO | None:
        old = super().setStream(stream)
        if old is not None:
            if self._sink is not None:
                self._sink.close()
            self._sink = _sink_for(stream)
        return old

    def close(self) -> None:
        """Gives a slow reader a moment (a quarter of a second at most) to take
        the pending lines, then drops them; closes the handler's own
        descriptor, not the stream."""
        with self.lock:  # type: ignore[union-attr]
            sink, self._sink = self._sink, None
            if sink is not None:
                deadline = time.monotonic() + _CLOSE_WAIT
                while True:
                    self._write_pending(sink)
                    left = deadline - time.monotonic()
                    if not self._pending or left <= 0 or not sink.wait(left):
                        break
                sink.close()
            self._pending.clear()
            self._size = 0
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
        super().close()

    def _write_pending(self, sink: _Sink | None = None) -> None:
        """Writes from the head of the pending lines until the stream would wait."""
        sink = sink or self._sink
        # A signal handler that logs runs inside a write interrupted by the
        # signal (PEP 475): its record only joins the queue.
        if sink is None or self._writing:
            return
        self._writing = True
        try:
            while self._pending:
                head = self._pending[0]
                if isinstance(head, _Gap):
                    notice = self._notice(head)
                    written = sink.write(notice)
                    if written == 0:
                        return
                    # The rest of a notice a terminal took in part waits as a line.
                    self._pending[0] = notice[written:]
                    self._size += len(notice) - written
                    if written == len(notice):
                        self._pending.popleft()
                    continue
                # Several short lines in one write, still within what is atomic.
                batch = [head]
                size = len(head)
                while len(batch) < len(self._pending):
                    entry = self._pending[len(batch)]
                    if isinstance(entry, _Gap) or size + len(entry) > _ATOMIC:
                        break
                    batch.append(entry)
                    size += len(entry)
                written = sink.write(b"".join(batch))
                if written == 0:
                    return
                self._taken(written)
        except OSError as e:
            # A stream that fails (closed, full disk) loses what waits for it;
            # its next records are tried again, and the notice says why.
            self._drop(0, f"{sink.name}: {e.strerror or e}", everything=True)
        finally:
            self._writing = False

    def _taken(self, written: int) -> None:
        self._size -= written
        while written:
            head = self._pending[0]
            assert isinstance(head, bytes)
            if written < len(head):
                self._pending[0] = head[written:]
                return
            self._pending.popleft()
            written -= len(head)

    def _drop(self, lines: int, reason: str, everything: bool = False) -> None:
        if everything:
            for entry in self._pending:
                lines += entry.lines if isinstance(entry, _Gap) else _lines(entry)
            self._pending.clear()
            self._size = 0
        tail = self._pending[-1] if self._pending else None
        if isinstance(tail, _Gap):
            tail.lines += lines
        elif lines:
            self._pending.append(_Gap(lines, reason))

    def _notice(self, gap: _Gap) -> bytes:
        """The line that stands for the lines of ``gap``, in this handler's format."""
        frame = inspect.currentframe()
        plural = "line" if gap.lines == 1 else "lines"
        record = logging.LogRecord(
            gen_log.name,
            logging.WARNING,
            __file__,
            0 if frame is None else frame.f_lineno,
            "%s log %s dropped: %s",
            (f"{gap.lines:,}", plural, gap.reason),
            None,
            "_notice",
        )
        self.filter(record)
        return self._encode(self.format(record) + self.terminator)[:_ATOMIC]

    def _encode(self, text: str) -> bytes:
        return text.encode(getattr(self.stream, "encoding", None) or "utf-8", "backslashreplace")

    def _retry_later(self) -> None:
        # Without a new record, a reader that catches up would get the
        # pending lines only with the next one; a worker's loop tries again.
        # The supervisor has no loop: its pending lines go with its next
        # record or at its end.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._retry is not None and self._retry_loop is loop:
            return
        self._retry_loop = loop
        self._retry = loop.call_later(_RETRY, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            if self._pending:
                self._retry_later()

    def _forget(self) -> None:
        # In a child after fork: the parent writes the lines it had pending.
        self._pending.clear()
        self._size = 0
        self._writing = False
        self._retry = None
        self._retry_loop = None


class _Gap:
    """Where lines were dropped, how many and why."""

    __slots__ = ("lines", "reason")

    def __init__(self, lines: int, reason: str) -> None:
        self.lines = lines
        self.reason = reason


class _Sink:
    """The descriptor a handler writes to, and how it avoids waiting."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        #: ``stderr``, ``stdout`` or ``fd N``, for the notice of dropped lines.
        self.name = name

    def write(self, data: bytes) -> int:
        """Writes the start of ``data``; returns how much was written, 0 when
        the stream would make the process wait. Raises `OSError` when it fails."""
        try:
            return self._write(data)
        except BlockingIOError:
            return 0

    def _write(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def wait(self, timeout: float) -> bool:
        """Waits at most ``timeout`` seconds for the stream to take data."""
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        return bool(poller.poll(timeout * 1000))

    def close(self) -> None:
        pass


class _Private(_Sink):
    """A non-blocking descriptor of the handler's own on the stream's pipe or
    terminal: its flags are no other process's business."""

    def close(self) -> None:
        os.close(self.fd)


class _Polled(_Sink):
    """The stream's own (blocking) descriptor, written only when poll says it
    takes data: a pipe that polls writable has room for ``PIPE_BUF`` bytes.
    A fallback, not a guarantee: another process sharing the pipe may fill
    it between the poll and the write."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__(fd, name)
        self._poller = select.poll()
        self._poller.register(fd, select.POLLOUT)

    def _write(self, data: bytes) -> int:
        if not self._poller.poll(0):
            return 0
        return os.write(self.fd, data[:_ATOMIC])


class _Socket(_Sink):
    """A socket (systemd's journal stream), sent to without waiting."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        super().__init__(sock.fileno(), name)
        self._sock = sock

    def _write(self, data: bytes) -> int:
        return self._sock.send(data, socket.MSG_DONTWAIT)

    def close(self) -> None:
        self._sock.close()


class _File(_Sink):
    """A regular file or a device such as /dev/null: a write does not wait for
    a reader, so it is written whole, as a plain handler does."""

    def _write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        return len(data)


def _sink_for(stream: object) -> _Sink | None:
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    name = {1: "stdout", 2: "stderr"}.get(fd, f"fd {fd}")
    if stat.S_ISSOCK(mode):
        try:
            copy = os.dup(fd)
        except OSError:
            return _Polled(fd, name)
        try:
            return _Socket(socket.socket(fileno=copy), name)
        except OSError:
            os.close(copy)
            return _Polled(fd, name)
    if stat.S_ISFIFO(mode) or os.isatty(fd):
        try:
            return _Private(_reopen(fd), name)
        except OSError:
            return _Polled(fd, name)
    return _File(fd, name)


def _reopen(fd: int) -> int:
    """A new open file description of the pipe or terminal ``fd``, non-blocking."""
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    return os.open(f"/proc/self/fd/{fd}", flags)


def _pieces(data: bytes) -> list[bytes]:
    """``data`` cut after newlines into pieces of at most `_ATOMIC` bytes (a
    line longer than that is cut where it must)."""
    pieces = []
    start = 0
    while len(data) - start > _ATOMIC:
        cut = data.rfind(b"\n", start, start + _ATOMIC) + 1
        if cut <= start:
            cut = start + _ATOMIC
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return pieces


def _lines(data: bytes) -> int:
    return max(1, data.count(b"\n"))


_handlers: weakref.WeakSet[NonBlockingStreamHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_handlers):
        handler._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _is_tornado_stream_handler(
    handler: logging.Handler,
) -> TypeGuard[logging.StreamHandler[TextIO]]:
    """The handler `tornado.log.enable_pretty_logging` adds for stderr."""
    return (
        type(handler) is logging.StreamHandler
        and handler.stream in (sys.stderr, sys.stdout)
        and (handler.formatter is None or _is_tornado_default(handler.formatter))
    )


def _add_filter(handler: logging.Handler) -> None:
    if not any(isinstance(f, ProcessFilter) for f in handler.filters):
        handler.addFilter(ProcessFilter())


def _is_tornado_default(formatter: logging.Formatter) -> bool:
    return (
        isinstance(formatter, LogFormatter)
        and _python_names.formatter_format(formatter) == LogFormatter.DEFAULT_FORMAT
    )
