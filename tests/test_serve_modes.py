"""serve() listening modes and pass-through options."""

from __future__ import annotations

import collections
import http.client
import json
import ssl
import stat
from pathlib import Path

import pytest

from tests import procs, serving

pytestmark = pytest.mark.tornado_api


def test_reuse_port_workers_bind_their_own_sockets() -> None:
    with serving.running(reuse_port=True) as s:
        base = serving.url(s)
        port = serving.port_of(base)
        assert port != 0
        shares = collections.Counter(serving.burst(base, 64))
        assert len(shares) == 2, shares
        # Each worker listens on a socket of its own, the parent on none.
        assert procs.listening_inodes(s.pid, port) == set()
        for pid in shares:
            assert len(procs.listening_inodes(pid, port)) == 1


def test_unix_socket_with_its_mode_removed_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with serving.running(unix_socket=str(path), unix_socket_mode=0o660) as s:
        assert serving.url(s) == f"unix:{path}"
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        status, body = serving.get(f"unix:{path}")
        assert status == 200
        assert body["ppid"] == s.pid
    assert not path.exists()


def test_tls_from_the_command_line() -> None:
    argv = [serving.COMMAND, "tests.webapp:app", "--processes=2", "--port=0"]
    argv += [f"--certfile={serving.HERE / 'test.crt'}", f"--keyfile={serving.HERE / 'test.key'}"]
    with serving.running(argv=argv) as s:
        base = serving.url(s)
        assert base.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(serving.HERE / "test.crt"))
        conn = http.client.HTTPSConnection(
            "127.0.0.1", serving.port_of(base), context=context, timeout=10
        )
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["protocol"] == "https"
        conn.close()


@pytest.mark.parametrize("xheaders", [True, False])
def test_httpserver_options_pass_through(xheaders: bool) -> None:
    with serving.running(xheaders=xheaders, max_body_size=100) as s:
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
