"""systemd notification and socket activation, the pid file (real processes)."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from tests import serving


def test_notify_socket_hears_ready_only_once_every_worker_is(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(15)
        env = {"NOTIFY_SOCKET": path}
        with serving.running("tests.webapp:slow_factory", env=env) as s:
            first = notify.recv(4096).decode()
            assert first.splitlines() == ["READY=1", "STATUS=serving with 2 workers"]
            # Workers build the app in 0.5 s and say so before they report READY,
            # which the parent waits for before it says it serves.
            serving.url(s)
            built = [i for i, line in enumerate(s.lines) if line.startswith("app-built")]
            assert len(built) == 2, s.lines
            assert max(built) < s.lines.index(s.matching("Serving on ")[0]), s.lines
            s.signal(signal.SIGHUP)
            assert notify.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
            assert notify.recv(4096).decode().startswith("READY=1\n")
            s.wait_line("reload finished")
            s.signal(signal.SIGTERM)
            assert notify.recv(4096).decode() == "STOPPING=1"
            assert s.finish(timeout=10) == 0


@pytest.mark.tornado_api
def test_socket_activation_serves_the_passed_socket() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        with serving.running(port=1, listen_fd=listener.fileno()) as s:
            assert serving.url(s) == f"http://127.0.0.1:{port}"
            listener.close()
            status, body = serving.get(f"http://127.0.0.1:{port}")
            assert status == 200 and body["ppid"] == s.pid


def test_pid_file_written_refused_while_live_removed_on_exit(tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    pid_file.write_text("999999999\n")  # stale: no such process
    with serving.running(processes=1, pid_file=str(pid_file)) as s:
        serving.url(s)
        assert pid_file.read_text() == f"{s.pid}\n"
        with serving.start("tests.webapp:app", 1, pid_file=str(pid_file)) as second:
            assert second.finish(timeout=20) != 0
        assert f"StartupError: pid file {pid_file} names pid {s.pid}, which is running" in (
            second.output
        )
        assert pid_file.read_text() == f"{s.pid}\n"
    deadline = time.monotonic() + 2
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_file.exists()
