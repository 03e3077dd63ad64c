"""Run one Tornado application in N pre-forked worker processes.

``fork_processes``, ``task_id`` and ``cpu_count`` are drop-ins for
`tornado.process`'s, with a real supervisor behind them.
"""

from tornado_prefork.process import cpu_count, fork_processes, task_id
from tornado_prefork.supervisor import SupervisorConfig

__all__ = ["SupervisorConfig", "cpu_count", "fork_processes", "task_id"]
__version__ = "0.1.0"
