"""The hub's upstream: the machine's one connection to Redis, through which
messages cross machines (``broadcast="redis://host:port/db"``).

Each topic is a Redis stream (``XADD ... MAXLEN ~ HISTORY``), numbered by
Redis: an entry's id is ``<epoch>-<seq>``, where the epoch is the Redis
clock (ms) when the stream was made and the seq is dense from 1, so a
position handed out on one machine names the same message on every other.
A publish is one script (`_PUBLISH`): it appends to the stream (its epoch
kept beside it, under `EPOCHS`) and publishes the entry on the topic's
channel. The hub subscribes to the
channels of the topics its workers want, on the same connection as its
commands (RESP3 lets one connection do both, where a blocking ``XREAD``
would need a second): Redis sees one connection per machine.

Nothing is lost silently. A hole in what arrives (a reconnect, a message
from before a subscribe) is filled from the stream (`_HISTORY`, from the
last position seen), which also replays what was published while Redis was
out of reach; what the stream no longer holds arrives as a jump in the
positions, which subscribers see as a gap, and a stream made again (Redis
restarted empty, the key expired) is a new epoch. While Redis cannot be
reached the server serves on, publish() fails saying so, one warning says
that messages are not crossing machines, and the hub retries with a
growing delay. A ping every `TICK` seconds finds a Redis that stopped
answering.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from tornado_prefork._broadcast.codec import Kind
from tornado_prefork._broadcast.events import Position
from tornado_prefork._broadcast.journal import HISTORY, Entry
from tornado_prefork._system import redis_names
from tornado_prefork.errors import BroadcastError, StartupError

log = logging.getLogger("tornado_prefork.broadcast")

#: What every key and channel of the server's starts with.
PREFIX = "tornado-prefork:"
#: Seconds a stream is kept after its last publish (Redis's memory stays bounded).
KEEP = 24 * 60 * 60
#: Seconds between two pings; one unanswered for `DEAF_AFTER` ends the connection.
TICK = 1.0
DEAF_AFTER = 3.5
#: Seconds a connection attempt may take.
CONNECT_TIMEOUT = 5.0
#: Commands awaiting their answer at once.
IN_FLIGHT = 10_000
_RETRY_FIRST = 0.1
_RETRY_MOST = 1.0
#: The epoch of a topic Redis holds nothing of (a stream made later has its own).
NO_EPOCH = "0"

#: What a stream's epoch is kept under, beside the stream: a publish reads it
#: (a GET) rather than the stream's last id (XINFO copies entries).
EPOCHS = "tornado-prefork-epoch:"

# KEYS: the stream, its epoch. ARGV: kind, data, history, keep (ms), channel.
# The entry's id: the next seq of the stream's epoch; in a new stream (or
# one emptied by hand) <epoch>-1, the epoch Redis's clock in ms. An epoch key
# missing beside a stream (deleted by hand) is read from its last entry.
_PUBLISH = """
local key, epoch_key = KEYS[1], KEYS[2]
local epoch = false
if redis.call('EXISTS', key) == 1 then
  epoch = redis.call('GET', epoch_key)
  if not epoch then
    local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
    if last then epoch = string.match(last[1], '^(%d+)-') end
  end
end
local id
if epoch then
  id = epoch .. '-*'
else
  local now = redis.call('TIME')
  epoch = now[1] .. string.format('%03d', math.floor(now[2] / 1000))
  id = epoch .. '-1'
end
id = redis.call('XADD', key, 'MAXLEN', '~', ARGV[3], id, 'k', ARGV[1], 'd', ARGV[2])
redis.call('SET', epoch_key, epoch, 'PX', ARGV[4])
redis.call('PEXPIRE', key, ARGV[4])
redis.call('PUBLISH', ARGV[5], id .. ' ' .. ARGV[1] .. ARGV[2])
return id
"""

# KEYS[1]: the stream. ARGV: epoch and seq of the last message seen, most.
# Returns {epoch, oldest seq, last seq, entries after it (all kept, from
# another epoch), at most `most`}; a stream that is not: {NO_EPOCH, 1, 0, {}}.
_HISTORY = """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'0', 1, 0, {}} end
local info = redis.call('XINFO', 'STREAM', key)
local last, first
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'first-entry' and info[i + 1] then first = info[i + 1][1] end
end
local epoch, last_seq = string.match(last, '^(%d+)-(%d+)$')
local oldest = tonumber(last_seq) + 1
if first then oldest = tonumber(string.match(first, '-(%d+)$')) end
local start = '-'
if ARGV[1] == epoch then start = '(' .. epoch .. '-' .. ARGV[2] end
return {epoch, oldest, tonumber(last_seq), redis.call('XRANGE', key, start, '+', 'COUNT', ARGV[3])}
"""


def check_url(url: str) -> None:
    """`ValueError` naming ``url`` if redis-py cannot read it; `.StartupError`
    saying what to install if redis-py is missing. Called before any fork."""
    try:
        from redis.asyncio import ConnectionPool
    except ImportError as e:
        raise StartupError(
            f"broadcast={url!r} needs redis-py ({e}): pip install 'tornado-prefork[redis]'"
        ) from e
    try:
        ConnectionPool.from_url(url)
    except ValueError as e:
        raise ValueError(f"broadcast={url!r} is not a Redis URL redis-py reads: {e}") from None


class _Push:
    """What Redis sent of itself (a channel's message), told apart from an answer."""

    __slots__ = ("value",)

    def __init__(self, value: list[Any]) -> None:
        self.value = value


class _Topic:
    """What the hub has received of one topic it wants."""

    __slots__ = ("last", "fill")

    def __init__(self) -> None:
        self.last: Position | None = None
        # The fill from the stream awaited, if one is: what arrives meanwhile is in it.
        self.fill: object | None = None


class Upstream:
    """The hub's connection to the Redis at ``url``. ``deliver(topic,
    position, kind, raw)`` is called for every message of a wanted topic, in
    the stream's order; ``lost(topic)`` when what a topic's subscribers had
    seen is gone from Redis (a stream made again: a new epoch)."""

    def __init__(
        self,
        url: str,
        deliver: Callable[[str, Position, Kind, bytes], None],
        lost: Callable[[str], None],
    ) -> None:
        from redis.asyncio import ConnectionPool

        self.url = url
        self._deliver = deliver
        self._lost = lost
        name = f"tornado-prefork-hub:{socket.gethostname()}:{os.getpid()}"
        # No socket timeout (the pings find a deaf Redis), nothing retried
        # behind our back: what fails is said, and replayed from the stream.
        self._pool = ConnectionPool.from_url(
            url, protocol=3, client_name=name, socket_timeout=None, health_check_interval=0
        )
        self._connection: Any = None
        self._answers: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._topics: dict[str, _Topic] = {}
        self._slots: asyncio.Semaphore | None = None
        self._shas: dict[str, str] = {}
        self._down_logged = False
        self._last_answer = 0.0
        self._served = False
        # Set once the first connection is made or has failed: until then a
        # command waits for it (a worker's first request at start), after
        # that one finds Redis unreachable at once.
        self._first_try = asyncio.Event()

    # What the hub asks.

    def want(self, topic: str) -> None:
        """The first worker subscribed to ``topic``: receive it from now on."""
        self._topics[topic] = _Topic()
        if self._connection is not None:
            self._send_only("SUBSCRIBE", self._channel(topic))

    def drop(self, topic: str) -> None:
        """No worker wants ``topic`` any more."""
        if self._topics.pop(topic, None) is not None and self._connection is not None:
            self._send_only("UNSUBSCRIBE", self._channel(topic))

    async def publish(self, topic: str, kind: Kind, raw: bytes) -> Position:
        """Appends a message to the topic's stream; its position."""
        keys = (PREFIX + topic, EPOCHS + topic)
        args = (int(kind), raw, HISTORY, int(KEEP * 1000), self._channel(topic))
        entry_id = await self._script("publish", _PUBLISH, keys, *args)
        epoch, seq = entry_id.decode().split("-")
        return Position(epoch, int(seq))

    async def history(self, topic: str, since: Position) -> tuple[str, int, int, list[Entry]]:
        """What a resume after ``since`` reads: as `Journal.history`."""
        epoch, oldest, last, entries = await self._script(
            "history", _HISTORY, (PREFIX + topic,), since.epoch, since.seq, HISTORY
        )
        return epoch.decode(), oldest, last, [self._entry(entry) for entry in entries]

    # The connection.

    async def run(self) -> None:
        """Keeps the connection, and makes it again whenever it is lost."""
        delay = _RETRY_FIRST
        while True:
            error = await self._connected_life()
            self._first_try.set()
            if self._served:
                # It served: the next try comes soon.
                delay = _RETRY_FIRST
            if not self._down_logged:
                log.warning(
                    "broadcast: Redis at %s cannot be reached (%s): messages are not "
                    "crossing machines and publish() fails until it is back; retrying",
                    self._shown_url(),
                    error,
                )
                self._down_logged = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MOST)

    async def _connected_life(self) -> str:
        """One connection, from its making to its loss; what ended it."""
        from redis.exceptions import RedisError

        self._last_answer = 0.0
        self._served = False
        connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await asyncio.wait_for(connection.connect(), CONNECT_TIMEOUT)
            # After connect, which makes the parser anew.
            redis_names.on_push(connection, self._push)
            self._connection = connection
            self._slots = asyncio.Semaphore(IN_FLIGHT)
            self._first_try.set()
            lives = [
                asyncio.ensure_future(self._read(connection)),
                asyncio.ensure_future(self._ping()),
                asyncio.ensure_future(self._ready()),
            ]
            try:
                done, _ = await asyncio.wait(lives[:2], return_when=asyncio.FIRST_COMPLETED)
                return str(done.pop().result())
            finally:
                for task in lives:
                    task.cancel()
        except (RedisError, OSError, asyncio.TimeoutError, BroadcastError, RuntimeError) as e:
            return str(e) or type(e).__name__
        finally:
            self._end()
            await connection.disconnect(nowait=True)

    def _end(self) -> None:
        """The connection is lost: nothing more is written to it (redis-py
        would connect again by itself), and every answer awaited fails."""
        self._connection = None
        answers, self._answers = self._answers, collections.deque()
        for answer in answers:
            if not answer.done():
                answer.set_exception(
                    BroadcastError(
                        f"the connection to Redis at {self._shown_url()} was lost before it "
                        "answered: a message being published may or may not have been"
                    )
                )

    async def _ready(self) -> None:
        """What a new connection does first: the scripts, the channels, and a
        fill of every topic whose subscribers have seen something. A failure
        (a Redis that refuses scripts) ends the connection, and says why."""
        try:
            await self._prepare()
        except Exception as e:
            if self._connection is not None:
                log.warning("broadcast: Redis at %s: %s", self._shown_url(), e)
                await self._connection.disconnect(nowait=True)

    async def _prepare(self) -> None:
        for name, script in (("publish", _PUBLISH), ("history", _HISTORY)):
            self._shas[name] = (await self._ask("SCRIPT", "LOAD", script)).decode()
        for topic, state in list(self._topics.items()):
            # Written now, before the fill: what the fill does not hold is pushed.
            await self._write(("SUBSCRIBE", self._channel(topic)))
            state.fill = None
            if state.last is not None:
                self._fill(topic, state)
        self._served = True
        if self._down_logged:
            log.info("broadcast: Redis at %s reached again", self._shown_url())
            self._down_logged = False

    async def _read(self, connection: Any) -> str:
        from redis.exceptions import RedisError, ResponseError

        while True:
            try:
                answer = await connection.read_response(push_request=True, disable_decoding=True)
            except ResponseError as e:
                # An error answer to the oldest command (read whole: the
                # connection goes on).
                if self._answers:
                    self._answers.popleft().set_exception(e)
                continue
            except (RedisError, OSError) as e:
                self._end()
                return str(e) or type(e).__name__
            self._last_answer = time.monotonic()
            if isinstance(answer, _Push):
                self._pushed(answer.value)
            elif self._answers:
                future = self._answers.popleft()
                if not future.done():
                    future.set_result(answer)

    async def _ping(self) -> str:
        while True:
            await asyncio.sleep(TICK)
            self._last_answer = self._last_answer or time.monotonic()
            ping = asyncio.ensure_future(self._ask("PING"))
            ping.add_done_callback(_quiet)
            if time.monotonic() - self._last_answer > DEAF_AFTER:
                return f"it answered nothing for {DEAF_AFTER} s"

    @staticmethod
    async def _push(response: list[Any]) -> _Push:
        return _Push(response)

    def _pushed(self, push: list[Any]) -> None:
        if len(push) != 3 or push[0] != b"message":
            return  # confirmations of (un)subscribing
        topic = push[1].decode()[len(PREFIX) :]
        state = self._topics.get(topic)
        if state is None or state.fill is not None:
            return  # not wanted any more; or in the fill under way
        head, _, rest = push[2].partition(b" ")
        epoch, seq = head.decode().split("-")
        position = Position(epoch, int(seq))
        last = state.last
        if last is not None:
            if position.epoch == last.epoch and position.seq <= last.seq:
                return
            if position.seq != (last.seq + 1 if position.epoch == last.epoch else 1):
                # A hole (or a stream made again whose start was missed):
                # the stream has what it still holds of it.
                self._fill(topic, state)
                return
        state.last = position
        self._deliver(topic, position, Kind(rest[0] - 48), rest[1:])

    def _fill(self, topic: str, state: _Topic) -> None:
        """Asks the stream for what followed the last message seen of ``topic``."""
        assert state.last is not None
        since = state.last
        fill = state.fill = asyncio.ensure_future(self.history(topic, since))
        fill.add_done_callback(lambda done: self._filled(topic, state, since, done))

    def _filled(
        self,
        topic: str,
        state: _Topic,
        since: Position,
        done: asyncio.Future[tuple[str, int, int, list[Entry]]],
    ) -> None:
        if self._topics.get(topic) is not state or state.fill is not done:
            return  # not wanted any more, or a fill of a connection since lost
        state.fill = None
        if done.cancelled() or done.exception() is not None:
            return  # the connection was lost: the next one fills again
        epoch, _, last, entries = done.result()
        if epoch != since.epoch and not entries:
            # What they had seen is gone, and nothing came since.
            state.last = None
            self._lost(topic)
        for seq, kind, raw in entries:
            state.last = Position(epoch, seq)
            self._deliver(topic, state.last, kind, raw)
        if len(entries) >= HISTORY and last > entries[-1][0]:
            # More than one answer holds.
            self._fill(topic, state)

    # Commands.

    def _send_only(self, *args: Any) -> None:
        """A command whose answer comes as a push (SUBSCRIBE, UNSUBSCRIBE)."""
        asyncio.ensure_future(self._write(args)).add_done_callback(_quiet)

    async def _ask(self, *args: Any) -> Any:
        if self._connection is None and not self._first_try.is_set():
            try:
                # The attempt itself is bounded by CONNECT_TIMEOUT.
                await asyncio.wait_for(self._first_try.wait(), CONNECT_TIMEOUT + 1)
            except asyncio.TimeoutError:
                pass
        if self._connection is None or self._slots is None:
            raise self._unreachable()
        async with self._slots:
            connection = self._connection
            if connection is None:
                raise self._unreachable()
            answer = asyncio.get_running_loop().create_future()
            # Queued and written with no await between (redis-py writes
            # before it first awaits): answers come in the order asked.
            self._answers.append(answer)
            await connection.send_packed_command(connection.pack_command(*args), check_health=False)
            return await answer

    async def _write(self, args: tuple[Any, ...]) -> None:
        connection = self._connection
        if connection is None:
            raise self._unreachable()
        await connection.send_packed_command(connection.pack_command(*args), check_health=False)

    async def _script(self, name: str, script: str, keys: tuple[str, ...], *args: Any) -> Any:
        from redis.exceptions import NoScriptError

        sha = self._shas.get(name)
        if sha is not None:
            try:
                return await self._ask("EVALSHA", sha, len(keys), *keys, *args)
            except NoScriptError:
                pass  # a Redis restarted or flushed since it was loaded
        # Also while a new connection is loading them: a request that comes
        # then is answered, not failed.
        return await self._ask("EVAL", script, len(keys), *keys, *args)

    def _unreachable(self) -> BroadcastError:
        return BroadcastError(
            f"Redis at {self._shown_url()} cannot be reached: the message was not published"
        )

    def _shown_url(self) -> str:
        kwargs = self._pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return f"{self.url.split(':', 1)[0]}://{where}/{kwargs.get('db', 0)}"

    @staticmethod
    def _channel(topic: str) -> str:
        return PREFIX + topic

    @staticmethod
    def _entry(entry: list[Any]) -> Entry:
        entry_id, fields = entry
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        return int(entry_id.split(b"-")[1]), Kind(int(values[b"k"])), values[b"d"]


def _quiet(future: asyncio.Future[Any]) -> None:
    """A command no one awaits: its failure is the connection's, seen there."""
    if not future.cancelled():
        future.exception()
