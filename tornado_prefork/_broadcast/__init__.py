"""Messages across workers (`tornado_prefork.broadcast`): what a subscriber
receives (`events`), how data travels (`codec`), the numbered history of each
topic (`journal`), a process's subscribers (`subscription`, `fanout`), the
backends (`local` in one process, `link` to the hub under serve()), the hub
sidecar (`hub`), and the WebSocket helper (`websocket`). Knows nothing of the
supervisor's internals: serve() starts the hub as one more sidecar."""
