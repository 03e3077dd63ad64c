"""A supervisor that reloads by re-executing itself in place.

argv: a file whose text is the version this image runs. Workers say
"worker <task id> <pid> <version>", report READY and wait for SIGTERM; the
parent says "parent <pid> <version>" each time it starts.
"""

import os
import signal
import sys
from pathlib import Path

from tests import scenarios
from tests.scenarios import say
from tornado_prefork import _channel, _fork, _handover
from tornado_prefork._handover import Handover
from tornado_prefork._hooks import SupervisorConfig, SupervisorHooks
from tornado_prefork._supervisor import Supervisor

VERSION = Path(sys.argv[1]).read_text().strip()


class InPlace(SupervisorHooks):
    def reload_in_place(self, handover: Handover) -> bool:
        _handover.reexec(handover)
        return True


scenarios.log_to(2)
say("parent", os.getpid(), VERSION)
config = SupervisorConfig(
    max_restarts=5,
    graceful_timeout=5,
    min_uptime=0.2,
    backoff_cap=0.2,
    ready_timeout=10,
    timeout=0,
    max_worker_age=0,
)
supervisor = Supervisor(
    2,
    config,
    _fork.child_init(os.getpid()),
    ready_on_fork=False,
    keep_running=True,
    hooks=InPlace(),
    handover=_handover.take(),
)
child = supervisor.run()
if child is None:
    say("parent done")
    sys.exit(0)
say("worker", child.task_id, os.getpid(), VERSION)
_channel.send(child.channel, _channel.READY)
signal.sigwait([signal.SIGTERM])
