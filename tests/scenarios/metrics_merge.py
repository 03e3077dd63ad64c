"""Three processes write every kind of metric and every gauge mode; the merging
collector must say what prometheus_client's own says, before and after one
process is marked dead and the others add new series and values; with
``fold``, also after the ended ones are folded into the files of ended
workers, which must change no value (only the one-per-pid gauges of the ended
ones go).

argv: none, or ``fold``. Prints ``first <lines>`` and ``second <lines>`` of
the two scrapes; with ``fold`` then ``folded <lines>`` and the pid parts of
the names of the files left besides this process's (``ended``).
"""

import math
import os
import sys
import time

from tornado_prefork._metrics.directory import MetricsDirectory
from tornado_prefork._metrics.health import Health

directory = MetricsDirectory()
# prometheus_client is imported once the directory is set up, as serve() does.
import prometheus_client as p  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead  # noqa: E402

from tornado_prefork._metrics.merge import MergingCollector  # noqa: E402

counter = p.Counter("c", "a counter", ["kind"], registry=None)
histogram = p.Histogram("h", "a histogram", ["kind"], registry=None)
summary = p.Summary("s", "a summary", registry=None)
modes = [
    "all",
    "liveall",
    "min",
    "livemin",
    "max",
    "livemax",
    "sum",
    "livesum",
    "mostrecent",
    "livemostrecent",
]
gauges = {m: p.Gauge("g_" + m, "gauge " + m, multiprocess_mode=m, registry=None) for m in modes}


def work(n, extra):
    for i in range(n):
        counter.labels("a" if i % 2 else "b").inc(i + 1)
        histogram.labels(extra).observe(0.003 * i)
        summary.observe(i)
    for k, m in enumerate(modes):
        gauges[m].set(n * 10 + k)
        time.sleep(0.001)


def run(n, extra):
    pid = os.fork()
    if pid == 0:
        work(n, extra)
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


ours = p.CollectorRegistry()
ours.register(MergingCollector(directory.path))
theirs = p.CollectorRegistry()
MultiProcessCollector(theirs, directory.path)


def same():
    a = sorted(p.generate_latest(ours).decode().splitlines())
    b = sorted(p.generate_latest(theirs).decode().splitlines())
    assert a == b, "\n".join(sorted(set(a) ^ set(b)))
    return len(a)


pids = [run(n, "x") for n in (3, 5, 7)]
work(2, "p")
print("first", same())
mark_process_dead(pids[0], directory.path)
later = run(4, "y")
work(3, "q")  # new series appended to files already read
print("second", same())
if sys.argv[1:] != ["fold"]:
    directory.remove()
    sys.exit()


def samples():
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in theirs.collect()
        for sample in family.samples
    }


ended = [*pids, later, run(6, "z")]
for pid in ended:
    mark_process_dead(pid, directory.path)
before = samples()
lock = Health()
for pid in ended:
    directory.worker_ended(pid, lock)
after = samples()
# The one-per-pid gauges of the ended processes go; every other value stays.
kept = {k: v for k, v in before.items() if not {("pid", str(pid)) for pid in ended} & set(k[1])}
assert set(after) == set(kept), set(after) ^ set(kept)
for key, value in kept.items():
    assert math.isclose(after[key], value, rel_tol=1e-12), (key, after[key], value)
left = {name.removesuffix(".db").rpartition("_")[2] for name in os.listdir(directory.path)}
print("folded", same(), *sorted(left - {str(os.getpid())}))
directory.remove()
