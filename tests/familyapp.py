"""An application whose handler starts a process and leaves it running, as
code that shells out without waiting does (``/spawn``: a ``sleep`` of 300 s)."""

from __future__ import annotations

import os
import subprocess

from tornado.web import Application, RequestHandler


class SpawnHandler(RequestHandler):
    def get(self) -> None:
        child = subprocess.Popen(["sleep", "300"])
        # Never waited for: only the supervisor, its subreaper, collects it.
        child.returncode = 0
        self.write({"pid": os.getpid(), "child": child.pid})


def make_app() -> Application:
    return Application([(r"/spawn", SpawnHandler)])
