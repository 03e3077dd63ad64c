"""A worker reaped while a scrape holds the directory: its fold waits, and a
reload in place hands it over; the new image folds it at its next event.

argv: none for the first image; the handed-over state (JSON) for the second.
Prints ``waiting``, ``handed over``, ``folded`` and ``counted`` lines.
"""

import json
import os
import sys
import types

from tornado_prefork._metrics.recorder import ServerMetrics
from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._supervisor.record import ExitReason


def files_of(directory, pid):
    return sorted(name for name in os.listdir(directory) if name.endswith(f"_{pid}.db"))


if len(sys.argv) == 1:
    metrics = ServerMetrics.start(0, "127.0.0.1")
    import prometheus_client

    jobs = prometheus_client.Counter("jobs", "jobs done")
    worker = os.fork()
    if worker == 0:
        jobs.inc(5)
        os._exit(0)
    os.waitpid(worker, 0)
    # A scrape in progress, in another process, holds the lock.
    held, release = os.pipe(), os.pipe()
    scrape = os.fork()
    if scrape == 0:
        metrics.health.hold(wait=True)
        os.write(held[1], b"x")
        os.read(release[0], 1)
        os._exit(0)
    os.read(held[0], 1)
    metrics.worker_exited(types.SimpleNamespace(pid=worker), ExitReason.CRASHED)
    print("waiting", *files_of(metrics.directory.path, worker), flush=True)
    handover = Handover([], 0, 1)
    metrics.hand_over(handover)
    # What _handover.reexec does before its exec.
    for fd in [*handover.fds(), release[1]]:
        os.set_inheritable(fd, True)
    state = {"extras": handover.extras, "worker": worker, "scrape": scrape, "release": release[1]}
    argv = [sys.executable, "-m", "tests.scenarios.metrics_handover", json.dumps(state)]
    os.execv(sys.executable, argv)
else:
    state = json.loads(sys.argv[1])
    metrics = ServerMetrics.adopt(state["extras"])
    print("handed over", sorted(metrics.directory.pending) == [state["worker"]])
    os.write(state["release"], b"x")
    os.waitpid(state["scrape"], 0)
    metrics.reloaded(True)
    print(
        "folded",
        files_of(metrics.directory.path, state["worker"]),
        sorted(metrics.directory.pending),
    )
    import prometheus_client
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = prometheus_client.CollectorRegistry()
    MultiProcessCollector(registry, metrics.directory.path)
    print("counted", registry.get_sample_value("jobs_total"))
    metrics.close()
