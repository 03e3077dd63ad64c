"""``metrics_port``: Prometheus across all the workers. The server's metrics
from start to exit (`recorder`), prometheus_client's multiprocess directory
(`directory`), what the parent tells the endpoint (`health`), the endpoint
process (`endpoint`), adding up the files at each scrape (`merge`), the
built-in instruments (`instruments`). Knows nothing of the fleet's internals."""
