"""Adding up the multiprocess files at each scrape, cheaply.

prometheus_client's ``MultiProcessCollector`` makes a sample object for every
value of every process and parses each key again at every scrape: with 32
workers that is several milliseconds of CPU, and on a CPU shared with those
32 busy workers the scheduler hands it out in slices far apart, so a scrape
took over half a second. This collector reads the same files (the format of
prometheus_client's ``MmapedDict``: a used-bytes count, then entries of a
length, a JSON key padded to 8 bytes, a value and a timestamp). Entries are
only ever appended, so where each value lies and which series it belongs to
is worked out once per file; a scrape reads each file, unpacks all its values
in one call and adds them to a number per series. A test compares its output
with ``MultiProcessCollector``'s on the same files.

A scrape also says what it could not count (`uncounted`, `unreadable`) rather
than fail, and puts back what a tmp cleaner removed: the directory, and the
files of ended workers (`remade`), from what it read of them last.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
import struct
from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString
from tornado.log import gen_log

from tornado_prefork._metrics import prometheus_names as _names
from tornado_prefork._metrics.directory import ENDED, UNCOUNTED, make_directory, replace
from tornado_prefork._metrics.prometheus_names import HEADER, read

# Files kept open between scrapes; more (a long run that replaced many
# workers) are opened at each scrape instead.
_MAX_OPEN = 512

Labels = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class _Series:
    """One time series of the output (before histogram buckets are made cumulative)."""

    metric: str
    kind: str
    help: str
    sample: str
    labels: Labels
    # The histogram bucket's upper bound; None for any other sample.
    le: float | None


@dataclasses.dataclass
class _Layout:
    """What one file holds, for as far as it has been read."""

    # Kept open between scrapes (None past _MAX_OPEN files: opened at each scrape).
    fd: int | None
    # How values of the same series from several files combine: sum, min, max, recent.
    combine: str
    parsed_to: int = HEADER
    # The series of each entry, as indexes into the collector's list.
    shape: tuple[int, ...] = ()
    # The gaps and (value, timestamp) pairs of the entries, for struct: one
    # call unpacks them all.
    format: str = ""
    values: struct.Struct = dataclasses.field(default_factory=lambda: struct.Struct(""))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class MergingCollector:
    """A prometheus_client collector over the multiprocess files in ``directory``.

    After each `collect`: `uncounted` is the number of processes that count in
    their own memory (the directory was full or gone when they wrote),
    `unreadable` the files this scrape had to leave out, and `remade` whether
    it had to make the directory again or put back files of ended workers.
    """

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._series: list[_Series] = []
        self._index: dict[tuple[bytes, str, str], int] = {}
        self._layouts: dict[str, _Layout] = {}
        # What the files of ended workers held when last read: a tmp cleaner
        # may remove them, and only the parent, at its next event, could
        # write them again.
        self._ended: dict[str, bytes] = {}
        self._owner: tuple[int, int] | None = None
        self._named: set[str] = set()
        self.uncounted = 0
        self.unreadable: dict[str, str] = {}
        self.remade = False

    def collect(self) -> Iterator[Metric]:
        totals: dict[int, float] = {}
        stamps: dict[int, float] = {}
        # Files of one shape (every worker's histogram file) are added up
        # value by value, in C, before their values go to their series.
        shapes: dict[tuple[int, ...], list[float]] = {}
        layouts: dict[str, _Layout] = {}
        self.uncounted = 0
        self.unreadable = {}
        self.remade = False
        for path, name in self._listing():
            try:
                read = self._read(path, name, len(layouts))
            except FileNotFoundError:
                # A live gauge's file, removed as its worker was reaped.
                continue
            except (OSError, RuntimeError) as e:
                self._cannot_read(path, e)
                continue
            if read is None:
                continue
            layout, data = read
            layouts[path] = layout
            if name.endswith(f"_{ENDED}.db"):
                self._ended[path] = data
            unpacked = layout.values.unpack_from(data, HEADER)
            if layout.combine == "sum":
                values = unpacked[0::2]
                done = shapes.get(layout.shape)
                shapes[layout.shape] = (
                    list(values) if done is None else list(map(operator.add, done, values))
                )
            else:
                _pick(layout, unpacked, totals, stamps)
        for path, gone in self._layouts.items():
            if layouts.get(path) is not gone:
                gone.close()
        self._layouts = layouts
        for shape, sums in shapes.items():
            for index, value in zip(shape, sums, strict=True):
                totals[index] = totals.get(index, 0.0) + value
        yield from _metrics(self._series, totals)

    def _listing(self) -> list[tuple[str, str]]:
        """The value files to read (path, name); counts the processes that
        count in their memory; makes again what a tmp cleaner removed."""
        try:
            status = os.stat(self._directory)
            self._owner = (status.st_uid, status.st_gid)
            with os.scandir(self._directory) as found:
                names = [entry.name for entry in found]
        except FileNotFoundError:
            self.remade = True
            try:
                make_directory(self._directory, self._owner)
            except OSError as e:
                self._cannot_read(self._directory, e)
            names = []
        self.uncounted = sum(name.startswith(UNCOUNTED) for name in names)
        paths = [
            (os.path.join(self._directory, name), name) for name in names if name.endswith(".db")
        ]
        listed = {path for path, _ in paths}
        for path, data in self._ended.items():
            if path not in listed:
                self.remade = True
                try:
                    replace({path: data})
                except OSError as e:
                    self._cannot_read(path, e)
                    continue
                paths.append((path, os.path.basename(path)))
        return paths

    def _cannot_read(self, path: str, error: Exception) -> None:
        self.unreadable[path] = str(error)
        if path not in self._named:
            self._named.add(path)
            gen_log.warning("metrics endpoint: left out %s: %s", path, error)

    def _read(self, path: str, name: str, open_files: int) -> tuple[_Layout, bytes] | None:
        """The file's layout and contents; None for a file its process is still creating."""
        layout = self._layouts.get(path)
        # A file removed (and maybe made again by a new process of that pid) is read anew.
        if layout is not None and (layout.fd is None or os.fstat(layout.fd).st_nlink == 0):
            layout.close()
            layout = None
        if layout is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            layout = _Layout(fd, _combination(name))
        assert layout.fd is not None
        try:
            data = read(layout.fd)
            if data is not None and layout.parsed_to > len(data):
                raise RuntimeError(f"metrics file {path} shrank")
            if data is not None and layout.parsed_to < len(data):
                self._extend(layout, name, data)
        except BaseException:
            layout.close()
            raise
        if open_files >= _MAX_OPEN or data is None:
            layout.close()
        if data is None:
            return None
        return layout, data

    def _extend(self, layout: _Layout, name: str, data: bytes) -> None:
        """Adds the entries appended to the file since it was last read."""
        kind, _, rest = name[:-3].partition("_")
        # Gauges in the "all" modes keep one series per process.
        pid = rest.rpartition("_")[2] if kind == "gauge" and rest.split("_")[0] in _PER_PID else ""
        position = layout.parsed_to
        gaps = []
        series = list(layout.shape)
        end = len(data)
        while position < end:
            raw, value_at = _names.entry_at(data, position, end)
            series.append(self._series_of(raw, kind, pid))
            gaps.append(value_at - position)
            position = value_at + _names.VALUE_SIZE
        layout.format += "".join(f"{gap}x{_names.VALUE_CODE}" for gap in gaps)
        layout.values = _names.values_struct(layout.format)
        layout.parsed_to = position
        layout.shape = tuple(series)

    def _series_of(self, raw: bytes, kind: str, pid: str) -> int:
        index = self._index.get((raw, kind, pid))
        if index is None:
            metric, sample, labels, help_text = json.loads(raw)
            le = labels.pop("le", None) if sample.endswith("_bucket") else None
            if pid:
                labels["pid"] = pid
            self._series.append(
                _Series(
                    metric,
                    kind,
                    help_text,
                    sample,
                    tuple(sorted(labels.items())),
                    None if le is None else float(le),
                )
            )
            index = self._index[(raw, kind, pid)] = len(self._series) - 1
        return index


_PER_PID = frozenset({"all", "liveall"})


def _combination(name: str) -> str:
    parts = name.split("_")
    if parts[0] != "gauge":
        return "sum"
    mode = parts[1].removeprefix("live")
    return "sum" if mode in _PER_PID else {"mostrecent": "recent"}.get(mode, mode)


def _pick(
    layout: _Layout, unpacked: tuple[float, ...], totals: dict[int, float], stamps: dict[int, float]
) -> None:
    values = unpacked[0::2]
    if layout.combine == "recent":
        # A value never set (timestamp 0) is not shown.
        for index, value, stamp in zip(layout.shape, values, unpacked[1::2], strict=True):
            if stamp > stamps.get(index, 0.0):
                totals[index] = value
                stamps[index] = stamp
        return
    pick = min if layout.combine == "min" else max
    for index, value in zip(layout.shape, values, strict=True):
        current = totals.get(index)
        totals[index] = value if current is None else pick(current, value)


def _metrics(series: list[_Series], totals: dict[int, float]) -> Iterator[Metric]:
    families: dict[str, Metric] = {}
    # Histograms: counts per (metric, labels) and upper bound, not yet cumulative.
    buckets: dict[tuple[str, Labels], dict[float, float]] = {}
    for index in sorted(totals):
        one = series[index]
        metric = families.get(one.metric)
        if metric is None:
            metric = families[one.metric] = Metric(one.metric, one.help, one.kind)
        if one.le is None:
            metric.add_sample(one.sample, dict(one.labels), totals[index])
        else:
            counts = buckets.setdefault((one.metric, one.labels), {})
            counts[one.le] = counts.get(one.le, 0.0) + totals[index]
    for (name, labels), counts in buckets.items():
        running = 0.0
        for bound in sorted(counts):
            running += counts[bound]
            families[name].add_sample(
                f"{name}_bucket",
                {**dict(labels), "le": floatToGoString(bound)},  # type: ignore[no-untyped-call]
                running,
            )
        families[name].add_sample(f"{name}_count", dict(labels), running)
    yield from families.values()
