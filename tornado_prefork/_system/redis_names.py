"""Every use of a private name of redis-py, in one place.

redis-py offers no public way to read RESP3 push messages (a channel's
messages) on a connection that also carries commands: its `PubSub` keeps a
connection of its own. ``tests/test_broadcast_redis.py`` checks the name
against the installed redis-py and a real ``redis-server``, so an upgrade
means reading this file and running that test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


def on_push(connection: Any, handler: Callable[[list[Any]], Awaitable[Any]]) -> None:
    """Makes ``handler(push)`` what ``connection.read_response(push_request=True)``
    returns for each push message (call it after ``connect()``, which makes
    the parser anew); a `RuntimeError` saying what is needed if this
    redis-py cannot.

    Relies on ``Connection._parser.set_pubsub_push_handler``, which redis-py's
    own `PubSub` calls on its connection's RESP3 parser (Python or hiredis).
    """
    parser = getattr(connection, "_parser", None)
    set_handler = getattr(parser, "set_pubsub_push_handler", None)
    if set_handler is None:
        raise RuntimeError(
            f"redis-py's {type(parser).__name__} cannot hand over push messages: "
            "broadcast over Redis needs redis-py >= 5.1 and RESP3"
        )
    set_handler(handler)
