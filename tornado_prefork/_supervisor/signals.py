"""Signals recorded into a pipe, for a parent that sleeps in ``poll``.

The handlers do nothing: `signal.set_wakeup_fd` writes each signal's number
into the pipe before the handler would run, which is the record. Nothing else
happens in signal context.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import Any


def _record(signum: int, frame: FrameType | None) -> None:
    """Signal handler: the byte written to the wakeup fd is the record."""


@contextlib.contextmanager
def held(signals: Iterable[int]) -> Iterator[None]:
    """Blocks ``signals`` for the block: one that comes meanwhile stays pending
    until a `SignalPipe` is installed (which unblocks them), instead of the
    default action ending the process (a ``systemctl reload`` or logrotate's
    SIGUSR1 during a slow start). Those still pending at the end are
    discarded, and the mask is put back. A child forked inside the block
    (which has set its own mask) leaves it with its signals untouched."""
    signals = tuple(signals)
    pid = os.getpid()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        if os.getpid() == pid:
            signal.pthread_sigmask(signal.SIG_BLOCK, signals)
            while signal.sigtimedwait(signals, 0) is not None:
                pass
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class SignalPipe:
    """Installs handlers for ``signals`` writing into a pipe; `restore` undoes it."""

    def __init__(self, signals: Iterable[int]) -> None:
        self.signals = tuple(signals)
        self.fd = -1
        self._write_fd = -1
        self._saved_handlers: dict[int, Any] = {}
        self._saved_wakeup = -1
        self._mask: set[int | signal.Signals] = set()

    def install(self) -> None:
        """Must run in the main thread."""
        self.fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._saved_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in self.signals:
            self._saved_handlers[signum] = signal.signal(signum, _record)
        # A parent re-executed in place starts with them blocked (`_handover`):
        # what came meanwhile is pending and is recorded now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)

    def restore(self) -> None:
        """Puts back the handlers and wakeup fd found by `install`, closes the pipe."""
        for signum, handler in self._saved_handlers.items():
            # None means a handler not installed from Python; the default is the best guess.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        signal.set_wakeup_fd(self._saved_wakeup)
        os.close(self.fd)
        os.close(self._write_fd)

    def hold(self) -> bytes:
        """Blocks the signals and returns those recorded but not yet read: after
        it, nothing more is recorded until `release`."""
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
        return self.received()

    def carry(self, signals: Iterable[int]) -> None:
        """While held: makes ``signals`` pending again, so that they reach the
        image an ``exec`` starts (the pipe does not survive it)."""
        for signum in set(signals):
            os.kill(os.getpid(), signum)

    def release(self) -> None:
        """Undoes `hold`; signals pending meanwhile are recorded now."""
        signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)

    def received(self) -> bytes:
        """The numbers of the signals received since the last call, in order."""
        received = b""
        while True:
            try:
                chunk = os.read(self.fd, 512)
            except BlockingIOError:
                return received
            if not chunk:
                return received
            received += chunk
