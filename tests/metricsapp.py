"""An application that counts with its own prometheus_client metric, for the metrics tests."""

from __future__ import annotations

import os

from prometheus_client import Counter
from tornado.web import Application, RequestHandler

from tests import webapp

# Defined at import, as applications do: no code about processes.
HITS = Counter("app_hits", "Requests to /hit", ["path"])


class HitHandler(RequestHandler):
    def get(self) -> None:
        HITS.labels("/hit").inc()
        self.write({"pid": os.getpid()})


app = Application([(r"/hit", HitHandler), *webapp.ROUTES])
