"""Messages across machines: servers sharing one real `redis-server`
(``broadcast="redis://..."``), started here on a free port, each server's
hub its one client of Redis.

Two servers on this machine stand for two machines: two process trees, two
ports, two hubs. The faults are Redis's: restarted empty in a publish storm,
the hub's connection killed (``CLIENT KILL``), down at start and up later,
its history trimmed below a client's cursor. In each, no subscriber hangs,
every loss is a gap, and delivery resumes within `RESUMES_WITHIN` of Redis
being back. Needs the ``redis-server`` binary (Debian package
``redis-server``; ``.ci/run`` installs it) and redis-py (the ``redis`` extra).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import procs, serving
from tests.test_broadcast_examples import (
    EXAMPLES,
    POSTS,
    websocket_chat,
    workers_holding_connections,
)
from tests.test_broadcast_faults import (
    AGE,
    APP,
    SHORT,
    TOPIC,
    Client,
    Crew,
    Storm,
    each_received,
    long_poll,
    publishing,
    request,
    run,
    unreported,
    until,
    websocket,
)
from tests.test_nginx import NGINX, WEBSOCKETS, free_port, nginx_in_front
from tornado_prefork._broadcast.upstream import PREFIX
from tornado_prefork.broadcast import Position

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install -y redis-server)"
)
# How soon after Redis is back subscribers receive again.
RESUMES_WITHIN = 2.0
STORM = 200


class RedisServer:
    """A redis-server of the test's own, on one port for its whole life, with
    nothing kept on disk: a restart starts empty."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None and self.process is None
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except OSError:
                pass
            except Exception as e:  # redis-py's ConnectionError is no OSError
                if "Connection" not in type(e).__name__:
                    raise
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port, socket_timeout=5)

    def hubs(self) -> list[dict[str, Any]]:
        """The hubs connected (CLIENT LIST), by their connection's name."""
        with self.client() as client:
            listed = client.client_list()
        return [c for c in listed if c["name"].startswith("tornado-prefork-hub:")]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        if server.process is not None:
            server.kill()


@pytest.fixture
def running_redis(redis_server: RedisServer) -> RedisServer:
    redis_server.start()
    return redis_server


def hub_pid(client: dict[str, Any]) -> int:
    return int(client["name"].rsplit(":", 1)[1])


def one_hub_each(redis: RedisServer, *servers: procs.Scenario) -> None:
    """Redis sees one connection per server: its hub's."""
    hubs = redis.hubs()
    assert sorted(hub_pid(c) for c in hubs) == sorted(
        pid for s in servers for pid in procs.hubs() & set(procs.every_child(s.pid))
    ), hubs
    assert len(hubs) == len(servers), hubs


def chat(redis: RedisServer, processes: int = 2) -> list[str]:
    """The ported WebSocket chat (examples/websocket) through Redis."""
    return [
        serving.COMMAND,
        "chatdemo:Application",
        "--app-dir",
        str(EXAMPLES / "websocket"),
        "--processes",
        str(processes),
        "--port",
        "0",
        "--broadcast",
        redis.url,
    ]


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install -y nginx)")
def test_two_servers_behind_nginx_every_chat_client_gets_every_post_once_in_one_order(
    running_redis: RedisServer, tmp_path: Path
) -> None:
    assert NGINX is not None
    with (
        serving.running(argv=chat(running_redis)) as a,
        serving.running(argv=chat(running_redis)) as b,
    ):
        held = [(s.pid, serving.port_of(serving.url(s))) for s in (a, b)]

        def on_both() -> bool:
            # nginx takes turns: the clients are on both servers.
            return all(workers_holding_connections(pid, port) for pid, port in held)

        with nginx_in_front(tmp_path, held[0][1], held[1][1], WEBSOCKETS) as front:
            ws = front.replace("http://", "ws://") + "/chatsocket"
            received = asyncio.run(asyncio.wait_for(websocket_chat(ws, on_both), 60))
        first = received[0]
        assert sorted(body for body, _ in first) == sorted(f"post {i}" for i in range(POSTS))
        seqs = [Position.parse(cursor).seq for _, cursor in first]
        assert seqs == sorted(set(seqs))
        for client, messages in enumerate(received):
            assert messages == first, f"client {client}: {len(messages)} messages"
        # The workers' count is not Redis's: one connection per server.
        one_hub_each(running_redis, a, b)


def servers(redis: RedisServer, **settings: Any) -> Any:
    """Two servers of tests/broadcastapp.py sharing ``redis``."""
    return (
        serving.running(APP, 2, broadcast=redis.url, **settings),
        serving.running(APP, 2, broadcast=redis.url, **settings),
    )


def test_a_long_poll_client_resumes_by_cursor_on_the_other_server(
    running_redis: RedisServer,
) -> None:
    first, second = servers(running_redis)
    with first as a, second as b:
        port_a, port_b = (serving.port_of(serving.url(s)) for s in (a, b))

        async def test(crew: Crew) -> None:
            client = Client("long poll")
            crew.start(long_poll(port_a, client), client)
            await asyncio.sleep(0.5)
            storm = Storm()
            crew.start(publishing(port_a, storm, count=10, rate=100))
            crew.start(publishing(port_b, storm, count=10, rate=100))
            await until(crew, lambda: client.received >= 100, "the client receives", [client])
            # Its next poll goes to the other server, from its cursor.
            await crew.stop(client)
            crew.start(long_poll(port_b, client), client)
            await until(crew, each_received([client], 200), "it receives on b", [client])
            await crew.end()
            assert client.gaps() == [], client
            assert unreported(client.events) == [], client
            assert set(client.workers) & set(procs.children_of(a.pid))
            assert set(client.workers) & set(procs.children_of(b.pid))
            assert storm.failed == 0 and storm.errors == []

        run(test)


def started_clients(crew: Crew, ports: list[int]) -> list[Client]:
    clients = []
    for i, port in enumerate(ports):
        for kind in ("websocket", "long poll"):
            client = Client(f"{kind} {i}")
            work = websocket(port, client) if kind == "websocket" else long_poll(port, client)
            crew.start(work, client)
            clients.append(client)
    return clients


async def in_a_storm(crew: Crew, ports: list[int], settle: float) -> tuple[list[Client], Storm]:
    """A WebSocket and a long poll on each server, given ``settle`` seconds,
    then a storm published through both, once each client has received 100."""
    clients = started_clients(crew, ports)
    await asyncio.sleep(settle)
    storm = Storm()
    for port in ports:
        crew.start(publishing(port, storm, count=10, rate=STORM / 2))
    await until(crew, each_received(clients, 100), "every client receives", clients)
    return clients, storm


def test_redis_restarted_empty_in_a_publish_storm_is_a_gap_and_delivery_resumes(
    running_redis: RedisServer,
) -> None:
    first, second = servers(running_redis)
    with first as a, second as b:
        ports = [serving.port_of(serving.url(s)) for s in (a, b)]

        async def test(crew: Crew) -> None:
            clients, storm = await in_a_storm(crew, ports, 0.5)
            with serving.Load(serving.url(a), "/pid") as load:
                killed = time.monotonic()
                running_redis.kill()
                await asyncio.sleep(1.0)
                failed = storm.failed
                running_redis.start()
                back = time.monotonic()
                await until(
                    crew,
                    each_received(clients, 50),
                    "every client receives again",
                    clients,
                    timeout=RESUMES_WITHIN + 5,
                )
                resumed = time.monotonic() - back
            await crew.end()
            assert load.failures == [] and load.pids, load.failures
            # Publishes while Redis was away failed, each said so to its caller.
            assert failed > 0 and storm.errors == []
            for client in clients:
                assert unreported(client.events) == [], client
                gaps = client.gaps(killed)
                assert client.gaps() == gaps, client
                if client.name.startswith("websocket"):
                    # Its subscription lives on, told once; it stays open.
                    assert [g.gap for g in gaps] == ["new epoch"], client
                    assert client.closes == [], client
                else:
                    # Each poll from a cursor of the old epoch is told.
                    assert gaps and {g.gap for g in gaps} == {"new epoch"}, client
            epochs = {Position.parse(str(c.cursor)).epoch for c in clients}
            assert len(epochs) == 1, epochs
            assert resumed < RESUMES_WITHIN + 1, resumed
            one_hub_each(running_redis, a, b)

        run(test)
        for s in (a, b):
            assert len(s.matching("messages are not crossing machines")) == 1, s.output
            assert s.matching("reached again")


@pytest.mark.parametrize("aged", [False, True], ids=["young", "aged"])
def test_the_hubs_connection_killed_by_redis_loses_nothing(
    running_redis: RedisServer, aged: bool
) -> None:
    first, second = servers(running_redis, **(SHORT if aged else {}))
    with first as a, second as b:
        ports = [serving.port_of(serving.url(s)) for s in (a, b)]
        serving.live_workers(a, 2)

        async def test(crew: Crew) -> None:
            clients, storm = await in_a_storm(crew, ports, AGE if aged else 0.5)
            (hub_a,) = [
                c
                for c in running_redis.hubs()
                if hub_pid(c) in procs.hubs() & set(procs.every_child(a.pid))
            ]
            with running_redis.client() as client:
                assert client.client_kill_filter(_id=hub_a["id"]) == 1
            killed = time.monotonic()
            await until(
                crew,
                each_received(clients, 100),
                "every client receives after",
                clients,
                timeout=RESUMES_WITHIN + 5,
            )
            await crew.end()
            for client in clients:
                # Server a's subscribers missed nothing: the stream had it.
                assert client.gaps() == [], client
                assert unreported(client.events) == [], client
            assert time.monotonic() - killed < 30
            (again,) = [
                c
                for c in running_redis.hubs()
                if c["id"] != hub_a["id"] and hub_pid(c) == hub_pid(hub_a)
            ]
            assert again
            one_hub_each(running_redis, a, b)

        run(test)


def test_redis_down_at_start_the_server_serves_and_messages_flow_once_it_is_up(
    redis_server: RedisServer,
) -> None:
    with serving.running(APP, 3, broadcast=redis_server.url) as s:
        port = serving.port_of(serving.url(s))
        serving.live_workers(s, 3)
        s.wait_line("messages are not crossing machines")

        async def test(crew: Crew) -> None:
            client = Client("websocket")
            crew.start(websocket(port, client), client)
            await until(crew, lambda: bool(client.workers), "the websocket opens", [client])
            # A publish says it failed, at once: it does not wait on Redis.
            asked = time.monotonic()
            status, body = await request(port, "POST", f"/publish?topic={TOPIC}&count=3")
            assert (status, body["published"], body["failed"]) == (200, 0, 3), body
            assert time.monotonic() - asked < 2
            await asyncio.sleep(5 - (time.monotonic() - asked))
            redis_server.start()
            up = time.monotonic()
            while client.received == 0:
                assert time.monotonic() - up < RESUMES_WITHIN, client
                status, body = await request(port, "POST", f"/publish?topic={TOPIC}")
                await asyncio.sleep(0.05)
            await crew.end()
            assert unreported(client.events) == [], client

        run(test)
        assert len(s.matching("messages are not crossing machines")) == 1, s.output
        # Three workers, one connection.
        one_hub_each(redis_server, s)


def test_a_cursor_below_the_trimmed_history_is_a_gap_then_what_is_kept(
    running_redis: RedisServer,
) -> None:
    with serving.running(APP, 2, broadcast=running_redis.url) as s:
        port = serving.port_of(serving.url(s))

        async def test(crew: Crew) -> None:
            await request(port, "POST", f"/publish?topic={TOPIC}&count=1")
            with running_redis.client() as redis:
                ((entry_id, _),) = redis.xrange(PREFIX + TOPIC)
            cursor = Position.parse(entry_id.decode())
            await request(port, "POST", f"/publish?topic={TOPIC}&count=3000&at_once=1", 60)
            status, body = await request(port, "GET", f"/poll?topic={TOPIC}&cursor={cursor}")
            assert status == 200
            gap, *messages = body["events"]
            assert gap["gap"] == "history" and gap["after"] == str(cursor), gap
            assert messages and messages[0]["c"] == gap["resume"], messages[:1]
            # Then what the stream kept (about its last 1,000), in order.
            seqs = [Position.parse(m["c"]).seq for m in messages]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            assert 1 < seqs[0] <= 3001 - 1000, seqs[0]

        run(test)


def test_a_broadcast_url_is_checked_at_every_door_before_any_fork() -> None:
    kind, message = serving.refused(APP, broadcast="redis://")
    assert kind == "ValueError" and "broadcast" in message and "redis://" in message, message
    kind, message = serving.refused(APP, broadcast="redis://127.0.0.1:x/0")
    assert kind == "ValueError" and "broadcast='redis://127.0.0.1:x/0'" in message, message
    kind, message = serving.refused(APP, broadcast="http://127.0.0.1/")
    assert "one of hub, off, or a redis:// or rediss:// URL" in message, message
    kind, message = serving.refused(APP, hide=("redis",), broadcast="redis://127.0.0.1:1/0")
    assert kind == "StartupError", message
    assert "pip install 'tornado-prefork[redis]'" in message, message
    done = serving.command(APP, "--broadcast", "mqtt://x")
    assert (
        done.returncode == 2 and "--broadcast must be one of hub, off, or a redis://" in done.stderr
    )
    done = serving.command(APP, env={"TORNADO_PREFORK_BROADCAST": "redis:/x"})
    assert done.returncode != 0 and "TORNADO_PREFORK_BROADCAST must be" in done.stderr, done.stderr


def test_docs_the_command_that_docs_broadcast_shows_is_the_one_run_here() -> None:
    shown = (procs.ROOT / "docs" / "broadcast.md").read_text()
    redis = RedisServer(Path("/nonexistent"))
    redis.url = "redis://127.0.0.1:6379/0"
    line = " ".join(["tornado-prefork", *chat(redis)[1:2], "--app-dir", "examples/websocket"])
    assert " ".join([line, *chat(redis)[4:]]) in shown


def test_a_redis_that_stops_answering_is_left_and_what_it_held_is_replayed(
    running_redis: RedisServer,
) -> None:
    first, second = servers(running_redis)
    with first as a, second as b:
        ports = [serving.port_of(serving.url(s)) for s in (a, b)]

        async def test(crew: Crew) -> None:
            clients, storm = await in_a_storm(crew, ports, 0.5)
            assert running_redis.process is not None
            with serving.Load(serving.url(a), "/pid") as load:
                running_redis.process.send_signal(signal.SIGSTOP)
                try:
                    # Publishes wait for an answer, then fail once the hub
                    # leaves the silent Redis: none hangs.
                    await asyncio.to_thread(a.wait_line, "it answered nothing for", 1, 10)
                    await until(crew, lambda: storm.failed > 0, "a publish fails", [storm])
                finally:
                    running_redis.process.send_signal(signal.SIGCONT)
                await until(
                    crew,
                    each_received(clients, 100),
                    "every client receives again",
                    clients,
                    timeout=RESUMES_WITHIN + 5,
                )
            await crew.end()
            assert load.failures == [] and load.pids, load.failures
            for client in clients:
                # The streams were kept: what was published is all there.
                assert client.gaps() == [], client
                assert unreported(client.events) == [], client

        run(test)


def test_redis_names_hands_over_push_messages_on_a_command_connection(
    running_redis: RedisServer,
) -> None:
    """The private name of redis-py that `_system/redis_names.py` uses, on
    the redis-py installed: pushes and answers told apart on one connection."""
    from redis.asyncio import Connection

    from tornado_prefork._system import redis_names

    class Pushed(list[Any]):
        pass

    async def pushed(push: list[Any]) -> Pushed:
        return Pushed(push)

    async def main() -> list[Any]:
        connection = Connection(port=running_redis.port, protocol=3)
        await connection.connect()
        try:
            redis_names.on_push(connection, pushed)
            await connection.send_command("SUBSCRIBE", "c")
            await connection.send_command("PUBLISH", "c", "m")
            await connection.send_command("PING")
            return [await connection.read_response(push_request=True) for _ in range(4)]
        finally:
            await connection.disconnect()

    subscribed, message, count, pong = asyncio.run(asyncio.wait_for(main(), 10))
    assert isinstance(subscribed, Pushed) and subscribed[0] == b"subscribe"
    assert isinstance(message, Pushed) and message == [b"message", b"c", b"m"]
    assert not isinstance(count, Pushed) and count == 1
    assert not isinstance(pong, Pushed) and pong == b"PONG"


async def first_answer(redis: RedisServer, ask: Any) -> Any:
    """What a hub's upstream of its own answers to ``ask(upstream)``, asked
    as it starts, before its connection is made: the first command on it."""
    from tornado_prefork._broadcast.upstream import Upstream

    upstream = Upstream(redis.url, lambda *_: None, lambda _: None)
    life = asyncio.ensure_future(upstream.run())
    try:
        return await asyncio.wait_for(ask(upstream), 10)
    finally:
        life.cancel()


def publish_once(redis: RedisServer, data: bytes) -> Position:
    from tornado_prefork._broadcast.codec import Kind

    position: Position = asyncio.run(
        first_answer(redis, lambda upstream: upstream.publish(TOPIC, Kind.BYTES, data))
    )
    return position


def test_a_request_as_the_hub_starts_waits_for_its_first_connection_and_scripts(
    running_redis: RedisServer,
) -> None:
    """A worker whose app reads `broadcast.recent()` at start can ask before
    its hub's connection to Redis is made, or while the hub is still loading
    its scripts: the request waits for that first connection and is answered
    (once a publish, once a history, each the first command on it)."""
    from tornado_prefork._broadcast.codec import Kind

    published = publish_once(running_redis, b"m")
    assert published.seq == 1, published
    epoch, oldest, last, entries = asyncio.run(
        first_answer(running_redis, lambda u: u.history(TOPIC, Position("0", 0)))
    )
    assert (epoch, oldest, last) == (published.epoch, 1, 1)
    assert entries == [(1, Kind.BYTES, b"m")]


def test_a_streams_epoch_key_lives_and_dies_with_it_and_is_rebuilt_if_deleted(
    running_redis: RedisServer,
) -> None:
    """A publish reads the stream's epoch from the key beside it. That key
    expires with the stream; deleted by hand, it is read again from the
    stream (the same epoch, seq on); a stream emptied by hand starts anew."""
    from tornado_prefork._broadcast.upstream import EPOCHS

    first = publish_once(running_redis, b"1")
    with running_redis.client() as redis:
        assert redis.get(EPOCHS + TOPIC) == first.epoch.encode()
        ttls = redis.pttl(PREFIX + TOPIC), redis.pttl(EPOCHS + TOPIC)
        assert abs(ttls[0] - ttls[1]) < 1000 and ttls[0] > 23 * 3600 * 1000, ttls
        redis.delete(EPOCHS + TOPIC)
    assert publish_once(running_redis, b"2") == Position(first.epoch, 2)
    with running_redis.client() as redis:
        assert redis.get(EPOCHS + TOPIC) == first.epoch.encode()
        redis.delete(EPOCHS + TOPIC)
        redis.xtrim(PREFIX + TOPIC, maxlen=0)
    again = publish_once(running_redis, b"3")
    assert again.seq == 1 and int(again.epoch) > int(first.epoch), (first, again)
