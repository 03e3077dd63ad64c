"""reuse_port: the parent holds the address, workers bind before dropping
privileges; a unix socket that cannot be given to the user leaves nothing."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests import procs, serving
from tests.test_production import ids
from tests.test_serve_errors import ATTEMPT
from tests.test_serve_modes import _listening_inodes

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
    kwargs = "reuse_port=True, user='nobody', group='nogroup', graceful_timeout=5"
    with serving.start(n=2, port=port, kwargs=kwargs) as s:
        base = serving.url(s)
        assert base.endswith(f":{port}")
        for generation in (1, 2):
            workers = serving.live_workers(s, 2)
            for pid in workers:
                assert ids(pid, "Uid") == [65534] * 4
                assert len(_listening_inodes(pid, port)) == 1
            # The parent holds the port without listening on it.
            assert _listening_inodes(s.pid, port) == set()
            answered = {serving.get(base)[1]["pid"] for _ in range(20)}
            assert answered <= set(workers) and answered
            if generation == 1:
                # Workers forked by a reload bind as root too, then drop.
                s.signal(signal.SIGHUP)
                serving.wait_line(s, "reload finished: 2 workers", timeout=15)
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0, "\n".join(s.lines)
    assert "PermissionError" not in "\n".join(s.lines)


HOLD = """
import os, socket, sys
from tornado_prefork import _sockets

listeners = _sockets.bind(
    0, "127.0.0.1", unix_socket=None, unix_socket_mode=0o600, reuse_port=True,
    backlog=16, family=socket.AF_UNSPEC, scheme="http",
)
port = listeners.sockets[0].getsockname()[1]

def attempt(as_user):
    # In a child: another user tries to share the address, as a server would.
    pid = os.fork()
    if pid == 0:
        if as_user:
            os.setgid(65534)
            os.setuid(65534)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as e:
            os._exit(e.errno)
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

print("other user:", attempt(as_user=True))
try:
    socket.create_connection(("127.0.0.1", port), timeout=2)
    print("connect: accepted")
except ConnectionRefusedError:
    print("connect: refused")
worker = listeners.for_child()
client = socket.create_connection(("127.0.0.1", port), timeout=2)
print("worker accepts:", worker[0].accept()[1][0], "held:", len(listeners.sockets))
"""


@root_only
def test_the_parent_holds_the_address_but_takes_no_connection() -> None:
    result = procs.run(HOLD, timeout=20)
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
    code = ATTEMPT.format(
        path=str(tmp_path), args=f"webapp.app, unix_socket={str(path)!r}, user='nobody'", before=""
    )
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", *procs.script(code)],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=procs.ROOT,
    )
    if "unshare failed" in result.stderr:
        pytest.skip(f"user namespaces are not available here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    kind, message, children = result.stdout.strip().split(" | ")
    assert (kind, children) == ("StartupError", "children: 0"), result.stdout
    assert message == f"cannot give unix socket {path} to user nobody: Invalid argument"
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


# Runs in a network namespace of its own (unshare -n) where tcp_migrate_req
# can be set without touching the host: a reuse_port server reloaded under
# load by clients that each open a new connection per request.
RELOADS_UNDER_LOAD = """
import json, signal, subprocess, sys, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv4/tcp_migrate_req", "w") as f:
    f.write("1")
from tests import serving
with serving.start(n=2, kwargs="reuse_port=True, graceful_timeout=5") as s:
    base = serving.url(s)
    loads = [serving.Load(base, limit=60) for _ in range(4)]
    for load in loads:
        load.__enter__()
    time.sleep(0.3)
    for done in range(1, {reloads} + 1):
        s.signal(signal.SIGHUP)
        serving.wait_line(s, "reload finished: 2 workers", timeout=20, count=done)
        time.sleep(0.1)
    for load in loads:
        load.stop()
    s.signal(signal.SIGTERM)
    code = s.finish(timeout=10)
print(json.dumps({{
    "code": code,
    "answered": sum(len(load.pids) for load in loads),
    "failures": [f for load in loads for f in load.failures],
    "warned": sum("tcp_migrate_req" in line for line in s.lines),
}}))
"""


@root_only
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_reloads_under_load_lose_no_request_when_the_kernel_migrates() -> None:
    result = subprocess.run(
        ["unshare", "--net", *procs.script(RELOADS_UNDER_LOAD.format(reloads=10))],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=procs.ROOT,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["code"] == 0
    # Without tcp_migrate_req a run like this one resets a connection or two.
    assert outcome["failures"] == []
    assert outcome["answered"] > 200
    assert outcome["warned"] == 0


def test_reuse_port_says_once_at_start_when_stopping_workers_can_lose_connections() -> None:
    with serving.start(n=2, kwargs="reuse_port=True") as s:
        serving.url(s)
        s.signal(signal.SIGHUP)
        serving.wait_line(s, "reload finished: 2 workers")
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0
    warned = [line for line in s.lines if "tcp_migrate_req" in line]
    with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
        migrates = f.read().strip() != "0"
    assert len(warned) == (0 if migrates else 1), warned
    if warned:
        assert "WARNING reuse_port: connections waiting on a worker's socket" in warned[0]
        assert "sysctl -w net.ipv4.tcp_migrate_req=1" in warned[0]


TIME_WAIT_LEFT = """
import socket
from tornado_prefork import _sockets

# An earlier server without SO_REUSEPORT closed a connection first: its side
# of it stays in TIME_WAIT on the port for a minute.
old = socket.socket()
old.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
old.bind(("127.0.0.1", 0))
old.listen()
port = old.getsockname()[1]
client = socket.create_connection(("127.0.0.1", port))
conn, _ = old.accept()
conn.close()
client.recv(1)
client.close()
old.close()
listeners = _sockets.bind(
    port, "127.0.0.1", unix_socket=None, unix_socket_mode=0o600, reuse_port=True,
    backlog=16, family=socket.AF_UNSPEC, scheme="http",
)
(worker,) = listeners.for_child()
socket.create_connection(("127.0.0.1", port), timeout=2)
print("served on", worker.accept()[1][0])
"""


def test_reuse_port_starts_where_an_earlier_server_left_time_wait() -> None:
    result = procs.run(TIME_WAIT_LEFT, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "served on 127.0.0.1"
