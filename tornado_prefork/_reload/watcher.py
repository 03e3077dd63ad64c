"""Development mode: watch the application's source tree, reload on every save.

`run` is the body of a small process beside the workers (a sidecar of the
supervisor; ``serve(reload=True)``, the command line's ``--reload``): it
watches a directory and sends SIGHUP to its parent, the supervisor, after
each burst of changes, which is a rolling reload. The parent itself runs no
thread and no event loop; this process may.

It uses the ``watchfiles`` package when installed
(``pip install 'tornado-prefork[watchfiles]'``) and otherwise polls the
files' modification times, which needs nothing but costs a scan of the tree
every `POLL_INTERVAL` seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tornado_prefork import logs

log = logging.getLogger("tornado_prefork.reload")

#: Files whose change reloads: Python sources and what apps usually load with them.
SUFFIXES = frozenset({".py", ".html", ".json", ".yaml", ".yml", ".toml", ".cfg", ".ini"})
#: Directories never watched: caches, environments, version control.
SKIPPED = frozenset(
    {"__pycache__", ".git", ".hg", ".venv", "venv", "node_modules", ".mypy_cache", ".tox"}
)
POLL_INTERVAL = 0.5
# Editors save in several writes (temporary file, rename, chmod): changes that
# come this close together are one reload.
QUIET = 0.2

Snapshot = dict[str, tuple[int, int]]


def run(root: str, use_watchfiles: bool | None = None) -> None:
    """Watches ``root`` and sends SIGHUP to the parent after each burst of
    changes; returns when the parent is gone. ``use_watchfiles`` None: use it
    if installed.

    .. versionadded:: 0.1
    """
    parent = os.getppid()
    # A Ctrl-C reaches the whole process group: the parent decides, and stops
    # this process last, with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.name_process("file watcher")

    def watching() -> None:
        log.info("reloading on changes under %s (%s)", root, _backend(use_watchfiles))

    for changed in changes(root, lambda: os.getppid() != parent, use_watchfiles, watching):
        log.info("%s changed: reloading", _describe(changed))
        os.kill(parent, signal.SIGHUP)


def source_root(import_string: str) -> str:
    """The directory to watch for ``package.module:name``: the top-level
    package's, or the module's own directory for a module outside a package.
    Found without importing anything."""
    top = import_string.partition(":")[0].split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is not None and spec.submodule_search_locations:
        return os.path.abspath(next(iter(spec.submodule_search_locations)))
    if spec is not None and spec.origin is not None:
        return os.path.dirname(os.path.abspath(spec.origin))
    return os.getcwd()


def changes(
    root: str,
    stopped: Callable[[], bool],
    use_watchfiles: bool | None = None,
    watching: Callable[[], None] = lambda: None,
) -> Iterator[list[str]]:
    """Yields the files under ``root`` that changed (added, modified or
    removed), one list per burst, until ``stopped()`` is true. Calls
    ``watching()`` once changes from then on are sure to be seen."""
    if use_watchfiles is None:
        use_watchfiles = _watchfiles_installed()
    if use_watchfiles:
        yield from _with_watchfiles(root, stopped, watching)
    else:
        yield from _polling(root, stopped, watching)


def snapshot(root: str) -> Snapshot:
    """Modification time and size of each watched file under ``root``."""
    found: Snapshot = {}
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in SKIPPED and not d.startswith(".")]
        for name in files:
            if os.path.splitext(name)[1] in SUFFIXES:
                path = os.path.join(directory, name)
                try:
                    stat = os.stat(path)
                except OSError:
                    continue  # removed while walking: the next scan says so
                found[path] = (stat.st_mtime_ns, stat.st_size)
    return found


def _polling(
    root: str, stopped: Callable[[], bool], watching: Callable[[], None]
) -> Iterator[list[str]]:
    before = snapshot(root)
    watching()
    while not stopped():
        time.sleep(POLL_INTERVAL)
        now = snapshot(root)
        changed = _diff(before, now)
        while changed and not stopped():
            # Wait until the burst is over, so that one save is one reload.
            time.sleep(QUIET)
            later = snapshot(root)
            if later == now:
                break
            changed = sorted(set(changed) | set(_diff(now, later)))
            now = later
        before = now
        if changed:
            yield changed


def _diff(before: Snapshot, after: Snapshot) -> list[str]:
    return sorted(
        path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
    )


def _with_watchfiles(
    root: str, stopped: Callable[[], bool], watching: Callable[[], None]
) -> Iterator[list[str]]:
    import watchfiles

    def wanted(change: watchfiles.Change, path: str) -> bool:
        parts = Path(path).relative_to(root).parts
        skipped = any(part in SKIPPED or part.startswith(".") for part in parts[:-1])
        return not skipped and os.path.splitext(path)[1] in SUFFIXES

    # rust_timeout bounds each wait, so that a gone parent is noticed. The
    # watch is in place once the first batch (or timeout) comes.
    started = False
    for batch in watchfiles.watch(
        root,
        watch_filter=wanted,
        debounce=int(QUIET * 1000 * 4),
        step=int(QUIET * 1000 / 4),
        rust_timeout=int(POLL_INTERVAL * 1000),
        yield_on_timeout=True,
    ):
        if not started:
            started = True
            watching()
        if stopped():
            return
        if batch:
            yield sorted({path for _, path in batch})


def _watchfiles_installed() -> bool:
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        return False
    return True


def _backend(use_watchfiles: bool | None) -> str:
    if use_watchfiles is None:
        use_watchfiles = _watchfiles_installed()
    if use_watchfiles:
        return "watchfiles"
    return (
        f"polling every {POLL_INTERVAL} s; pip install 'tornado-prefork[watchfiles]' "
        "to be told of changes instead"
    )


def _describe(paths: list[str]) -> str:
    shown = ", ".join(paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
