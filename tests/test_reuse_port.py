"""reuse_port: the parent holds the address, workers bind before dropping
privileges; a unix socket that cannot be given to the user leaves nothing."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

from tests import procs, serving

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="binding a port below 1024 needs root")


def free_low_port() -> int:
    """A port below 1024 nothing listens on now."""
    for port in range(900, 1000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port between 900 and 1000")


@root_only
def test_reuse_port_workers_run_as_another_user_on_a_low_port() -> None:
    port = free_low_port()
    settings = {"reuse_port": True, "user": "nobody", "group": "nogroup", "graceful_timeout": 5}
    with serving.running(port=port, **settings) as s:
        base = serving.url(s)
        assert base.endswith(f":{port}")
        for generation in (1, 2):
            workers = serving.live_workers(s, 2)
            for pid in workers:
                assert procs.ids(pid, "Uid") == [65534] * 4
                assert len(procs.listening_inodes(pid, port)) == 1
            # The parent holds the port without listening on it.
            assert procs.listening_inodes(s.pid, port) == set()
            answered = {serving.get(base)[1]["pid"] for _ in range(20)}
            assert answered <= set(workers) and answered
            if generation == 1:
                # Workers forked by a reload bind as root too, then drop.
                s.signal(signal.SIGHUP)
                s.wait_line("reload finished: 2 workers", timeout=15)
    assert "PermissionError" not in s.output


@root_only
def test_the_parent_holds_the_address_but_takes_no_connection() -> None:
    result = procs.run(procs.scenario("hold_address"), timeout=20)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        f"other user: {errno.EADDRINUSE}",
        "connect: refused",
        "worker accepts: 127.0.0.1 held: 0",
    ], result.stdout


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_a_unix_socket_that_cannot_be_chowned_leaves_nothing_behind(tmp_path: Path) -> None:
    # In a user namespace where only root is mapped, chown to nobody fails
    # (EINVAL) while this process is still root there.
    tmp_path.chmod(0o755)
    path = tmp_path / "app.sock"
    refused = procs.scenario("refused", "serve", "tests.webapp:app", f"unix_socket={str(path)!r}")
    argv = ["unshare", "--user", "--map-root-user", *refused, "user='nobody'"]
    probe = procs.run(["unshare", "--user", "--map-root-user", "true"], timeout=20)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not available here: {probe.stderr.strip()}")
    kind, message = procs.refusal(argv)
    assert kind == "StartupError"
    assert message == f"cannot give unix socket {path} to user nobody: Invalid argument"
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


@root_only
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_reloads_under_load_lose_no_request_when_the_kernel_migrates() -> None:
    # In a network namespace of its own, where tcp_migrate_req can be set
    # without touching the host.
    result = procs.run(["unshare", "--net", *procs.scenario("reuse_port_reloads", "10")], 100)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["code"] == 0
    # Without tcp_migrate_req a run like this one resets a connection or two.
    assert outcome["failures"] == []
    assert outcome["answered"] > 200
    assert outcome["warned"] == 0


def test_reuse_port_says_once_at_start_when_stopping_workers_can_lose_connections() -> None:
    with serving.running(reuse_port=True) as s:
        serving.url(s)
        s.signal(signal.SIGHUP)
        s.wait_line("reload finished: 2 workers")
    warned = s.matching("tcp_migrate_req")
    with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
        migrates = f.read().strip() != "0"
    assert len(warned) == (0 if migrates else 1), warned
    if warned:
        assert "WARNING reuse_port: connections waiting on a worker's socket" in warned[0]
        assert "sysctl -w net.ipv4.tcp_migrate_req=1" in warned[0]


def test_reuse_port_starts_where_an_earlier_server_left_time_wait() -> None:
    result = procs.run(procs.scenario("time_wait"), timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "served on 127.0.0.1"
