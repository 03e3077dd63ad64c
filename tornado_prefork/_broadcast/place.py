"""Where the hub of a server listens: a unix socket in a private directory
that the parent makes before the fork and removes when the server ends; a
reload in place hands it to the new image with the hub itself."""

from __future__ import annotations

import os
from collections.abc import Callable

from tornado_prefork._broadcast import current as _current
from tornado_prefork._broadcast.link import HubLink
from tornado_prefork._system.private_dir import PrivateDirectory


class HubPlace(PrivateDirectory):
    """The hub's directory (mode 0700) and socket path."""

    EXTRA = "broadcast_dir"
    PREFIX = "tornado-prefork-broadcast-"

    @property
    def path(self) -> str:
        return os.path.join(self.directory, "hub.sock")

    def in_worker(self, silent: Callable[[int], None]) -> None:
        """Makes this worker's broadcast go through the hub; ``silent`` tells
        the parent when the hub (its pid) is alive but sends nothing."""
        _current.install(HubLink(self.path, silent))
