"""serve() listening modes and pass-through options, and workers dying with their parent."""

from __future__ import annotations

import collections
import http.client
import json
import os
import signal
import socket
import ssl
import stat
import sys
from pathlib import Path

import pytest

from tests import procs, serving

HERE = Path(__file__).resolve().parent


def test_reuse_port_workers_bind_their_own_sockets() -> None:
    with serving.start(kwargs="reuse_port=True") as s:
        base = serving.url(s)
        port = int(base.rsplit(":", 1)[1])
        assert port != 0
        shares = collections.Counter(serving.burst(base, 64))
        assert len(shares) == 2, shares
        # Each worker listens on a socket of its own, the parent on none.
        assert _listening_inodes(s.pid, port) == set()
        for pid in shares:
            assert len(_listening_inodes(pid, port)) == 1
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0


def _listening_inodes(pid: int, port: int) -> set[str]:
    """Inodes of the TCP sockets listening on ``port`` that ``pid`` has open."""
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
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


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def test_unix_socket_with_its_mode_removed_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    kwargs = f"unix_socket={str(path)!r}, unix_socket_mode=0o660"
    with serving.start(kwargs=kwargs) as s:
        assert serving.url(s) == f"unix:{path}"
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        conn = UnixHTTPConnection(str(path))
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["ppid"] == s.pid
        conn.close()
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0
    assert not path.exists()


def test_tls_from_the_command_line() -> None:
    argv = [
        str(Path(sys.executable).parent / "tornado-prefork"),
        "tests.webapp:app",
        "--processes=2",
        "--port=0",
        f"--certfile={HERE / 'test.crt'}",
        f"--keyfile={HERE / 'test.key'}",
    ]
    with procs.Scenario(argv=argv, merge=True) as s:
        base = serving.url(s)
        assert base.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(HERE / "test.crt"))
        conn = http.client.HTTPSConnection(
            "127.0.0.1", int(base.rsplit(":", 1)[1]), context=context, timeout=10
        )
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["protocol"] == "https"
        conn.close()
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0


@pytest.mark.parametrize("xheaders", [True, False])
def test_httpserver_options_pass_through(xheaders: bool) -> None:
    with serving.start(kwargs=f"xheaders={xheaders}, max_body_size=100") as s:
        base = serving.url(s)
        conn = serving.connect(base)
        conn.request("GET", "/", headers={"X-Real-Ip": "10.1.2.3"})
        body = json.loads(conn.getresponse().read())
        assert body["remote_ip"] == ("10.1.2.3" if xheaders else "127.0.0.1")
        conn.close()
        conn = serving.connect(base)
        conn.request("POST", "/", body=b"x" * 50)
        assert json.loads(conn.getresponse().read())["length"] == 50
        conn.close()
        conn = serving.connect(base)
        conn.request("POST", "/", body=b"x" * 1000)
        assert conn.getresponse().status == 400
        conn.close()
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0


def test_workers_die_with_their_parent_and_free_the_port() -> None:
    with serving.start(n=2) as s:
        base = serving.url(s)
        port = int(base.rsplit(":", 1)[1])
        workers = set(serving.burst(base, 16))
        assert len(workers) == 2
        s.signal(signal.SIGKILL)
        assert procs.wait_dead(list(workers), timeout=1.0) == []
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
