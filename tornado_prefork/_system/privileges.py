"""Dropping root in the workers: the parent binds port 80, the workers run as a user."""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd

from tornado_prefork.errors import StartupError


@dataclasses.dataclass(frozen=True)
class Identity:
    """Whom the workers become."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str


def resolve(user: str | None, group: str | None) -> Identity | None:
    """Looks up ``user`` and ``group`` (names or numbers) in the parent, before any fork.

    Raises `StartupError` for an unknown name, or when this process is not
    root and so cannot switch.
    """
    if user is None and group is None:
        return None
    if os.geteuid() != 0:
        raise StartupError(
            f"--user/--group need the server to start as root (it runs as uid {os.geteuid()})"
        )
    try:
        account = (
            pwd.getpwnam(user)
            if user and not user.isdigit()
            else pwd.getpwuid(int(user) if user else os.getuid())
        )
    except KeyError:
        raise StartupError(f"no such user: {user}") from None
    gid = account.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid if not group.isdigit() else int(group)
        except KeyError:
            raise StartupError(f"no such group: {group}") from None
    groups = tuple(sorted(set(os.getgrouplist(account.pw_name, gid))))
    return Identity(account.pw_uid, gid, groups, account.pw_name)


def drop(identity: Identity) -> None:
    """In a worker, before it loads the application: become ``identity`` for good.

    Raises `StartupError` naming the user if the switch fails.
    """
    try:
        # Groups first: once the uid is no longer root they cannot change.
        os.setgroups(list(identity.groups))
        os.setgid(identity.gid)
        os.setuid(identity.uid)
    except OSError as e:
        raise StartupError(f"cannot switch to user {identity.name}: {e.strerror}") from e
    if os.getuid() != identity.uid or os.geteuid() != identity.uid:
        raise StartupError(f"cannot switch to user {identity.name}: still uid {os.geteuid()}")
