"""Logging never stops the server: a stderr nobody reads costs log lines,
counted and reported once it is read again, never requests or a stop.

The servers are the command line with its access log on, writing to a pipe
the test holds (for stderr and stdout both) and reads only when it says so.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests import procs
from tornado_prefork import logs, testing

# Tornado's access line for these requests is about 500 bytes: a few thousand
# of them are more than a pipe (64 KiB) and each worker's pending lines
# (logs.PENDING_LIMIT) hold.
PATH = "/?" + "x" * 400
REQUESTS = 2500

# A whole line of `logs.FORMAT` (no colour on a pipe), or the app's own
# line of each worker (``factory PID``, written apart from logging).
LINE = re.compile(
    r"\[[DIWEC] \d{6} \d\d:\d\d:\d\d (master|worker \d+) \d+ \w+:\d+\] \S|factory \d+$"
)
DROPPED = re.compile(r"worker \d+ \d+ .*\] ([\d,]+) log lines? dropped: stderr is not being read$")


@contextlib.contextmanager
def server_on_pipe(*args: str) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """The command line serving 2 workers with its access log on, its stdout and
    stderr the write end of a pipe that nobody reads until the test does:
    ``(process, port, read end)``. Killed with its process group at the end."""
    listener = socket.create_server(("127.0.0.1", 0))
    read, write = os.pipe()
    argv = ["tests.webapp:make_app", "--processes=2", "--access-log", *args]
    try:
        proc = subprocess.Popen(
            procs.scenario("activated", str(listener.fileno()), "--", *argv),
            stdin=subprocess.DEVNULL,
            stdout=write,
            stderr=write,
            pass_fds=(listener.fileno(),),
            cwd=procs.ROOT,
            start_new_session=True,
        )
    finally:
        os.close(write)
    port = listener.getsockname()[1]
    listener.close()
    try:
        yield proc, port, read
    finally:
        procs.killpg(proc.pid)
        proc.wait(timeout=10)
        os.close(read)


def ask(port: int, count: int, path: str = PATH) -> list[int]:
    """``count`` requests, each on a fresh connection (so both workers
    answer), each bounded by a timeout: their statuses."""
    statuses = []
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        finally:
            conn.close()
    return statuses


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM; fails unless the server exits 0 within ``timeout`` leaving no
    process behind."""
    children = procs.children_of(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=timeout) == 0
    assert procs.wait_dead(children, timeout=2) == []


def read_to_end(fd: int, timeout: float = 10) -> str:
    """What the pipe holds, once every process writing to it has ended."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while time.monotonic() < deadline:
        if poller.poll(100):
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks).decode()
            chunks.append(chunk)
    raise AssertionError("the pipe did not end: a process still holds it")


def torn(lines: list[str]) -> list[str]:
    return [line for line in lines if not LINE.match(line)]


def test_a_pipe_nobody_reads_blocks_no_request_and_no_stop() -> None:
    with server_on_pipe() as (proc, port, read):
        assert ask(port, REQUESTS) == [200] * REQUESTS
        stop(proc)
        lines = read_to_end(read).splitlines()
    # What fits in the pipe is there, in whole lines; the rest was dropped.
    assert 0 < len(lines) < REQUESTS
    assert torn(lines) == []
    assert lines[0].startswith("[I ") and " master " in lines[0]


def test_the_lines_dropped_are_counted_and_said_once_the_pipe_is_read() -> None:
    with server_on_pipe() as (proc, port, read):
        assert ask(port, REQUESTS) == [200] * REQUESTS
        # Now a reader: each worker writes what it kept, then one line for
        # what it dropped.
        out = testing._Lines(os.fdopen(os.dup(read), "rb"))
        try:
            # Every request is either logged or counted as dropped, once.
            until(lambda: accounted(out.lines) >= REQUESTS, out)
            assert accounted(out.lines) == REQUESTS, out.text[-3000:]
            assert ask(port, 3, "/?after") == [200] * 3
            out.wait(lambda line: "200 GET /?after" in line, count=3, timeout=10)
            stop(proc)
        finally:
            out.close(timeout=10)
    lines = out.lines
    assert torn(lines) == []
    notes = [line for line in lines if DROPPED.search(line)]
    assert notes and all(line.startswith("[W ") for line in notes), notes
    # Each note stands where its lines were: after what the pipe and the
    # worker kept, before the requests that came once the pipe was read.
    after = next(i for i, line in enumerate(lines) if "GET /?after" in line)
    assert max(lines.index(line) for line in notes) < after
    assert any("Stopped; the workers took" in line for line in lines)


def accounted(lines: list[str]) -> int:
    """The requests of `PATH` logged, plus the lines said dropped."""
    notes = [DROPPED.search(line) for line in lines]
    dropped = sum(int(note.group(1).replace(",", "")) for note in notes if note)
    return dropped + len([line for line in lines if "200 GET /?xxx" in line])


def until(condition: Callable[[], bool], out: testing._Lines, timeout: float = 15) -> None:
    """Waits until ``condition`` holds, for ``timeout`` at most."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, out.text[-3000:]
        time.sleep(0.02)


def test_a_reader_that_pauses_then_reads_as_it_comes_loses_and_tears_no_line() -> None:
    # A log shipper that stops for a moment, for about 140 KiB of lines: more
    # than the pipe holds (64 KiB), less than a worker keeps
    # (logs.PENDING_LIMIT), even if one worker answered every request.
    pause = 300
    with server_on_pipe() as (proc, port, read):
        assert ask(port, pause) == [200] * pause
        out = testing._Lines(os.fdopen(os.dup(read), "rb"))
        try:
            assert ask(port, 2000 - pause) == [200] * (2000 - pause)
            out.wait(lambda line: "200 GET /?xxx" in line, count=2000, timeout=15)
            stop(proc)
        finally:
            out.close(timeout=10)
    assert [line for line in out.lines if "dropped" in line] == []
    assert torn(out.lines) == []
    assert len([line for line in out.lines if "200 GET /?xxx" in line]) == 2000


# The handler itself, in this process, on pipes and sockets of its own.


@pytest.fixture(params=["own descriptor", "polled"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the handler avoids waiting on a pipe: a non-blocking descriptor of
    its own, or (where /proc refuses that) a poll before each write."""
    if request.param == "polled":

        def refused(fd: int) -> int:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(logs, "_reopen", refused)
    return str(request.param)


@contextlib.contextmanager
def logging_to(
    fd: int, name: str
) -> Iterator[tuple[logging.Logger, logs.NonBlockingStreamHandler]]:
    """A logger of its own writing ``%(message)s`` lines to ``fd`` through a
    `logs.NonBlockingStreamHandler`, closed at the end."""
    stream = open(fd, "w", closefd=False)  # noqa: SIM115
    handler = logs.NonBlockingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"tests.logging.{name}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    try:
        yield logger, handler
    finally:
        logger.handlers = []
        handler.close()
        stream.close()


@contextlib.contextmanager
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    try:
        yield read, write
    finally:
        os.close(read)
        os.close(write)


def drain(fd: int) -> bytes:
    data = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while poller.poll(0):
        data += os.read(fd, 65536)
    return data


def test_the_handler_keeps_what_fits_drops_the_rest_and_says_how_many(mode: str) -> None:
    total = 10_000
    with pipe() as (read, write), logging_to(write, mode.replace(" ", "_")) as (logger, handler):
        for i in range(total):
            logger.info("line %05d %s", i, "y" * 90)
        assert 0 < handler.pending <= logs.PENDING_LIMIT
        # The stream's own descriptor, shared with a shell, stays blocking.
        assert os.get_blocking(write)
        received = drain(read)
        while handler.pending:
            logger.info("after")
            received += drain(read)
    lines = received.decode().splitlines()
    notes = [line for line in lines if "dropped" in line]
    assert len(notes) == 1, notes
    match = re.fullmatch(r"([\d,]+) log lines dropped: fd \d+ is not being read", notes[0])
    assert match is not None, notes
    kept = [line for line in lines if line.startswith("line ")]
    # Lines in order, a gap where the dropped ones were, and nothing torn.
    numbers = [int(line.split()[1]) for line in kept]
    assert numbers == sorted(numbers) and numbers[0] == 0
    assert int(match.group(1).replace(",", "")) == total - len(kept)
    assert all(len(line.split()[2]) == 90 for line in kept)
    assert lines.index(notes[0]) < lines.index("after")


def test_a_record_longer_than_a_pipe_write_is_cut_between_lines(mode: str) -> None:
    text = "\n".join(f"frame {i:04d} " + "z" * 60 for i in range(200))
    with (
        pipe() as (read, write),
        logging_to(write, "long_" + mode.replace(" ", "_")) as (logger, _),
    ):
        logger.info("%s", text)
        assert drain(read).decode() == text + "\n"


def test_the_handler_sends_to_a_socket_without_waiting() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs, logging_to(ours.fileno(), "socket") as (logger, handler):
        for i in range(20_000):
            logger.info("line %05d %s", i, "y" * 90)
        assert handler.pending > 0
        theirs.setblocking(False)
        received = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                received += theirs.recv(1 << 20)
            except BlockingIOError:
                if not handler.pending and b"dropped" in received:
                    break
                logger.info("after")
    assert re.search(rb"\n[\d,]+ log lines dropped: fd \d+ is not being read\n", received)


def test_a_child_after_fork_does_not_write_its_parents_pending_lines() -> None:
    with pipe() as (_, write), logging_to(write, "fork") as (logger, handler):
        for i in range(2000):
            logger.info("parent %05d %s", i, "y" * 90)
        assert handler.pending > 0
        pid = os.fork()
        if pid == 0:
            os._exit(0 if handler.pending == 0 else 1)
        assert os.waitpid(pid, 0)[1] == 0


def test_a_closed_pipe_costs_lines_not_an_error(capfd: pytest.CaptureFixture[str]) -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        with logging_to(write, "closed") as (logger, handler):
            for i in range(100):
                logger.info("line %d", i)
            assert handler.pending == 0
    finally:
        os.close(write)
    # No "--- Logging error ---" with a traceback for each line.
    assert capfd.readouterr().err == ""


@pytest.mark.tornado_api
def test_enable_makes_tornados_stderr_handler_one_that_never_blocks() -> None:
    result = procs.run(
        procs.python(
            """
            import logging
            from tornado.options import parse_command_line
            from tornado_prefork import logs
            parse_command_line(["prog"])
            logs.enable("INFO")
            logs.enable("INFO")
            logs.access_log_to("-")
            handlers = logging.getLogger().handlers + logging.getLogger("tornado.access").handlers
            print(*(type(handler).__name__ for handler in handlers))
            logging.getLogger("tornado.general").info("hello")
            """
        )
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NonBlockingStreamHandler"] * 2
    assert re.fullmatch(r"\[I \d{6} [\d:]{8} master \d+ <string>:\d+\] hello\n", result.stderr)
