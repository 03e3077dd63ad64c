"""nginx in front of two tornado-prefork servers, each reloaded in turn under load.

Needs the nginx binary (Debian package ``nginx``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import procs, serving

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

CONFIG = """
daemon off;
master_process on;
worker_processes 1;
user root root;
pid {tmp}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream app {{
        server 127.0.0.1:{a} max_fails=0;
        server 127.0.0.1:{b} max_fails=0;
        {keepalive}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
{location}
        }}
    }}
}}
"""
# Keep-alive to the servers, for plain HTTP.
HTTP = """
            proxy_set_header Connection "";
            proxy_set_header X-Real-IP $remote_addr;
            proxy_next_upstream error timeout http_502;"""
# WebSockets passed through (and plain HTTP, a connection each).
WEBSOCKETS = """
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 60s;"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def nginx_in_front(tmp: Path, a: int, b: int, location: str = HTTP) -> Iterator[str]:
    """nginx on a free port taking turns between the servers on ports ``a``
    and ``b``, once it answers GET /; its base URL. Stopped at the end."""
    assert NGINX is not None
    port = free_port()
    keepalive = "keepalive 16;" if location == HTTP else ""
    (tmp / "nginx.conf").write_text(
        CONFIG.format(tmp=tmp, a=a, b=b, port=port, keepalive=keepalive, location=location)
    )
    nginx = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        front = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(front + "/", timeout=5) as page:
                    if page.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        yield front
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(timeout=10)
        except subprocess.TimeoutExpired:
            procs.killpg(nginx.pid)
            nginx.wait()
        if nginx.stderr is not None:
            nginx.stderr.close()


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install -y nginx)")
def test_reloads_behind_nginx_fail_no_request(tmp_path: Path) -> None:
    assert NGINX is not None
    with serving.running(xheaders=True) as a, serving.running() as b:
        port_a = serving.port_of(serving.url(a))
        port_b = serving.port_of(serving.url(b))
        with nginx_in_front(tmp_path, port_a, port_b) as front:
            with serving.Load(front) as load:
                for server in (a, b):
                    time.sleep(0.3)
                    server.signal(signal.SIGHUP)
                    server.wait_line("reload finished: 2 workers")
                    server.wait_line("retired (status 0)", count=2)
                time.sleep(0.3)
            assert load.failures == []
            # Both servers answered through nginx, and the X-Real-IP from nginx
            # (a trusted proxy on 127.0.0.1) reached server a.
            pids = set(load.pids)
            assert pids & set(procs.children_of(a.pid)) and pids & set(procs.children_of(b.pid))
            assert len(load.pids) > 50
