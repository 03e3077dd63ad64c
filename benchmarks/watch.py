"""What --reload's file watcher costs: CPU while idle and time to notice a save.

    python benchmarks/watch.py [--files 2000] [--seconds 10]

Builds a source tree of ``--files`` Python files in a temporary directory,
runs the watcher (`tornado_prefork._reload.watcher.changes`) in a child process with
each backend, polling and watchfiles, and reports its CPU time while nothing
changes and the delay from a save to the burst it reports. Prints a table;
nothing here is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from tornado_prefork._reload import watcher as _watcher


def build_tree(root: Path, files: int) -> Path:
    for i in range(files):
        package = root / "app" / f"pkg{i // 100}"
        package.mkdir(parents=True, exist_ok=True)
        (package / f"mod{i}.py").write_text(f"VALUE = {i}\n" * 20)
    return package / f"mod{files - 1}.py"


def watcher(root: str, backend: str, seconds: float, pipe: Connection) -> None:
    deadline = time.monotonic() + seconds + 10

    def watching() -> None:
        pipe.send(("watching", _cpu()))

    for _ in _watcher.changes(
        root, lambda: time.monotonic() > deadline, backend == "watchfiles", watching
    ):
        pipe.send(("burst", time.monotonic(), _cpu()))
        return


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(root: Path, last: Path, backend: str, seconds: float) -> tuple[float, float]:
    """CPU ms per idle second, and ms from a save to its burst."""
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=watcher, args=(str(root), backend, seconds, child)
    )
    process.start()
    _, cpu_start = parent.recv()
    time.sleep(seconds)
    saved = time.monotonic()
    last.write_text(last.read_text() + "# saved\n")
    _, noticed, cpu_end = parent.recv()
    process.join(timeout=30)
    # The burst's own CPU is in cpu_end too; the idle time dominates.
    return (cpu_end - cpu_start) * 1000 / seconds, (noticed - saved) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"{args.files} files, {args.seconds:.0f} s idle, {os.cpu_count()} CPUs")
    print("| backend | CPU while idle (ms per s) | save to reload signal (ms) |")
    print("| --- | --- | --- |")
    for backend in ("polling", "watchfiles"):
        with tempfile.TemporaryDirectory() as tmp:
            last = build_tree(Path(tmp), args.files)
            cpu, delay = measure(Path(tmp), last, backend, args.seconds)
        print(f"| {backend} | {cpu:.1f} | {delay:.0f} |")


if __name__ == "__main__":
    main()
