"""An application that says how many request kinds its worker's metrics keep, for the tests of
methods a client invents."""

from __future__ import annotations

import gc
import os

from tornado.web import Application, RequestHandler

from tests import webapp


class KindsHandler(RequestHandler):
    def get(self) -> None:
        # Imported here, in the worker: prometheus_client reads its
        # multiprocess directory when first imported, which the parent sets later.
        from tornado_prefork._metrics.instruments import RequestMetrics

        (metrics,) = [o for o in gc.get_objects() if isinstance(o, RequestMetrics)]
        self.write({"pid": os.getpid(), "kinds": len(metrics._by_kind)})


app = Application([(r"/kinds", KindsHandler), *webapp.ROUTES])
