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
from tornado_prefork._reload import check as _check
from tornado_prefork._reload import keeper as _keeper
from tornado_prefork._settings import Settings
from tornado_prefork._supervisor import channel as _channel
from tornado_prefork._supervisor import children as _children
from tornado_prefork._supervisor import handover as _handover
from tornado_prefork._supervisor.handover import Handover
from tornado_prefork._supervisor.hooks import NewCodeCheck, SupervisorHooks
from tornado_prefork._supervisor.loop import Supervisor

VERSION = Path(sys.argv[1]).read_text().strip()


# The check of new code: a command that reports success at once.
PASS = [sys.executable, "-c", f"import os; os.write(int(os.environ[{_check.ENV!r}]), b'passed')"]


class InPlace(SupervisorHooks):
    def check_new_code(self) -> NewCodeCheck:
        return _check.ChildCheck(PASS, timeout=10)

    def reload_in_place(self, handover: Handover) -> str:
        return _handover.reexec(handover)


scenarios.log_to(2)
say("parent", os.getpid(), VERSION)
config = Settings(
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
    _children.child_init(os.getpid()),
    ready_on_fork=False,
    keep_running=True,
    hooks=InPlace(),
    handover=_keeper.take(),
)
child = supervisor.run()
if child is None:
    say("parent done")
    sys.exit(0)
say("worker", child.task_id, os.getpid(), VERSION)
_channel.send(child.channel, _channel.READY)
signal.sigwait([signal.SIGTERM])
