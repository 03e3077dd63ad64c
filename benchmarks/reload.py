"""How long a SIGHUP reload of many workers takes, from the signal until the
parent logs "reload finished".

``tornado-prefork hello:make_app --processes 32``, idle, both ways a reload
runs: ``--no-preload`` (rolling: new workers import the code on disk) and the
default (the module is in the parent, which re-executes itself in place and
then replaces the workers). Neither the server nor the client is pinned.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from harness import ROOT, free_port

MODES = {
    "rolling": ("rolling reload (`--no-preload`)", ["--no-preload"]),
    "in-place": ("reload in place (the default: the parent re-executes itself)", []),
}


class _Log:
    """The server's log lines as they come, each with the time it was read."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put((time.monotonic(), line))

    def wait_for(self, text: str, timeout: float) -> float:
        """The time the first line with ``text`` arrived, from now on."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                when, line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no {text!r} in the server's log") from None
            if text in line:
                return when


@contextlib.contextmanager
def _running(workers: int, flags: list[str]) -> Iterator[tuple[subprocess.Popen[str], _Log]]:
    argv = [sys.executable, "-m", "tornado_prefork", "hello:make_app", "--no-access-log"]
    argv += ["--processes", str(workers), "--port", str(free_port()), "--address", "127.0.0.1"]
    proc = subprocess.Popen(
        [*argv, *flags],
        cwd=ROOT / "benchmarks",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        log = _Log(proc)
        log.wait_for("Serving on", 120)
        yield proc, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def reload_times(workers: int, times: int) -> dict[str, list[float]]:
    """Seconds from SIGHUP until "reload finished", ``times`` reloads in each mode."""
    results: dict[str, list[float]] = {}
    for mode, (_, flags) in MODES.items():
        with _running(workers, flags) as (proc, log):
            for _ in range(times):
                # Workers older than min_uptime: a reload, not a crash loop.
                time.sleep(1.5)
                sent = time.monotonic()
                proc.send_signal(signal.SIGHUP)
                results.setdefault(mode, []).append(log.wait_for("reload finished", 120) - sent)
                print(f"  {mode}: {results[mode][-1]:.2f} s", flush=True)
    return results
