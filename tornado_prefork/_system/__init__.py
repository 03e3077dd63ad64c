"""What the server asks of the operating system: listening sockets, systemd,
the pid file, private directories, dropping privileges, process titles, the
CPUs it may use, and every private name of Tornado it relies on. Knows
nothing of the layers above."""
