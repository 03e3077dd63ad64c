"""prometheus_client's values write through `ValueFile`, in its file format,
and a filesystem that fills up under them is no SIGBUS: the process, and a
child it forks, count in memory, each saying so once.

argv: none; TMPDIR is a small filesystem of the test's own, which this
program fills. Prints ``through``, ``same bytes``, ``reopened``,
``in memory``, ``child`` and ``kept`` lines; the warnings go to stderr.
"""

import os

from tornado_prefork._metrics.directory import MetricsDirectory, require_prometheus

directory = MetricsDirectory()
require_prometheus("metrics_port")
# Imported once the directory is set up, as serve() does.
import prometheus_client  # noqa: E402
from prometheus_client import values  # noqa: E402
from prometheus_client.mmap_dict import MmapedDict  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

from tornado_prefork._metrics import directory as _directory  # noqa: E402
from tornado_prefork._metrics.directory import ValueFile  # noqa: E402

counter = prometheus_client.Counter("c", "a counter", ["k"])
counter.labels("first").inc(3)
print("through", values.MmapedDict is ValueFile, len(_directory._process().files))

# The same writes, past the first size, make the same bytes.
theirs, ours = (os.path.join(directory.path, name) for name in ("theirs.bin", "ours.bin"))
writers = [MmapedDict(theirs), ValueFile(ours)]
for i in range(3000):
    for writer in writers:
        writer.write_value(f'["m", "m_total", {{"i": "{i}"}}, "help"]', i * 0.5, i)
for writer in writers:
    writer.close()
with open(theirs, "rb") as a, open(ours, "rb") as b:
    print("same bytes", a.read() == b.read(), os.path.getsize(ours))
again = ValueFile(ours)
print("reopened", again.read_value('["m", "m_total", {"i": "2999"}, "help"]'))
again.close()
os.unlink(theirs)
os.unlink(ours)

filler = os.path.join(os.environ["TMPDIR"], "filler")
fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
for size in (1 << 16, 1 << 12):
    try:
        while True:
            os.write(fd, bytes(size))
    except OSError:
        pass
os.close(fd)
# Past the first size of the file: it cannot grow.
for i in range(2000):
    counter.labels(f"label-{i}").inc()
print("in memory", prometheus_client.REGISTRY.get_sample_value("c_total", {"k": "label-1999"}))
pid = os.fork()
if pid == 0:
    prometheus_client.Gauge("g", "a gauge", multiprocess_mode="livesum").set(7)
    counter.labels("first").inc()
    os._exit(0)
print("child", os.waitpid(pid, 0)[1])
registry = prometheus_client.CollectorRegistry()
MultiProcessCollector(registry, directory.path)
print("kept", registry.get_sample_value("c_total", {"k": "first"}))
os.unlink(filler)
directory.remove()
