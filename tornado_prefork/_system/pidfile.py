"""The parent's pid file: written after the sockets are bound, removed on exit."""

from __future__ import annotations

import os

from tornado_prefork.errors import StartupError


class PidFile:
    """A pid file for this process at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pid: int | None = None

    def create(self) -> None:
        """Writes this process's pid; refuses a file that names a live process.

        Raises `StartupError`.
        """
        other = self._read()
        if other is not None and other != os.getpid() and _alive(other):
            raise StartupError(
                f"pid file {self.path} names pid {other}, which is running: "
                "is another server using it?"
            )
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(temporary, self.path)
        except OSError as e:
            raise StartupError(f"cannot write pid file {self.path}: {e.strerror}") from e
        self._pid = os.getpid()

    def remove(self) -> None:
        """Removes the file if it still names this process."""
        if self._pid is not None and self._read() == self._pid:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self._pid = None

    def _read(self) -> int | None:
        try:
            with open(self.path) as f:
                text = f.read().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
