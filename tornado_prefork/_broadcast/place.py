"""Where the hub of a server listens: a unix socket in a private directory
that the parent makes before the fork and removes when the server ends; a
reload in place hands it to the new image with the hub itself."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

from tornado_prefork._broadcast import backend as _backend
from tornado_prefork._broadcast.link import HubLink

_EXTRA = "broadcast_dir"


class HubPlace:
    """The hub's directory (mode 0700) and socket path."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, "hub.sock")

    @classmethod
    def for_serve(cls, handed_over: dict[str, str] | None) -> HubPlace:
        """The place of the hub running already (``handed_over``: the extras of
        a reload in place's handover), or a new one."""
        if handed_over is not None and _EXTRA in handed_over:
            return cls(handed_over[_EXTRA])
        return cls(tempfile.mkdtemp(prefix="tornado-prefork-broadcast-"))

    def give_to(self, uid: int, gid: int) -> None:
        """Workers that run as another user must reach the socket."""
        os.chown(self.directory, uid, gid)

    def hand_over(self, extras: dict[str, str]) -> None:
        """Before a reload in place: what `for_serve` needs in the new image."""
        extras[_EXTRA] = self.directory

    def in_worker(self, silent: Callable[[], None]) -> None:
        """Makes this worker's broadcast go through the hub; ``silent`` tells
        the parent when the hub is alive but sends nothing."""
        _backend.install(HubLink(self.path, silent))

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    @staticmethod
    def remove_handed_over(extras: dict[str, str]) -> None:
        """The end of a server whose last image could not start (``extras``
        of its handover): the directory goes."""
        directory = extras.get(_EXTRA)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
