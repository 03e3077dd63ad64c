"""A private directory of the server: made by the parent before the fork
(mode 0700), or only named then and made by the first process that needs it,
removed when the server ends, and handed to the new image by a reload in
place under a name in the handover's extras."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
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

    @classmethod
    def named_for_serve(cls: type[_D], handed_over: dict[str, str] | None) -> _D:
        """As `for_serve`, but a new directory is only named (a name nobody
        can guess), for `make` to create where it is needed."""
        if handed_over is not None and cls.EXTRA in handed_over:
            return cls(handed_over[cls.EXTRA])
        name = cls.PREFIX + secrets.token_hex(8)
        return cls(os.path.join(tempfile.gettempdir(), name))

    def make(self) -> None:
        """Creates the directory (mode 0700) unless one of this user's, that
        no one else may enter, is there already; raises `OSError` if something
        else is."""
        try:
            os.mkdir(self.directory, 0o700)
        except FileExistsError:
            found = os.lstat(self.directory)
            if not (
                stat.S_ISDIR(found.st_mode)
                and found.st_uid == os.getuid()
                and not found.st_mode & 0o077
            ):
                raise OSError(f"{self.directory} is not a private directory of this user") from None

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
