"""reuse_port reloaded under load, in a network namespace of its own.

argv: the number of reloads. Run under ``unshare --net`` (as root), where
net.ipv4.tcp_migrate_req can be set without touching the host; clients open a
new connection per request. Prints one JSON line: exit code, requests
answered, failures, and how many lines warned about tcp_migrate_req.
"""

import json
import signal
import subprocess
import sys
import time

from tests import serving

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv4/tcp_migrate_req", "w") as f:
    f.write("1")
with serving.start(reuse_port=True, graceful_timeout=5) as s:
    base = serving.url(s)
    loads = [serving.Load(base, limit=60) for _ in range(4)]
    for load in loads:
        load.__enter__()
    time.sleep(0.3)
    for done in range(1, int(sys.argv[1]) + 1):
        s.signal(signal.SIGHUP)
        s.wait_line("reload finished: 2 workers", timeout=20, count=done)
        time.sleep(0.1)
    for load in loads:
        load.stop()
    s.signal(signal.SIGTERM)
    code = s.finish(timeout=10)
print(
    json.dumps(
        {
            "code": code,
            "answered": sum(len(load.pids) for load in loads),
            "failures": [f for load in loads for f in load.failures],
            "warned": len(s.matching("tcp_migrate_req")),
        }
    )
)
