"""Tornado's own multi-process test (process_test.py), with only the import changed.

argv: none. Prints "driver done" from the child that drives the others and
"parent exits 0" once every child has ended.
"""

import asyncio
import os
import signal

from tornado.httpclient import HTTPClient, HTTPError
from tornado.httpserver import HTTPServer
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from tests import scenarios
from tornado_prefork import fork_processes, task_id

scenarios.log_to(2)


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
            return client.fetch(f"http://127.0.0.1:{port}{path}")
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
