"""A private directory of the server: made by the parent before the fork
(mode 0700), removed when the server ends, and handed to the new image by a
reload in place under a name in the handover's extras."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import ClassVar, TypeVar

_D = TypeVar("_D", bound="PrivateDirectory")


class PrivateDirectory:
    """One such directory; a subclass names its handover extra (`EXTRA`) and
    the prefix of its name (`PREFIX`)."""

    EXTRA: ClassVar[str]
    PREFIX: ClassVar[str]

    def __init__(self, directory: str) -> None:
        self.directory = directory

    @classmethod
    def for_serve(cls: type[_D], handed_over: dict[str, str] | None) -> _D:
        """The directory of the server running already (``handed_over``: the
        extras of a reload in place's handover), or a new one."""
        if handed_over is not None and cls.EXTRA in handed_over:
            return cls(handed_over[cls.EXTRA])
        return cls(tempfile.mkdtemp(prefix=cls.PREFIX))

    def give_to(self, uid: int, gid: int) -> None:
        """Workers that run as another user must reach what is inside."""
        os.chown(self.directory, uid, gid)

    def hand_over(self, extras: dict[str, str]) -> None:
        """Before a reload in place: what `for_serve` needs in the new image."""
        extras[self.EXTRA] = self.directory

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    @classmethod
    def remove_handed_over(cls, extras: dict[str, str]) -> None:
        """The end of a server whose last image could not start (``extras``
        of its handover): the directory goes."""
        directory = extras.get(cls.EXTRA)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
