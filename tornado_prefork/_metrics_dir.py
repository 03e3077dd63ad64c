"""prometheus_client's multiprocess directory, owned by the server.

prometheus_client counts across processes when ``PROMETHEUS_MULTIPROC_DIR``
names a directory in which every process writes its values to mmap files; a
scrape adds them up. The variable must be set before the first value is
created, in the parent and in every worker, and files left by an earlier run
would be added in. So the parent makes a fresh private directory before the
first fork, marks each worker dead when it is reaped (its live gauges stop
counting; its counters stay, so no total goes backwards), and removes the
directory when it exits.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile

from tornado.log import gen_log

from tornado_prefork.errors import StartupError

ENV = "PROMETHEUS_MULTIPROC_DIR"
INSTALL = "pip install 'tornado-prefork[metrics]'"
_STORED_IN_FILES = frozenset({"counter", "gauge", "histogram", "summary"})
_SHM = "/dev/shm"


def require_prometheus(setting: str) -> None:
    """Imports ``prometheus_client``; raises `StartupError` saying what to install."""
    try:
        importlib.import_module("prometheus_client")
    except ImportError as e:
        raise StartupError(f"{setting} needs prometheus_client: {INSTALL}") from e


class MetricsDirectory:
    """A fresh directory for prometheus_client's multiprocess files.

    Created by the constructor, in the parent, before any fork: it sets
    ``PROMETHEUS_MULTIPROC_DIR`` (which the workers inherit) and makes sure
    prometheus_client writes its values there even when it was imported
    earlier. ``path`` takes over the directory of the image before a
    re-execution in place, whose workers still write there. `remove` deletes
    it, in the process that created it only.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path or tempfile.mkdtemp(prefix="tornado-prefork-metrics-", dir=_in_memory())
        self._owner = os.getpid()
        os.environ[ENV] = self.path
        _switch_value_class()
        # Also when serve() fails before its supervisor runs (an import error).
        atexit.register(self.remove)

    def mark_dead(self, pid: int) -> None:
        """A worker ended: its live gauges (in flight, open connections) stop counting."""
        # Not at the top: this module is imported before the directory exists.
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def remove(self) -> None:
        """Deletes the directory and its files (only in the process that made it)."""
        if os.getpid() != self._owner:
            return
        if os.environ.get(ENV) == self.path:
            del os.environ[ENV]
        shutil.rmtree(self.path, ignore_errors=True)


def _in_memory() -> str | None:
    """Where the directory goes: ``$TMPDIR`` if set, else ``/dev/shm`` (memory:
    the values are written at every request, and a disk's page cache would
    write them back), else the default temporary directory."""
    if "TMPDIR" not in os.environ and os.access(_SHM, os.W_OK | os.X_OK):
        return _SHM
    return None


def _switch_value_class() -> None:
    # prometheus_client picks how values are stored when it is first imported.
    # Imported before the variable was set (by the module that defines the
    # application, say), it would keep values in each process's memory, or in
    # a directory of the user's that may hold an earlier run's files.
    values = sys.modules.get("prometheus_client.values")
    if values is None:
        return
    values.ValueClass = values.MultiProcessValue()  # type: ignore[attr-defined]
    _adopt_early_metrics()


def _adopt_early_metrics() -> None:
    """Moves the values of metrics created before serve() into the directory.

    Without this they would count per process and a scrape would show none of
    them. What they counted before serve() (at import: normally nothing) is
    not kept.
    """
    from prometheus_client import REGISTRY

    # Neither the registry's list of collectors nor a metric's values are
    # public; a metric whose layout is not the expected one is named instead.
    collectors = getattr(REGISTRY, "_collector_to_names", {})
    missed = []
    for collector, names in list(collectors.items()):
        # Info and Enum keep their values in memory in every mode.
        if getattr(collector, "_type", None) not in _STORED_IN_FILES:
            continue
        try:
            children = collector._metrics.values() if collector._is_parent() else []
            for metric in [collector, *children]:
                if not metric._is_parent():
                    metric._metric_init()
        except AttributeError:
            missed.append(names[0] if names else repr(collector))
    if missed:
        gen_log.warning(
            "metrics created before serve() count in each process separately: %s; "
            "create them in the application's module or factory",
            ", ".join(sorted(missed)),
        )
