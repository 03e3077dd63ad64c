"""Tornado's ``autoreload`` in a worker: kept off, with one warning.

``Application(debug=True)`` or ``autoreload=True`` makes each process watch its
modules and re-exec itself on a change. In a pre-forked worker that re-exec
starts a second server that fails with "address already in use", and the
supervisor counts it as a crash. The command line's ``--reload`` does the same
job from the parent, as a rolling reload.
"""

from __future__ import annotations

from tornado.httputil import HTTPServerConnectionDelegate
from tornado.ioloop import IOLoop
from tornado.log import gen_log

from tornado_prefork._system import tornado_names as _tornado_names


def prevent() -> None:
    """Makes `tornado.autoreload.start` a no-op on this worker's event loop.

    Must run on the worker's loop before the application is built: Tornado
    starts the watcher from ``Application.__init__``, and offers no way to
    stop it once started.
    """
    _tornado_names.block_autoreload(IOLoop.current())


def warn_if_asked(application: HTTPServerConnectionDelegate, first: bool) -> None:
    """Logs, in the ``first`` worker only, that the application asked for
    autoreload and did not get it."""
    settings = getattr(application, "settings", {})
    if first and settings.get("autoreload"):
        gen_log.warning(
            "the application asks for autoreload (debug=True or autoreload=True), which "
            "cannot work in pre-forked workers: each would restart itself as a new server. "
            "It is off in the workers; use 'tornado-prefork APP --reload' to reload them "
            "when the code changes"
        )
