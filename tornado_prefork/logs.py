"""Logging for a multi-process server: who wrote each line, and reopening files.

Every record gets ``%(worker)s``: ``master`` in the parent, ``worker N`` (the
task id) in a worker; ``%(process)d`` is the pid. `FORMAT` uses both and
works with Tornado's `tornado.log.LogFormatter` (colours on a terminal).
`reopen_files` reopens every file a logging handler writes to, for logrotate;
`tornado_prefork.serve` calls it on SIGUSR1 in the parent and in each worker.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

from tornado.log import LogFormatter, gen_log

from tornado_prefork import process

FORMAT = (
    "%(color)s[%(levelname)1.1s %(asctime)s %(worker)s %(process)d "
    "%(module)s:%(lineno)d]%(end_color)s %(message)s"
)


# What a process that is neither the parent nor a worker calls itself.
_name: str | None = None


class ProcessFilter(logging.Filter):
    """Adds ``worker`` (``master``, ``worker N``, or the name of a helper
    process such as ``file watcher``) to every record.

    .. versionadded:: 0.1
    """

    def filter(self, record: logging.LogRecord) -> bool:
        task = process.task_id()
        if _name is not None:
            record.worker = _name
        else:
            record.worker = "master" if task is None else f"worker {task}"
        return True


def name_process(name: str) -> None:
    """Has every log line of this process say ``name`` instead of ``master``:
    for a helper process of the server that is no worker.

    .. versionadded:: 0.2
    """
    global _name
    _name = name


def enable(level: int | str | None = logging.INFO, access_log: bool = True) -> None:
    """Logs to stderr in `FORMAT` at ``level`` (None: keep the root logger's
    level); ``access_log=False`` silences Tornado's per-request lines.

    Handlers already on the root logger get the `ProcessFilter`, so that
    ``%(worker)s`` works in their formats. Their formatters are kept, except
    Tornado's plain default (`tornado.log.enable_pretty_logging`'s), which is
    given `FORMAT`: a format the user configured (``logging.config``,
    ``--log-config``) is never replaced.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Keeps the formatters the user configured; ``level`` may be None.
    """
    root = logging.getLogger()
    if not root.handlers:
        stderr = logging.StreamHandler()
        root.addHandler(stderr)
    for handler in root.handlers:
        _add_filter(handler)
        if handler.formatter is None or _is_tornado_default(handler.formatter):
            handler.setFormatter(LogFormatter(fmt=FORMAT))
    if level is not None:
        root.setLevel(level)
    logging.getLogger("tornado.access").disabled = not access_log


def access_log_to(path: str) -> None:
    """Writes Tornado's access log (``tornado.access``) to the file ``path``
    instead of the root logger's handlers (``-``: stderr). The file is
    reopened on SIGUSR1 (`reopen_files`) and when logrotate moved it.

    Raises `OSError` if the file cannot be opened.

    .. versionadded:: 0.2
    """
    handler: logging.Handler
    if path == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.handlers.WatchedFileHandler(path)
    _add_filter(handler)
    handler.setFormatter(LogFormatter(fmt=FORMAT, color=False))
    access = logging.getLogger("tornado.access")
    access.addHandler(handler)
    access.propagate = False


def reopen_files() -> None:
    """Reopens the file of every `logging.FileHandler` (after logrotate moved it).

    A `logging.handlers.WatchedFileHandler` reopens its file if it was moved; any
    other file handler in append mode is closed and opens its file again on its
    next record. Handlers that truncate (mode ``w``) are left alone: reopening
    would erase what they wrote.

    .. versionadded:: 0.1
    """
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.handlers.WatchedFileHandler):
                handler.reopenIfNeeded()
            elif isinstance(handler, logging.FileHandler) and handler.mode != "w":
                handler.close()
    # Also the first line of the new files: a closed handler opens its file
    # only when it next writes.
    gen_log.info("log files reopened")


def _add_filter(handler: logging.Handler) -> None:
    if not any(isinstance(f, ProcessFilter) for f in handler.filters):
        handler.addFilter(ProcessFilter())


def _is_tornado_default(formatter: logging.Formatter) -> bool:
    return isinstance(formatter, LogFormatter) and formatter._fmt == LogFormatter.DEFAULT_FORMAT
