"""nginx in front of two tornado-prefork servers, each reloaded in turn under load.

Needs the nginx binary (Debian package ``nginx``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
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
    upstream app {{
        server 127.0.0.1:{a} max_fails=0;
        server 127.0.0.1:{b} max_fails=0;
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Real-IP $remote_addr;
            proxy_next_upstream error timeout http_502;
        }}
    }}
}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install -y nginx)")
def test_reloads_behind_nginx_fail_no_request(tmp_path: Path) -> None:
    assert NGINX is not None
    with serving.running(xheaders=True) as a, serving.running() as b:
        port_a = serving.port_of(serving.url(a))
        port_b = serving.port_of(serving.url(b))
        port = free_port()
        (tmp_path / "nginx.conf").write_text(
            CONFIG.format(tmp=tmp_path, a=port_a, b=port_b, port=port)
        )
        nginx = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            front = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 10
            while True:
                try:
                    if serving.get(front)[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
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
        finally:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                procs.killpg(nginx.pid)
                nginx.wait()
            if nginx.stderr is not None:
                nginx.stderr.close()
