"""A lifespan where the issue asks it to work besides serve(): under the
pytest helper `running_server`, and with --reload (development), where each
save replaces the workers, each exiting its lifespan on its own loop."""

from __future__ import annotations

import time
from pathlib import Path

from tests import serving
from tests.serving import MODULE
from tornado_prefork.testing import running_server

LIFESPAN_APP = """
import contextlib, os
from tornado.web import Application, RequestHandler

VERSION = {version!r}

class Version(RequestHandler):
    def get(self):
        self.write({{"version": VERSION, "pid": os.getpid()}})

@contextlib.asynccontextmanager
async def lifespan():
    # One write a line: the workers share the pipe.
    os.write(1, f"enter {{VERSION}} {{os.getpid()}}\\n".encode())
    yield Application([(r"/", Version)])
    os.write(1, f"exit {{VERSION}} {{os.getpid()}}\\n".encode())
"""


def write_app(directory: Path, version: str) -> None:
    (directory / "lifeapp.py").write_text(LIFESPAN_APP.format(version=version))


def test_running_server_enters_and_exits_each_workers_lifespan(tmp_path: Path) -> None:
    write_app(tmp_path, "v1")
    with running_server("lifeapp:lifespan", processes=2, app_dir=tmp_path) as server:
        assert serving.get(server.url, "/")[1]["version"] == "v1"
        entered = [line for line in server.output if line.startswith("enter v1 ")]
        assert sorted(int(line.split()[2]) for line in entered) == sorted(server.worker_pids)
    exited = [line for line in server.output if line.startswith("exit v1 ")]
    assert sorted(int(line.split()[2]) for line in exited) == sorted(server.worker_pids)


def test_reload_on_save_exits_the_old_workers_lifespans(tmp_path: Path) -> None:
    write_app(tmp_path, "v1")
    argv = [*MODULE, "lifeapp:lifespan", f"--app-dir={tmp_path}", "--reload"]
    argv += ["--port=0", "--processes=2", "--graceful-timeout=2"]
    with serving.running(argv=argv) as s:
        base = serving.url(s)
        s.wait_line("enter v1 ", count=2)
        s.wait_line("reloading on changes under", timeout=10)
        write_app(tmp_path, "v2")
        s.wait_line("enter v2 ", count=2, timeout=20)
        s.wait_line("exit v1 ", count=2, timeout=20)
        deadline = time.monotonic() + 10
        while serving.get(base, "/")[1]["version"] != "v2":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        s.stop(timeout=15)
    assert s.output.count("exit v2 ") == 2, s.output
