"""The metrics directory on real processes: full, removed, and with workers
replaced all the time; and the files that every process writes."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import procs, serving

REQUESTS = "tornado_prefork_requests_total"
READY = "tornado_prefork_workers_ready"
CANNOT_WRITE = "cannot write metrics to"


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` of the test's own, unmounted at the end."""
    with tempfile.TemporaryDirectory() as where:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where],
            capture_output=True,
            text=True,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        try:
            yield Path(where)
        finally:
            subprocess.run(["umount", "--lazy", where], check=True)


def fill(directory: Path, leave: int = 0) -> None:
    """Writes a file until the filesystem has no more than ``leave`` bytes left."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, bytes(size))
        os.ftruncate(fd, os.fstat(fd).st_size - leave)
    finally:
        os.close(fd)


def metrics_of(s: procs.Scenario) -> str:
    line = s.wait_line("Metrics on ")[0]
    match = re.search(r"Metrics on (\S+)/metrics", line)
    assert match is not None, line
    return match.group(1)


def the_directory(tmp: Path) -> Path:
    found = list(tmp.glob("tornado-prefork-metrics-*"))
    assert len(found) == 1, found
    return found[0]


Samples = dict[str, float]


def scrape(base: str) -> Samples:
    """``/metrics`` (which must answer 200): the sum of each sample name's values (0 if none)."""
    conn = serving.connect(base)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
    finally:
        conn.close()
    assert response.status == 200, text
    sums: Samples = collections.defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] += sample.value
    return sums


def wait_for(base: str, done: Callable[[Samples], bool], timeout: float = 15) -> Samples:
    """Scrapes until ``done`` says so; the last scrape at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(base)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def answering(base: str, requests: int) -> set[int]:
    """Sends ``requests`` requests one after the other; the workers that answered."""
    pids = set()
    for _ in range(requests):
        status, body = serving.get(base)
        assert status == 200
        pids.add(body["pid"])
    return pids


def workers_of(s: procs.Scenario, base: str) -> list[int]:
    """The children of the server that hold its listening socket."""
    port = serving.port_of(base)
    return [pid for pid in procs.children_of(s.pid) if procs.listening_inodes(pid, port)]


def test_on_a_full_filesystem_the_workers_serve_without_metrics() -> None:
    with small_tmpfs("1m") as tmpfs:
        # All but full: a page left, less than any file of values takes.
        fill(tmpfs, leave=4096)
        with serving.running(metrics_port=0, env={"TMPDIR": str(tmpfs)}) as s:
            base, metrics = serving.url(s), metrics_of(s)
            directory = the_directory(tmpfs)
            old = workers_of(s, base)
            assert len(old) == 2
            # The parent's warning, and each worker's.
            s.wait_line(CANNOT_WRITE, count=3)
            for pid in old:
                os.kill(pid, signal.SIGKILL)
            warnings = s.wait_line(CANNOT_WRITE, count=5)
            assert wait_for(metrics, lambda m: m[READY] == 2)[READY] == 2
            # The two that replaced them, whether or not both answer among 20
            # requests on a loaded machine.
            new = set(workers_of(s, base))
            assert len(new) == 2 and not new & set(old)
            answered = answering(base, 20)
            assert answered and answered <= new
            # The endpoint says what it cannot count: the parent and two workers.
            samples = scrape(metrics)
            assert samples["tornado_prefork_metrics_uncounted_processes"] == 3
            for line in warnings:
                assert f"{CANNOT_WRITE} {directory}: No space left on device; pid " in line, line
            pids = {int(line.rsplit("pid ", 1)[1].split()[0]) for line in warnings}
            assert pids == {s.pid, *old, *new}, "one warning per process"
            assert not s.matching("signal 7"), s.output


def test_a_removed_directory_is_made_again_and_nothing_is_lost(tmp_path: Path) -> None:
    with serving.running(metrics_port=0, env={"TMPDIR": str(tmp_path)}) as s:
        base, metrics = serving.url(s), metrics_of(s)
        directory = the_directory(tmp_path)
        answering(base, 20)
        assert wait_for(metrics, lambda m: m[REQUESTS] == 20)[REQUESTS] == 20
        first, second = workers_of(s, base)
        os.kill(first, signal.SIGKILL)
        s.wait_line("killed by signal 9")
        # What it counted is in the files of ended workers, and a scrape read them.
        deadline = time.monotonic() + 10
        while not (directory / "counter_ended.db").exists():
            assert time.monotonic() < deadline, sorted(os.listdir(directory))
            time.sleep(0.02)
        assert wait_for(metrics, lambda m: m[READY] == 2)[REQUESTS] == 20
        shutil.rmtree(directory)
        # The endpoint makes it again and puts back the ended workers' files;
        # the workers write theirs again.
        assert wait_for(metrics, lambda m: m[REQUESTS] == 20)[REQUESTS] == 20
        assert directory.is_dir()
        os.kill(second, signal.SIGKILL)
        s.wait_line("killed by signal 9", count=2)
        assert wait_for(metrics, lambda m: m[READY] == 2)[READY] == 2
        assert not answering(base, 30) & {first, second}
        final = wait_for(metrics, lambda m: m[REQUESTS] == 50)
        assert final[REQUESTS] == 50
        # The parent wrote its file again before counting the second exit.
        assert final["tornado_prefork_worker_exits_total"] == 2
        assert final["tornado_prefork_metrics_unreadable_files"] == 0
        assert s.matching("was removed; made it again")
        assert "Traceback" not in s.output


def test_replacing_workers_all_the_time_keeps_the_directory_small(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    with serving.running(metrics_port=0, max_requests=1, env=env) as s:
        base, metrics = serving.url(s), metrics_of(s)
        directory = the_directory(tmp_path)
        totals = []
        with serving.Load(base) as one, serving.Load(base) as two:
            # Until more than 20 workers have served, one request each.
            deadline = time.monotonic() + 30
            while len(set(one.pids + two.pids)) <= 20:
                assert time.monotonic() < deadline, "workers were not replaced"
                totals.append(scrape(metrics)[REQUESTS])
                time.sleep(0.02)
        assert not one.failures and not two.failures, (one.failures + two.failures)[:3]
        sent = len(one.pids) + len(two.pids)
        assert len(set(one.pids + two.pids)) > 20, "workers were replaced"
        final = wait_for(metrics, lambda m: m[REQUESTS] == sent)
        assert final[REQUESTS] == sent
        assert all(a <= b for a, b in pairwise(totals)), totals
        # Every child but the endpoint: the workers, draining ones too.
        workers = len(procs.children_of(s.pid)) - 1
        files = os.listdir(directory)
        # Each live worker's three files, the parent's, those of the ended
        # workers, and a few whose fold waits for the parent's next event.
        assert len(files) <= 3 * workers + 1 + 2 + 3 * 2, sorted(files)


def test_value_files_keep_prometheus_clients_format_and_survive_a_full_filesystem() -> None:
    with small_tmpfs("512k") as tmpfs:
        result = procs.run(
            procs.scenario("metrics_value_file"), env={**os.environ, "TMPDIR": str(tmpfs)}
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "through True 1",
        "same bytes True 262144",
        "reopened (1499.5, 2999.0)",
        "in memory 1.0",
        "child 0",
        "kept 3.0",
    ]
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2, result.stderr
    assert all(CANNOT_WRITE in line and "No space left on device" in line for line in warnings)


def test_folding_the_ended_processes_changes_no_value() -> None:
    result = procs.run(procs.scenario("metrics_merge", "fold"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["first", "second", "folded"]
    assert lines[2].split()[2:] == ["ended"]


def test_a_fold_held_off_by_a_scrape_is_handed_over_by_a_reload_in_place() -> None:
    result = procs.run(procs.scenario("metrics_handover"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("waiting counter_"), lines
    assert lines[1:] == ["handed over True", "folded [] []", "counted 5.0"]
