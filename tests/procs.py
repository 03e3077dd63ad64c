"""Helpers for tests that run real processes: fresh interpreters, /proc, signals."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from tornado_prefork import testing

ROOT = Path(__file__).resolve().parent.parent

# The same /proc readers the package offers users' tests.
alive = testing.alive
children_of = testing.children


def script(code: str) -> list[str]:
    """The argv that runs ``code`` (dedented) in a fresh interpreter."""
    return [sys.executable, "-c", textwrap.dedent(code)]


def run(code: str, timeout: float = 30, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a fresh interpreter to its end, bounded by ``timeout``."""
    return subprocess.run(
        script(code), capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kwargs
    )


def state(pid: int) -> str | None:
    """The process state letter from /proc (R, S, Z, ...), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def wait_dead(pids: list[int], timeout: float) -> list[int]:
    """Waits until none of ``pids`` is alive; returns those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120]).decode()
    except OSError:
        return "?"


def reap_zombies() -> None:
    """Reaps every finished child of this process (orphans re-parented here included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Scenario:
    """A fresh interpreter running ``code``, read line by line while it runs.

    Runs in its own session. A thread keeps reading its output, so a chatty
    process never blocks on a full pipe. Used as a context manager: on exit the
    whole process group is killed, so a failing test leaves nothing behind.
    """

    def __init__(
        self,
        code: str | None = None,
        env: dict[str, str] | None = None,
        argv: list[str] | None = None,
        merge: bool = False,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        """Runs ``code`` (or the command ``argv``); with ``merge`` its stderr is
        read line by line together with its stdout."""
        assert (code is None) != (argv is None)
        self.proc = subprocess.Popen(
            script(code) if code is not None else argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            cwd=ROOT,
            env=None if env is None else {**os.environ, **env},
            start_new_session=True,
            pass_fds=pass_fds,
        )
        self.lines: list[str] = []
        self.stderr = ""
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._eof = False
        self._done = False
        assert self.proc.stdout is not None
        self._readers = [threading.Thread(target=self._pump, daemon=True)]
        if self.proc.stderr is not None:
            self._err: list[bytes] = []
            self._readers.append(threading.Thread(target=self._pump_stderr, daemon=True))
        for reader in self._readers:
            reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._queue.put(raw.decode(errors="replace").rstrip("\n"))
        self._queue.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._err.append(raw)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __enter__(self) -> Scenario:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish(timeout=10, kill=True)

    def readline(self, timeout: float) -> str | None:
        """The next line of output, or None at EOF or when ``timeout`` passes."""
        if self._eof:
            return None
        try:
            line = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if line is None:
            self._eof = True
            return None
        self.lines.append(line)
        return line

    def wait_for_lines(self, prefix: str, count: int, timeout: float) -> list[str]:
        """Reads until ``count`` lines starting with ``prefix`` were seen; fails otherwise."""
        deadline = time.monotonic() + timeout
        while len(self.matching(prefix)) < count:
            left = deadline - time.monotonic()
            if left <= 0 or self.readline(left) is None:
                self.finish(timeout=5, kill=True)
                raise AssertionError(
                    f"wanted {count} lines starting {prefix!r}; got {self.lines}\n"
                    f"stderr:\n{self.stderr}"
                )
        return self.matching(prefix)

    def matching(self, prefix: str) -> list[str]:
        return [line for line in self.lines if line.startswith(prefix)]

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def finish(self, timeout: float, kill: bool = False) -> int:
        """Waits for the process to end (killing its group if ``kill`` or at the
        timeout), collects the rest of its output and returns its exit code."""
        if self._done:
            return self.proc.returncode
        if kill:
            _killpg(self.proc.pid)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _killpg(self.proc.pid)
            self.proc.wait()
        for reader in self._readers:
            # Workers orphaned by a killed parent may hold the pipe open a moment longer.
            reader.join(timeout=5)
        while self.readline(0.01) is not None:
            pass
        if self.proc.stderr is not None:
            self.stderr += b"".join(self._err).decode(errors="replace")
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        self._done = True
        return self.proc.returncode


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def zombies_of(parent: int) -> list[int]:
    """Children of ``parent`` that ended and were not reaped."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == parent and fields[0] == "Z":
                found.append(int(entry.name))
    return found


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))
