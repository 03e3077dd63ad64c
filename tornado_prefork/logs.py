"""Logging for a multi-process server: who wrote each line, and reopening files.

Every record gets ``%(worker)s``: ``master`` in the parent, ``worker N`` (the
task id) in a worker; ``%(process)d`` is the pid. `FORMAT` uses both and
works with Tornado's `tornado.log.LogFormatter` (colours on a terminal).
`reopen_files` reopens every file a logging handler writes to, for logrotate;
`tornado_prefork.serve` calls it on SIGUSR1 in the parent and in each worker.
"""

from __future__ import annotations

import logging

from tornado.log import LogFormatter

from tornado_prefork import process

FORMAT = (
    "%(color)s[%(levelname)1.1s %(asctime)s %(worker)s %(process)d "
    "%(module)s:%(lineno)d]%(end_color)s %(message)s"
)


class ProcessFilter(logging.Filter):
    """Adds ``worker`` (``master`` or ``worker N``) to every record.

    .. versionadded:: 0.1
    """

    def filter(self, record: logging.LogRecord) -> bool:
        task = process.task_id()
        record.worker = "master" if task is None else f"worker {task}"
        return True


def enable(level: int | str = logging.INFO, access_log: bool = True) -> None:
    """Logs to stderr in `FORMAT` at ``level``; ``access_log=False`` silences
    Tornado's per-request lines. Handlers already on the root logger (those of
    `tornado.log.enable_pretty_logging`, say) get the filter and `FORMAT` too.

    .. versionadded:: 0.1
    """
    root = logging.getLogger()
    if not root.handlers:
        stderr = logging.StreamHandler()
        stderr.setFormatter(LogFormatter(fmt=FORMAT))
        root.addHandler(stderr)
    for handler in root.handlers:
        if not any(isinstance(f, ProcessFilter) for f in handler.filters):
            handler.addFilter(ProcessFilter())
        handler.setFormatter(LogFormatter(fmt=FORMAT))
    root.setLevel(level)
    logging.getLogger("tornado.access").disabled = not access_log


def reopen_files() -> None:
    """Reopens the file of every `logging.FileHandler` (after logrotate moved it).

    .. versionadded:: 0.1
    """
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream is not None:
                        handler.stream.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()
