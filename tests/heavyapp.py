"""An application that builds a large table at import, as real ones build caches and routes."""

from __future__ import annotations

import gc
import os

from tornado.web import Application, RequestHandler


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


_before = resident_bytes()
# Lists, which the collector always tracks (a dict of plain values it may skip).
TABLE = [[i, f"item-{i}", [i]] for i in range(100_000)]
# What the table costs, measured where it was built.
TABLE_BYTES = resident_bytes() - _before


class CollectHandler(RequestHandler):
    def get(self) -> None:
        # A full collection visits every object it tracks: without gc.freeze()
        # in the parent it would write to every inherited page of the table.
        gc.collect()
        self.write(
            {
                "pid": os.getpid(),
                "frozen": gc.get_freeze_count(),
                "table_bytes": TABLE_BYTES,
                "rows": len(TABLE),
            }
        )


def make_app() -> Application:
    return Application([(r"/collect", CollectHandler)])


app = make_app()
