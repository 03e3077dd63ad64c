"""Two workers and one sidecar under the supervisor; each says who it is.

argv: none. Workers print "worker <task id> <pid>", the sidecar "sidecar <pid>".
"""

import os
import signal
import sys

from tests import scenarios
from tests.scenarios import say
from tornado_prefork._settings import Settings
from tornado_prefork._supervisor import children as _children
from tornado_prefork._supervisor.loop import Supervisor
from tornado_prefork._supervisor.spawn import Sidecar


def watch() -> None:
    say("sidecar", os.getpid())
    while True:
        signal.pause()


scenarios.log_to(2)
config = Settings(
    max_restarts=5,
    graceful_timeout=5,
    min_uptime=0.2,
    backoff_cap=0.2,
    ready_timeout=0,
    timeout=0,
    max_worker_age=0,
)
supervisor = Supervisor(
    2, config, _children.child_init(os.getpid()), sidecars=[Sidecar("file watcher", watch)]
)
child = supervisor.run()
if child is None:
    say("parent done")
    sys.exit(0)
say("worker", child.task_id, os.getpid())
while True:
    signal.pause()
