"""The check of new code before a reload in place: the server's own command,
run once more in a child, up to the moment it would serve.

A reload in place re-executes the parent (`tornado_prefork._supervisor.handover`); new
code that cannot load must be found before that, and by the same steps the
new image will take: the command line or script is parsed, logging is
configured, the application's module imported and, with ``preload``, its
factory called. So the check is that command, run with ``TORNADO_PREFORK_CHECK``
set: `tornado_prefork.serve` in it does everything it does before binding a
socket, then reports success (`passed`) and ends instead of serving.

The check is a child of the supervisor's loop, never a wait inside it: the
loop reads its output, reaps it and acts on its verdict as an event, and a
stop or a newer SIGHUP abandons it (SIGKILL). It dies with the parent.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
from typing import NoReturn

from tornado_prefork._supervisor import children as _children
from tornado_prefork._supervisor import handover as _handover
from tornado_prefork._supervisor import spawn as _spawn
from tornado_prefork._supervisor.hooks import NewCodeCheck
from tornado_prefork._supervisor.record import SYSTEM, System, describe

ENV = "TORNADO_PREFORK_CHECK"
_PASSED = b"passed"
# What is kept of the check's output, and shown of it when it fails.
_KEEP = 64 * 1024
_TAIL = 12
# prometheus_client's multiprocess directory of the live server: a check that
# wrote its values there would add files of its own.
_NOT_INHERITED = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir", _handover.ENV)


class ChildCheck(NewCodeCheck):
    """``argv`` run in a child with ``TORNADO_PREFORK_CHECK`` set; it passes when
    it reports `passed` within ``timeout`` seconds.

    Raises `OSError` when the child cannot be created (no process slot, no
    descriptor left), with nothing left open.
    """

    def __init__(self, argv: list[str], timeout: float, system: System = SYSTEM) -> None:
        self.argv = argv
        self.timeout = timeout
        self.deadline = system.clock() + timeout
        self._system = system
        self._output = b""
        self._passed = False
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            result_r, result_w = os.pipe2(os.O_CLOEXEC)
        except OSError:
            os.close(out_r)
            os.close(out_w)
            raise
        try:
            self.pid = _start(argv, env, out_w, result_w)
        except OSError:
            for fd in (out_r, result_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(result_w)
        os.set_blocking(out_r, False)
        os.set_blocking(result_r, False)
        self.fd: int | None = out_r
        self._result = result_r

    def read(self) -> None:
        """Reads the check's output and its report."""
        while self.fd is not None:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not data:
                # At EOF a descriptor is always readable: stop watching it.
                os.close(self.fd)
                self.fd = None
                break
            self._output = (self._output + data)[-_KEEP:]
        if self._result >= 0:
            try:
                self._passed = self._passed or _PASSED in os.read(self._result, 64)
            except BlockingIOError:
                pass

    def verdict(self, status: int) -> str | None:
        """None if the check reported success and exited 0; else the end of its output."""
        self.read()
        self._close()
        if self._passed and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return None
        lines = self._output.decode("utf-8", "replace").strip().splitlines()[-_TAIL:]
        return f"the new code failed its check ({describe(status)}):\n" + "\n".join(lines)

    def cancel(self) -> None:
        """SIGKILL; the supervisor reaps it."""
        self._system.kill(self.pid, signal.SIGKILL)
        self._close()

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self._result >= 0:
            os.close(self._result)
            self._result = -1


def _start(argv: list[str], env: dict[str, str], out: int, result: int) -> int:
    parent = os.getpid()
    pid, _, mask = _spawn.fork(with_channel=False)
    if pid:
        return pid
    try:
        # Between fork and exec the parent's handlers are still in place: a
        # signal now must not be recorded in the parent's wakeup pipe.
        signal.set_wakeup_fd(-1)
        for signum in _spawn.HANDLED:
            signal.signal(signum, signal.SIG_DFL)
        # A check whose import hangs must not outlive the server.
        _children.die_with_parent(parent, signal.SIGKILL)
        # Above the standard descriptors, which a daemon's parent may have closed.
        out = fcntl.fcntl(out, fcntl.F_DUPFD_CLOEXEC, 3)
        result = fcntl.fcntl(result, fcntl.F_DUPFD, 3)
        env[ENV] = str(result)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        _spawn.unblock(mask)
        os.execve(argv[0], argv, env)
    except OSError as e:
        # A virtualenv replaced by the deploy: the interpreter's path is gone.
        os.write(1, f"cannot run {argv[0]}: {e.strerror}\n".encode())
    finally:
        os._exit(127)


def start(timeout: float) -> ChildCheck:
    """The check of this server's own command (`tornado_prefork._supervisor.handover.command`)."""
    return ChildCheck(_handover.command(), timeout)


def checking() -> bool:
    """In the child of a check: True (`tornado_prefork.serve` then calls `passed`
    instead of serving)."""
    return ENV in os.environ


def failed(error: str) -> NoReturn:
    """In the child of a check: ``error`` as the last words of its output, and
    the end of the process with status 1."""
    sys.stdout.flush()
    print(error.rstrip(), file=sys.stderr, flush=True)
    os._exit(1)


def passed() -> NoReturn:
    """In the child of a check: reports that everything before serving worked,
    and ends the process at once (no ``atexit``, nothing of the application's
    after its ``serve()`` call)."""
    fd = int(os.environ[ENV])
    os.write(fd, _PASSED)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
