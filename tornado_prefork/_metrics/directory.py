"""prometheus_client's multiprocess directory, owned by the server.

prometheus_client counts across processes when ``PROMETHEUS_MULTIPROC_DIR``
names a directory in which every process writes its values to mmap files; a
scrape adds them up. The variable must be set before the first value is
created, in the parent and in every worker, and files left by an earlier run
would be added in. So the parent makes a fresh private directory before the
first fork, and removes it when it exits.

When the parent reaps a worker, its live gauges stop counting (their files
go, as prometheus_client's ``mark_process_dead`` does), and what it counted
is folded into the files of ended workers, ``<kind>_ended.db``, and its own
files removed: totals never go backwards, and a server that replaces workers
for a month reads as few files at each scrape as on its first day.

Folding happens in the parent, when the worker is reaped: the parent is the
one that knows for certain that a process ended (its files are then
complete) and is the one that forks, so a new worker of the same pid never
finds the files of an old one half folded. It is a few small reads and
writes of memory (the directory is a tmpfs); when a scrape holds the lock
that keeps the two apart (`Health.hold`), the parent does not wait but folds
at its next event. The endpoint process could do it at each scrape, but it
would have to learn from the parent which pids ended, and a worker forked
with a reused pid in between would take the old worker's file for its own.

The files are prometheus_client's, ``<kind>_<pid>.db`` (kind: ``counter``,
``histogram``, ``summary`` or ``gauge_<mode>``), in the format of its
``MmapedDict`` (read and written by `tornado_prefork._metrics.prometheus_names`).
prometheus_client sizes a new file with ``truncate`` and maps it; on a full
tmpfs that size is only a promise, and the first write to a page the
filesystem cannot provide is a SIGBUS: the process dies at its first metric
without a word. `ValueFile`, which prometheus_client is given in place of
``MmapedDict``, reserves a file's blocks with ``posix_fallocate`` before it
maps them, so that a full filesystem is an error like any other: the process
then counts in its own memory from that moment on (said once, naming the
directory and the reason), and goes on serving. A file removed from under a
process (a tmp cleaner) is written again by `relink`, values and all.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib
import mmap
import os
import shutil
import tempfile

from tornado.log import gen_log

from tornado_prefork._metrics import prometheus_names as _names
from tornado_prefork._metrics.health import Health
from tornado_prefork._metrics.prometheus_names import HEADER, encode, entries, read
from tornado_prefork.errors import StartupError

ENV = "PROMETHEUS_MULTIPROC_DIR"
INSTALL = "pip install 'tornado-prefork[metrics]'"
_STORED_IN_FILES = frozenset({"counter", "gauge", "histogram", "summary"})
_SHM = "/dev/shm"
# Kinds of file whose values stay when their process ends, and how the values
# of several processes combine (as prometheus_client adds up a scrape).
_FOLDED = {
    "counter": "sum",
    "histogram": "sum",
    "summary": "sum",
    "gauge_sum": "sum",
    "gauge_min": "min",
    "gauge_max": "max",
    "gauge_mostrecent": "recent",
}
# Gauges that go with their process. prometheus_client keeps those of the
# default mode, "all", one series per pid, alive or dead: with workers
# replaced all day, that is a new series per worker for good.
_GONE_WITH_THE_PROCESS = tuple(
    f"gauge_{mode}"
    for mode in ("all", "liveall", "livesum", "livemin", "livemax", "livemostrecent")
)
Values = dict[bytes, tuple[float, float]]
# The pid part of the names of the files that hold what ended workers counted.
ENDED = "ended"
# An empty file ``uncounted_<pid>``: that process counts in its own memory.
UNCOUNTED = "uncounted_"


def require_prometheus(setting: str) -> None:
    """Imports ``prometheus_client``; raises `StartupError` saying what to install."""
    try:
        importlib.import_module("prometheus_client")
    except ImportError as e:
        raise StartupError(f"{setting} needs prometheus_client: {INSTALL}") from e
    _use_value_files()


class MetricsDirectory:
    """A fresh directory for prometheus_client's multiprocess files.

    Created by the constructor, in the parent, before any fork: it sets
    ``PROMETHEUS_MULTIPROC_DIR`` (which the workers inherit) and makes sure
    prometheus_client writes its values there even when it was imported
    earlier. ``path`` takes over the directory of the image before a
    re-execution in place, whose workers still write there, with the pids of
    ended workers not folded yet (``pending``). `remove` deletes it, in the
    process that created it only.
    """

    def __init__(self, path: str | None = None, pending: frozenset[int] = frozenset()) -> None:
        self.path = path or tempfile.mkdtemp(prefix="tornado-prefork-metrics-", dir=_in_memory())
        self._owner = os.getpid()
        # Ended workers whose files are still to be folded.
        self.pending = set(pending)
        # What the files of ended workers hold, by kind, and the inode each was written as.
        self._ended: dict[str, Values] = {}
        self._inodes: dict[str, int] = {}
        self._ids: tuple[int, int] | None = None
        # Bytes the last fold that failed wanted to write (0: none failed).
        self._wanted = 0
        if path is not None:
            self._read_ended()
        os.environ[ENV] = self.path
        _switch_value_class()
        # Also when serve() fails before its supervisor runs (an import error).
        atexit.register(self.remove)

    def worker_started(self, pid: int, lock: Health) -> None:
        """A worker was forked."""
        # Not folded yet, its old files are this one's now: prometheus_client
        # goes on from the values in them, so nothing is lost or counted twice.
        self.pending.discard(pid)
        self.tidy(lock)

    def worker_ended(self, pid: int, lock: Health) -> None:
        """A worker was reaped: its live gauges (in flight, open connections)
        stop counting now, what it counted is folded (`tidy`)."""
        for name in [f"{kind}_{pid}.db" for kind in _GONE_WITH_THE_PROCESS]:
            _remove(os.path.join(self.path, name))
        _remove(os.path.join(self.path, f"{UNCOUNTED}{pid}"))
        self.pending.add(pid)
        self.tidy(lock)

    def tidy(self, lock: Health) -> None:
        """At an event of the parent: makes again what a tmp cleaner removed,
        and folds the files of ended workers unless a scrape holds ``lock``.

        Never raises: what fails now (the directory removed meanwhile, a full
        filesystem) is tried again at the next event, and each process that
        cannot write its values says so.
        """
        try:
            status = os.stat(self.path)
            self._ids = (status.st_uid, status.st_gid)
        except FileNotFoundError:
            try:
                make_directory(self.path, self._ids)
            except OSError:
                return
        # After the directory: made by this process, it would not be the workers'.
        relink()
        if not lock.hold(wait=False):
            return
        try:
            self._write_ended_again()
            if self.pending:
                self._fold()
        except OSError:
            pass
        finally:
            lock.release()

    def _read_ended(self) -> None:
        for kind in _FOLDED:
            path = self._ended_path(kind)
            try:
                data = read_path(path)
                inode = os.stat(path).st_ino
            except FileNotFoundError:
                continue
            if data is not None:
                self._ended[kind] = {key: (value, stamp) for key, value, stamp, _ in entries(data)}
                self._inodes[kind] = inode

    def _write_ended_again(self) -> None:
        lost = {}
        for kind, values in self._ended.items():
            path = self._ended_path(kind)
            try:
                inode: int | None = os.stat(path).st_ino
            except FileNotFoundError:
                inode = None
            # Removed, or put back by the endpoint from what it read last.
            if inode != self._inodes.get(kind):
                lost[path] = kind, encode(values)
        if lost:
            try:
                written = replace({path: data for path, (_, data) in lost.items()})
            except OSError:
                return
            for path, (kind, _) in lost.items():
                self._inodes[kind] = written[path]

    def _fold(self) -> None:
        if self._wanted and _free_bytes(self.path) < self._wanted:
            return
        files = []
        with os.scandir(self.path) as listing:
            for entry in listing:
                kind, _, pid = entry.name.removesuffix(".db").rpartition("_")
                if entry.name.endswith(".db") and pid.isdigit() and int(pid) in self.pending:
                    files.append((kind, entry.path))
        ended = {kind: dict(values) for kind, values in self._ended.items()}
        folded = []
        for kind, path in files:
            combine = _FOLDED.get(kind)
            if combine is None:
                # A kind of a later prometheus_client: left to be read as it is.
                continue
            try:
                data = read_path(path)
            except FileNotFoundError:
                continue
            folded.append(path)
            if data is not None:
                _add(ended.setdefault(kind, {}), data, combine)
        changed = {kind for kind, path in files if path in folded}
        new = {self._ended_path(kind): encode(ended[kind]) for kind in changed if kind in ended}
        try:
            written = replace(new)
        except OSError as e:
            if not self._wanted:
                gen_log.warning(
                    "cannot fold the metrics of ended workers in %s: %s; their files "
                    "stay, and count, until it can",
                    self.path,
                    e.strerror or e,
                )
            self._wanted = sum(-(-len(data) // 4096) * 4096 for data in new.values())
            return
        self._wanted = 0
        for path in folded:
            _remove(path)
        for kind in changed:
            if kind in ended:
                self._inodes[kind] = written[self._ended_path(kind)]
        self._ended = ended
        self.pending.clear()

    def _ended_path(self, kind: str) -> str:
        return os.path.join(self.path, f"{kind}_{ENDED}.db")

    def remove(self) -> None:
        """Deletes the directory and its files (only in the process that made it)."""
        if os.getpid() != self._owner:
            return
        if os.environ.get(ENV) == self.path:
            del os.environ[ENV]
        shutil.rmtree(self.path, ignore_errors=True)


def _add(values: Values, data: bytes, combine: str) -> None:
    """Adds the values of one file to ``values``, as a scrape would combine them."""
    for key, value, stamp, _ in entries(data):
        old = values.get(key)
        if old is None:
            values[key] = value, stamp
        elif combine == "sum":
            values[key] = old[0] + value, 0.0
        elif combine == "recent":
            # A value never set (timestamp 0) is never shown.
            if stamp > old[1]:
                values[key] = value, stamp
        elif (combine == "min" and value < old[0]) or (combine == "max" and value > old[0]):
            values[key] = value, stamp


def _remove(path: str) -> None:
    # Gone already (a tmp cleaner), or not for this process to remove: a
    # scrape reads what stays, and the next event tries again.
    try:
        os.unlink(path)
    except OSError:
        pass


def _free_bytes(path: str) -> int:
    status = os.statvfs(path)
    return status.f_bavail * status.f_frsize


def _in_memory() -> str | None:
    """Where the directory goes: ``$TMPDIR`` if set, else ``/dev/shm`` (memory:
    the values are written at every request, and a disk's page cache would
    write them back), else the default temporary directory."""
    chosen = os.environ.get("TMPDIR")
    if chosen is not None:
        # As it is: Python's default would pass over a full one without a
        # word and put the values on a disk, which /dev/shm, full, does not.
        return chosen if os.path.isdir(chosen) else None
    if os.access(_SHM, os.W_OK | os.X_OK):
        return _SHM
    return None


def read_path(path: str) -> bytes | None:
    """`read` of the file at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read(fd)
    finally:
        os.close(fd)


def replace(files: dict[str, bytes]) -> dict[str, int]:
    """Writes each path's data to a new file, then gives each new file its
    path's name in one step: a reader sees an old file or a new one, never a
    part, and sees the new ones only once all are written. Returns each new
    file's inode; raises `OSError` (the filesystem is full) having changed
    nothing."""
    staged: dict[str, tuple[str, int]] = {}
    try:
        for path, data in files.items():
            directory, name = os.path.split(path)
            # Not ending in .db: no reader takes it for a file of values.
            temporary = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            fd = os.open(temporary, flags, 0o600)
            try:
                staged[path] = (temporary, os.fstat(fd).st_ino)
                # Reserved first: a full tmpfs says so here, not halfway through.
                os.posix_fallocate(fd, 0, len(data))
                os.pwrite(fd, data, 0)
            finally:
                os.close(fd)
    except OSError:
        for temporary, _ in staged.values():
            os.unlink(temporary)
        raise
    for path, (temporary, _) in staged.items():
        os.rename(temporary, path)
    return {path: inode for path, (_, inode) in staged.items()}


def make_directory(path: str, owner: tuple[int, int] | None = None) -> None:
    """Makes the directory again, if something removed it (a tmp cleaner),
    owned by ``owner`` (uid, gid) when given and this process may."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    if owner is not None and os.geteuid() == 0:
        os.chown(path, *owner)
    gen_log.warning(
        "metrics directory %s was removed; made it again (each process writes its files again)",
        path,
    )


@dataclasses.dataclass
class _Process:
    """The files of this process; after a fork the child starts with none."""

    pid: int
    files: list[ValueFile] = dataclasses.field(default_factory=list)
    # Once writing failed, every value of the process lives in its memory.
    in_memory: bool = False


_this = _Process(os.getpid())


def _process() -> _Process:
    global _this
    if _this.pid != os.getpid():
        _this = _Process(os.getpid())
    return _this


class ValueFile:
    """One file of this process's values, as prometheus_client's values use it.

    What prometheus_client's ``MmapedDict`` is to them, with the constructor
    and the methods they call (`read_value`, `write_value`, `close`) and the
    same file format; a write is the same slice assignment to the mapping.
    """

    def __init__(self, filename: str) -> None:
        self._path = filename
        self._fd: int | None = None
        self._memory: mmap.mmap | bytearray = bytearray(_names.INITIAL_SIZE)
        self._positions: dict[str, int] = {}
        process = _process()
        if not process.in_memory:
            try:
                self._open()
            except OSError as e:
                _give_up(process, filename, e)
        if self._fd is None:
            _names.set_used(self._memory, HEADER)
        self._used: int = _names.used(self._memory)
        process.files.append(self)

    def _open(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self._path, flags, 0o600)
        except FileNotFoundError:
            make_directory(os.path.dirname(self._path))
            fd = os.open(self._path, flags, 0o600)
        # A file of an earlier process of this pid, or of this process
        # before it re-executed itself: its values go on from there.
        size = os.fstat(fd).st_size
        try:
            capacity = max(size, _names.INITIAL_SIZE)
            os.posix_fallocate(fd, 0, capacity)
            memory = mmap.mmap(fd, capacity)
        except OSError:
            if size == 0:
                # An empty file would stop prometheus_client's own collector.
                os.unlink(self._path)
            os.close(fd)
            raise
        if _names.used(memory) < HEADER:
            _names.set_used(memory, HEADER)
        for key, _, _, position in entries(memory):
            self._positions[key.decode()] = position
        self._fd, self._memory = fd, memory

    def read_value(self, key: str) -> tuple[float, float]:
        position = self._positions.get(key)
        if position is None:
            position = self._add(key)
        return _names.value_of(self._memory, position)

    def write_value(self, key: str, value: float, timestamp: float) -> None:
        position = self._positions.get(key)
        if position is None:
            position = self._add(key)
        _names.set_value(self._memory, position, value, timestamp)

    def close(self) -> None:
        if isinstance(self._memory, mmap.mmap):
            self._memory.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._memory = bytearray()
        files = _process().files
        if self in files:
            files.remove(self)

    def _add(self, key: str) -> int:
        entry = _names.entry(key.encode(), 0.0, 0.0)
        end = self._used + len(entry)
        if end > len(self._memory):
            self._grow(end)
        self._memory[self._used : end] = entry
        # The count last: a reader never takes a half-written entry for one.
        _names.set_used(self._memory, end)
        self._used = end
        position = self._positions[key] = end - _names.VALUE_SIZE
        return position

    def _grow(self, end: int) -> None:
        capacity = len(self._memory)
        while capacity < end:
            capacity *= 2
        if self._fd is not None:
            try:
                os.posix_fallocate(self._fd, 0, capacity)
                memory = mmap.mmap(self._fd, capacity)
            except OSError as e:
                _give_up(_process(), self._path, e)
            else:
                assert isinstance(self._memory, mmap.mmap)
                self._memory.close()
                self._memory = memory
                return
        assert isinstance(self._memory, bytearray)
        self._memory.extend(bytes(capacity - len(self._memory)))

    def _to_memory(self) -> None:
        """From now on the values live in this process's memory; the file keeps
        what it holds, which still counts."""
        if self._fd is None or not isinstance(self._memory, mmap.mmap):
            return
        mapped = self._memory
        self._memory = bytearray(mapped)
        mapped.close()
        os.close(self._fd)
        self._fd = None

    def _relink(self) -> None:
        if self._fd is None or os.fstat(self._fd).st_nlink > 0:
            return
        assert isinstance(self._memory, mmap.mmap)
        try:
            make_directory(os.path.dirname(self._path))
            replace({self._path: bytes(self._memory)})
            fd = os.open(self._path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            _give_up(_process(), self._path, e)
            return
        try:
            memory = mmap.mmap(fd, len(self._memory))
        except OSError as e:
            os.close(fd)
            _give_up(_process(), self._path, e)
            return
        self._memory.close()
        os.close(self._fd)
        self._fd, self._memory = fd, memory


def relink() -> None:
    """Writes again, with their values, the files of this process that were
    removed (by a tmp cleaner): until then it counts in files no scrape sees."""
    for file in list(_process().files):
        file._relink()


def _give_up(process: _Process, path: str, error: OSError) -> None:
    if process.in_memory:
        return
    process.in_memory = True
    for file in process.files:
        file._to_memory()
    directory = os.path.dirname(path)
    gen_log.warning(
        "cannot write metrics to %s: %s; pid %d goes on without them",
        directory,
        error.strerror or error,
        process.pid,
    )
    # Tells the endpoint; an empty file needs no block of a full filesystem.
    try:
        os.close(os.open(os.path.join(directory, f"{UNCOUNTED}{process.pid}"), os.O_CREAT, 0o600))
    except OSError:
        pass


def _switch_value_class() -> None:
    # prometheus_client picks how values are stored when it is first imported.
    # Imported before the variable was set (by the module that defines the
    # application, say), it would keep values in each process's memory, or in
    # a directory of the user's that may hold an earlier run's files.
    if not _names.switch_to_multiprocess():
        return
    _use_value_files()
    _adopt_early_metrics()


def _use_value_files() -> None:
    """Every value made from now on writes through `ValueFile` (a full
    filesystem is then an error, not a SIGBUS), in this process and in those
    it forks."""
    _names.store_values_with(ValueFile)


def _adopt_early_metrics() -> None:
    """Moves the values of metrics created before serve() into the directory.

    Without this they would count per process and a scrape would show none of
    them. What they counted before serve() (at import: normally nothing) is
    not kept.
    """
    # A metric whose layout is not the expected one is named instead.
    missed = []
    for collector, names in _names.registered_collectors():
        # Info and Enum keep their values in memory in every mode.
        if _names.metric_type(collector) not in _STORED_IN_FILES:
            continue
        try:
            _names.make_values_again(collector)
        except AttributeError:
            missed.append(names[0] if names else repr(collector))
    if missed:
        gen_log.warning(
            "metrics created before serve() count in each process separately: %s; "
            "create them in the application's module or factory",
            ", ".join(sorted(missed)),
        )
