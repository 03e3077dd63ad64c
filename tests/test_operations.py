"""systemd notification and socket activation, the pid file (real processes)."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from tests import procs, serving
from tests.serving import wait_line


def drain_output(s: procs.Scenario) -> None:
    while s.readline(0.05) is not None:
        pass


def test_notify_socket_hears_ready_only_once_every_worker_is(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(15)
        env = {"NOTIFY_SOCKET": path}
        with serving.start(app="webapp.slow_factory", n=2, env=env) as s:
            first = notify.recv(4096).decode()
            # Workers build the app in 0.5 s and say so before they report READY.
            drain_output(s)
            assert sum(line.startswith("app-built") for line in s.lines) == 2, s.lines
            assert first.splitlines() == ["READY=1", "STATUS=serving with 2 workers"]
            s.signal(signal.SIGHUP)
            assert notify.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
            assert notify.recv(4096).decode().startswith("READY=1\n")
            wait_line(s, "reload finished")
            s.signal(signal.SIGTERM)
            assert notify.recv(4096).decode() == "STOPPING=1"
            assert s.finish(timeout=10) == 0


def test_socket_activation_serves_the_passed_socket() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        fd = listener.fileno()
        # As systemd does after its fork: the socket as fd 3, LISTEN_PID = us.
        before = (
            f"os.dup2({fd}, 3); os.close({fd})\n"
            "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))"
        )
        with serving.start(n=2, port=1, before=before, pass_fds=(fd,)) as s:
            assert serving.url(s) == f"http://127.0.0.1:{port}"
            listener.close()
            status, body = serving.get(f"http://127.0.0.1:{port}")
            assert status == 200 and body["ppid"] == s.pid
            s.signal(signal.SIGTERM)
            assert s.finish(timeout=10) == 0


def test_pid_file_written_refused_while_live_removed_on_exit(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    pid_file.write_text("999999999\n")  # stale: no such process
    kwargs = f"pid_file={str(pid_file)!r}"
    with serving.start(n=1, kwargs=kwargs) as s:
        serving.url(s)
        assert pid_file.read_text() == f"{s.pid}\n"
        second = procs.run(
            serving.SERVE.format(app="webapp.app", n=1, kwargs=kwargs, port=0, before=""),
            timeout=20,
        )
        assert second.returncode != 0
        assert f"StartupError: pid file {pid_file} names pid {s.pid}, which is running" in (
            second.stdout + second.stderr
        )
        assert pid_file.read_text() == f"{s.pid}\n"
        s.signal(signal.SIGTERM)
        assert s.finish(timeout=10) == 0
    deadline = time.monotonic() + 2
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_file.exists()
