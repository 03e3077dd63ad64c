"""A counter the module defined before the metrics directory was set up counts
in two forked children; prints what a scrape adds up, then removes the directory.

argv: none. Prints ``threads``, ``early``, ``plain``, ``exits``, ``dir`` and ``removed`` lines.
"""

import os
import threading

import prometheus_client

early = prometheus_client.Counter("early_things", "made at import", ["kind"])
plain = prometheus_client.Counter("plain_things", "made at import")
early.labels("a")  # a child made before the switch must move too
# What follows comes after those metrics on purpose.
from tornado_prefork._metrics.directory import MetricsDirectory  # noqa: E402
from tornado_prefork._metrics.instruments import SupervisorMetrics  # noqa: E402

directory = MetricsDirectory()
from tornado_prefork._supervisor.record import ExitReason  # noqa: E402

SupervisorMetrics().worker_exited(ExitReason.CRASHED)
print("threads", threading.active_count())
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        early.labels("a").inc()
        plain.inc(2)
        os._exit(0)
    os.waitpid(pid, 0)
registry = prometheus_client.CollectorRegistry()
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

MultiProcessCollector(registry, directory.path)
print("early", registry.get_sample_value("early_things_total", {"kind": "a"}))
print("plain", registry.get_sample_value("plain_things_total"))
exits = "tornado_prefork_worker_exits_total"
print("exits", registry.get_sample_value(exits, {"reason": "crashed"}))
print("dir", directory.path, os.environ["PROMETHEUS_MULTIPROC_DIR"] == directory.path)
directory.remove()
print("removed", not os.path.exists(directory.path))
