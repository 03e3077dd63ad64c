"""Tornado's own multi-process scenario, with only the import changed."""

from __future__ import annotations

from tests import procs

SCENARIO = """
import logging, os, signal, sys
logging.basicConfig(level=logging.INFO, format="%(process)d %(levelname)s %(message)s")
import asyncio
from tornado.httpclient import HTTPClient, HTTPError
from tornado.httpserver import HTTPServer
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler
from tornado_prefork import fork_processes, task_id


class ProcessHandler(RequestHandler):
    def get(self):
        if self.get_argument("exit", None):
            os._exit(int(self.get_argument("exit")))
        self.write(str(os.getpid()))


sock, port = bind_unused_port()
signal.alarm(20)
try:
    id = fork_processes(3, max_restarts=3)
    assert id is not None
    signal.alarm(20)
except SystemExit as e:
    # All children finished with status 0.
    assert e.code == 0 and task_id() is None
    print("parent exits", e.code, flush=True)
    raise

if id in (0, 1):
    assert id == task_id()

    async def serve():
        server = HTTPServer(Application([("/", ProcessHandler)]))
        server.add_sockets([sock])
        await asyncio.Event().wait()

    asyncio.run(serve())
elif id == 2:
    assert id == task_id()
    sock.close()
    client = HTTPClient(SimpleAsyncHTTPClient)

    def fetch(path, fail_ok=False):
        try:
            return client.fetch("http://127.0.0.1:%d%s" % (port, path))
        except HTTPError as e:
            if not (fail_ok and e.code == 599):
                raise

    # Two children exit abnormally and are restarted, so a new fetch works.
    fetch("/?exit=2", fail_ok=True)
    fetch("/?exit=3", fail_ok=True)
    int(fetch("/").body)
    # Exit 0 is not restarted: one server is left; its pid changes when it
    # exits abnormally.
    fetch("/?exit=0", fail_ok=True)
    pid = int(fetch("/").body)
    fetch("/?exit=4", fail_ok=True)
    pid2 = int(fetch("/").body)
    assert pid != pid2, (pid, pid2)
    # The last one exits cleanly, then this driver.
    fetch("/?exit=0", fail_ok=True)
    print("driver done", flush=True)
    os._exit(0)
"""


def test_tornado_multi_process_scenario() -> None:
    result = procs.run(SCENARIO, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "driver done" in result.stdout
    assert "parent exits 0" in result.stdout
    err = result.stderr
    assert "Starting 3 processes" in err
    assert "exited with status 2, restarting" in err
    assert "exited with status 3, restarting" in err
    assert "exited with status 4, restarting" in err
    assert err.count("exited normally") == 3
    assert "Too many child restarts" not in err


def test_task_id_is_none_outside_children() -> None:
    result = procs.run("from tornado_prefork import task_id; print(task_id())")
    assert result.stdout.strip() == "None"
