"""The parent: its loop and signal dispatch (`loop`), the fleet's desired
state and decisions (`fleet`), the record of one process (`record`), the
restart policy (`policy`), one fork (`spawn`), what every child does first
(`children`), the signal pipe (`signals`), the parent-worker channel
(`channel`), and the record of the whole parent handed across a re-exec
(`handover`). Knows nothing of HTTP or Tornado's IOLoop."""
