"""Helpers for tests that run real processes: scenario programs in fresh
interpreters, read line by line while they run; /proc; signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from signal import SIGTERM

from tornado_prefork import testing

ROOT = Path(__file__).resolve().parent.parent

# The same /proc readers the package offers users' tests.
alive = testing.alive
every_child = testing.children
stat = testing._stat

# A server's workers: its children but the broadcast hub.
children_of = testing.workers
# Every broadcast hub running (by the listening socket each holds).
hubs = testing._hubs


def scenario(name: str, *args: str) -> list[str]:
    """The argv that runs the scenario program ``tests/scenarios/<name>.py`` with ``args``."""
    return [sys.executable, "-m", f"tests.scenarios.{name}", *args]


def python(code: str) -> list[str]:
    """The argv that runs a few lines of ``code`` (dedented) in a fresh interpreter."""
    return [sys.executable, "-c", textwrap.dedent(code)]


def run(argv: list[str], timeout: float = 30, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Runs ``argv`` from the project's root to its end, bounded by ``timeout``."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kwargs)


def refusal(argv: list[str]) -> tuple[str, str]:
    """Runs a `tests.scenarios.refused` call: (exception type, message). Fails
    unless the refusal came before any fork (no child left)."""
    result = run(argv, timeout=20)
    assert result.returncode == 0, result.stderr
    kind, message, children = result.stdout.strip().split(" | ")
    assert children == "children: 0", result.stdout
    return kind, message


def state(pid: int) -> str | None:
    """The process state letter from /proc (R, S, Z, ...), or None if there is no such process."""
    fields = stat(pid)
    return None if fields is None else fields[0]


def zombies_of(parent: int) -> list[int]:
    """Children of ``parent`` that ended and were not reaped."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat(int(entry.name))
            if fields is not None and int(fields[1]) == parent and fields[0] == "Z":
                found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time ``pid`` has used so far."""
    fields = stat(pid)
    assert fields is not None, pid
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ids(pid: int, key: str) -> list[int]:
    """The numbers of a line of /proc/PID/status: ``Uid``, ``Gid``, ``Groups``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(key)


def listening_inodes(pid: int, port: int) -> set[str]:
    """Inodes of the TCP sockets listening on ``port`` that ``pid`` has open."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                listening.add(fields[9])
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(target[8:-1])
    return listening & held


def accept_queue(port: int) -> int:
    """Connections the kernel completed on ``port`` that no process accepted
    yet (a listening socket's receive queue in /proc/net/tcp)."""
    waiting = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                waiting += int(fields[4].split(":")[1], 16)
    return waiting


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120]).decode()
    except OSError:
        return "?"


def wait_dead(pids: list[int], timeout: float) -> list[int]:
    """Waits until none of ``pids`` is alive; returns those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def reap_zombies() -> None:
    """Reaps every finished child of this process (orphans re-parented here included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Scenario:
    """The command ``argv`` running in a fresh session, its output read line by
    line while it runs (by `tornado_prefork.testing`'s reader, as
    ``running_server`` reads a server's).

    With ``merge`` its stderr is read with its stdout into `lines`; otherwise
    it is collected apart into `stderr`. Used as a context manager: on exit
    the whole process group is killed, so a failing test leaves nothing behind.
    """

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        merge: bool = True,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            cwd=ROOT,
            env=None if env is None else {**os.environ, **env},
            start_new_session=True,
            pass_fds=pass_fds,
        )
        assert self.proc.stdout is not None
        self._out = testing._Lines(self.proc.stdout)
        self._err = None if self.proc.stderr is None else testing._Lines(self.proc.stderr)
        self.finished = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def lines(self) -> list[str]:
        """Every line of output so far."""
        return self._out.lines

    @property
    def output(self) -> str:
        """Every line of output so far, for assertions and their messages."""
        return self._out.text

    @property
    def stderr(self) -> str:
        """What it wrote to stderr so far (nothing with ``merge``)."""
        return "" if self._err is None else self._err.text

    def __enter__(self) -> Scenario:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish(timeout=10, kill=True)

    def matching(self, text: str, at_start: bool = False) -> list[str]:
        """The lines so far that contain ``text`` (that start with it, with ``at_start``)."""
        return [line for line in self.lines if _matcher(text, at_start)(line)]

    def wait_line(
        self, text: str, count: int = 1, timeout: float = 15, at_start: bool = False
    ) -> list[str]:
        """Waits until ``count`` lines contain ``text`` (start with it, with
        ``at_start``) and returns those lines; kills the scenario and fails
        with its output if they do not come within ``timeout``."""
        found = self._out.wait(_matcher(text, at_start), count, timeout)
        if len(found) < count:
            self.finish(timeout=5, kill=True)
            raise AssertionError(
                f"wanted {count} line(s) with {text!r}; got:\n{self.output}\nstderr:\n{self.stderr}"
            )
        return found

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def stop(self, signum: int = SIGTERM, timeout: float = 10, group: bool = False) -> None:
        """Sends ``signum`` (to the whole process group with ``group``, as a
        terminal's Ctrl-C does); fails unless the scenario then exits 0 within
        ``timeout`` and leaves none of its children alive."""
        children = every_child(self.pid)
        if group:
            os.killpg(self.pid, signum)
        else:
            self.signal(signum)
        code = self.finish(timeout)
        assert code == 0, f"exit status {code}:\n{self.output}\nstderr:\n{self.stderr}"
        left = wait_dead(children, timeout=1)
        assert left == [], f"left alive: {left}\n{self.output}"

    def finish(self, timeout: float, kill: bool = False) -> int:
        """Waits for the process to end (killing its group if ``kill`` or at the
        timeout), reads the rest of its output and returns its exit code."""
        if self.finished:
            return self.proc.returncode
        if kill:
            killpg(self.proc.pid)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            killpg(self.proc.pid)
            self.proc.wait()
        # Workers orphaned by a killed parent may hold the pipes open a moment longer.
        for lines in (self._out, self._err):
            if lines is not None:
                lines.close(timeout=5)
        self.finished = True
        return self.proc.returncode


def _matcher(text: str, at_start: bool) -> Callable[[str], bool]:
    if at_start:
        return lambda line: line.startswith(text)
    return lambda line: text in line
