"""Worker 0 serves; worker 1 reports an error and exits at once, on every start.

argv: none. Each error names the pid that sent it ("last words from <pid>").
"""

import os
import signal
import sys

from tests import scenarios
from tornado_prefork._settings import Settings
from tornado_prefork._supervisor import channel as _channel
from tornado_prefork._supervisor import children as _children
from tornado_prefork._supervisor.loop import Supervisor

scenarios.log_to(2)
config = Settings(
    max_restarts=100_000,
    graceful_timeout=5,
    min_uptime=0.5,
    backoff_cap=0.002,
    ready_timeout=0,
    timeout=0,
    max_worker_age=0,
)
supervisor = Supervisor(
    2, config, _children.child_init(os.getpid()), ready_on_fork=False, keep_running=True
)
child = supervisor.run()
if child is None:
    sys.exit(0)
if child.task_id == 1:
    _channel.send_error(child.channel, f"Traceback: last words from {os.getpid()}\n")
    os._exit(3)
_channel.send(child.channel, _channel.READY)
while True:
    signal.pause()
