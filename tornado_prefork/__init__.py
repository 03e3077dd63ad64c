"""Run one Tornado application in N pre-forked worker processes.

``fork_processes``, ``task_id`` and ``cpu_count`` are drop-ins for
`tornado.process`'s, with a real supervisor behind them; ``serve`` binds the
sockets, forks the workers and runs an HTTPServer in each; ``leader_task``
runs a coroutine in one of them at a time.
"""

from tornado_prefork._reload import keeper as _keeper

# The one copy of the version is in _version.py, which pyproject.toml reads.
from tornado_prefork._version import __version__ as __version__
from tornado_prefork._worker.leader import leader_task
from tornado_prefork.errors import StartupError, SupervisorError
from tornado_prefork.process import cpu_count, fork_processes, task_id
from tornado_prefork.server import serve

# In a parent re-executed by a reload in place: the workers are taken over
# before any of the new code can fail.
_keeper.claim()

__all__ = [
    "StartupError",
    "SupervisorError",
    "cpu_count",
    "fork_processes",
    "leader_task",
    "serve",
    "task_id",
]
