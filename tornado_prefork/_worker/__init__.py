"""A worker's life: serve, heartbeat, drain, exit (`life`); its HTTPServer
(`httpserver`), the balanced accept loop (`accept`) and the shared accept
board (`board`), its event loop (`eventloop`), Tornado's autoreload kept off
(`autoreload`), the tasks that run in one worker at a time (`leader`).
Knows nothing of the fleet."""
