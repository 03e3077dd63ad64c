"""Two workers and one sidecar under the supervisor; each says who it is.

argv: none. Workers print "worker <task id> <pid>", the sidecar "sidecar <pid>".
"""

import os
import signal
import sys

from tests import scenarios
from tests.scenarios import say
from tornado_prefork import _fork
from tornado_prefork._hooks import SupervisorConfig
from tornado_prefork._spawn import Sidecar
from tornado_prefork._supervisor import Supervisor


def watch() -> None:
    say("sidecar", os.getpid())
    while True:
        signal.pause()


scenarios.log_to(2)
config = SupervisorConfig(
    max_restarts=5,
    graceful_timeout=5,
    min_uptime=0.2,
    backoff_cap=0.2,
    ready_timeout=0,
    timeout=0,
    max_worker_age=0,
)
supervisor = Supervisor(
    2, config, _fork.child_init(os.getpid()), sidecars=[Sidecar("file watcher", watch)]
)
child = supervisor.run()
if child is None:
    say("parent done")
    sys.exit(0)
say("worker", child.task_id, os.getpid())
while True:
    signal.pause()
