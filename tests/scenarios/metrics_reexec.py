"""A parent that re-executes itself in place hands its metrics over: the new
image writes the memory and the directory that the running endpoint reads.

argv: none for the first image; the handed-over state (JSON) for the second.
Prints ``first``, ``adopted``, ``crashed``, ``ready``, ``stopping``, ``removed`` lines.
"""

import json
import os
import signal
import sys
import time
import types
import urllib.request
from urllib.error import HTTPError

from tornado_prefork._metrics.recorder import ServerMetrics
from tornado_prefork._supervisor import children as _children
from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._supervisor.record import ExitReason


def get(url, path):
    try:
        with urllib.request.urlopen(url.removesuffix("/metrics") + path, timeout=5) as r:
            return r.status, r.read().decode().strip()
    except HTTPError as e:
        return e.code, e.read().decode().strip()


def wait_up(url):
    for _ in range(200):
        try:
            return get(url, "/healthz")
        except OSError:
            time.sleep(0.02)


worker = types.SimpleNamespace(pid=424242, slot=0, seat=0)
if len(sys.argv) == 1:
    metrics = ServerMetrics.start(0, "127.0.0.1")
    url = metrics.urls[0]
    parent = os.getpid()
    endpoint = os.fork()
    if endpoint == 0:
        _children.child_init(parent)(None)
        metrics.endpoint().run()
        os._exit(0)
    metrics.worker_started(worker)
    metrics.worker_ready(worker)
    # What the fleet counts then.
    metrics.workers_changed(1, 1)
    metrics.worker_exited(types.SimpleNamespace(pid=1, slot=1, seat=1), ExitReason.CRASHED)
    print("first", *wait_up(url), flush=True)
    handover = Handover([], 0, 1)
    metrics.hand_over(handover)
    # What _handover.reexec does before its exec.
    for fd in handover.fds():
        os.set_inheritable(fd, True)
    state = json.dumps({"extras": handover.extras, "endpoint": endpoint, "url": url})
    os.execv(sys.executable, [sys.executable, "-m", "tests.scenarios.metrics_reexec", state])
else:
    state = json.loads(sys.argv[1])
    metrics = ServerMetrics.adopt(state["extras"])
    url = state["url"]
    # Before the fleet takes the worker over: what the first image published.
    print("adopted", *get(url, "/healthz"), flush=True)
    metrics.workers_changed(1, 1)
    metrics.worker_exited(types.SimpleNamespace(pid=2, slot=1, seat=1), ExitReason.CRASHED)
    text = get(url, "/metrics")[1]
    crashed = [line for line in text.splitlines() if 'reason="crashed"' in line]
    print("crashed", crashed[0].split()[-1], flush=True)
    workers = [
        line for line in text.splitlines() if line.startswith("tornado_prefork_workers_ready ")
    ]
    print("ready", workers[0].split()[-1], flush=True)
    metrics.stopping()
    print("stopping", *get(url, "/healthz"), flush=True)
    os.kill(state["endpoint"], signal.SIGTERM)
    os.waitpid(state["endpoint"], 0)
    metrics.close()
    print("removed", not os.path.exists(state["extras"]["metrics_dir"]))
