"""Tornado's chat demos, ported to tornado_prefork.broadcast (examples/), at 4
workers: every client gets every message exactly once, in one order, whichever
worker it polls or posts through, and resumes by cursor on any worker."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests import procs, serving

EXAMPLES = procs.ROOT / "examples"
POSTS = 200
CLIENTS = 8


def example(name: str, app: str) -> list[str]:
    """The command line that serves an example at 4 workers on a free port."""
    return [serving.COMMAND, app, "--app-dir", str(EXAMPLES / name), "--processes", "4"] + [
        "--port",
        "0",
    ]


def test_docs_the_command_that_docs_broadcast_shows_is_the_one_run_here() -> None:
    shown = (procs.ROOT / "docs" / "broadcast.md").read_text()
    command = example("chat", "chatdemo:make_app")
    line = " ".join(["tornado-prefork", command[1], *command[2:3], "examples/chat", *command[4:6]])
    assert line + " --port " in shown, line


def xsrf(base: str) -> str:
    """The page sets the _xsrf cookie; its value is also the form field."""
    conn = serving.connect(base)
    conn.request("GET", "/")
    response = conn.getresponse()
    response.read()
    conn.close()
    cookie = response.getheader("Set-Cookie") or ""
    assert cookie.startswith("_xsrf="), cookie
    return cookie.split(";")[0].split("=", 1)[1]


def post(base: str, path: str, token: str, timeout: float = 20, **fields: str) -> Any:
    """One POST on a fresh connection (so it lands on any worker)."""
    conn = serving.connect(base, timeout)
    try:
        body = urllib.parse.urlencode({**fields, "_xsrf": token})
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"_xsrf={token}",
            "Connection": "close",
        }
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200, (response.status, data[:300])
        return json.loads(data)
    finally:
        conn.close()


def workers_holding_connections(parent: int, port: int) -> set[int]:
    """The workers of ``parent`` that hold an established connection on ``port``."""
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                established.add(f"socket:[{fields[9]}]")
    holding = set()
    for pid in procs.children_of(parent):
        try:
            fds = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if fds & established:
            holding.add(pid)
    return holding


def test_long_poll_chat_at_4_workers_every_client_gets_every_post_once_in_order() -> None:
    with serving.running(argv=example("chat", "chatdemo:make_app")) as s:
        base = serving.url(s)
        token = xsrf(base)
        start = post(base, "/a/message/new", token, body="start")["id"]
        received: dict[int, list[str]] = {i: [] for i in range(CLIENTS)}
        errors: list[str] = []

        def poll(client: int) -> None:
            cursor = start
            deadline = time.monotonic() + 60
            try:
                while len(received[client]) < POSTS and time.monotonic() < deadline:
                    # Each poll is a new connection: the next lands on any worker,
                    # and resumes there by the cursor of the last message seen.
                    messages = post(base, "/a/message/updates", token, cursor=cursor)["messages"]
                    received[client] += [m["body"] for m in messages]
                    cursor = messages[-1]["id"]
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"client {client}: {e!r}")

        pollers = [threading.Thread(target=poll, args=(i,)) for i in range(CLIENTS)]
        for thread in pollers:
            thread.start()
        # Eight polls waiting at once are spread over the workers.
        deadline = time.monotonic() + 10
        while len(spread := workers_holding_connections(s.pid, serving.port_of(base))) < 2:
            assert time.monotonic() < deadline, spread
            time.sleep(0.05)
        sent = [f"post {i}" for i in range(POSTS)]
        for body in sent:
            post(base, "/a/message/new", token, body=body)
        for thread in pollers:
            thread.join(70)
        assert not errors, errors
        for client, bodies in received.items():
            assert bodies == sent, f"client {client}: {len(bodies)} messages"
        # The page shows the history, from any worker.
        for _ in range(4):
            conn = serving.connect(base)
            conn.request("GET", "/", headers={"Connection": "close"})
            page = conn.getresponse().read().decode()
            conn.close()
            assert "post 199" in page and "post 0" not in page.split("post 199")[1]


def test_websocket_chat_at_4_workers_every_client_gets_every_post_once_in_order() -> None:
    with serving.running(argv=example("websocket", "chatdemo:Application")) as s:
        base = serving.url(s)
        ws = base.replace("http://", "ws://") + "/chatsocket"
        port = serving.port_of(base)

        def spread() -> bool:
            return len(workers_holding_connections(s.pid, port)) >= 2

        received = asyncio.run(asyncio.wait_for(websocket_chat(ws, spread), 60))
        # Posts sent through different workers race to the hub: its order is
        # the one order, the same for every client, each post exactly once.
        first = received[0]
        assert sorted(body for body, _ in first) == sorted(f"post {i}" for i in range(POSTS))
        seqs = [int(cursor.rsplit("-", 1)[1]) for _, cursor in first]
        assert seqs == sorted(set(seqs))
        for client, messages in enumerate(received):
            assert messages == first, f"client {client}: {len(messages)} messages"


async def websocket_chat(ws: str, spread: Callable[[], bool]) -> list[list[tuple[str, str]]]:
    """What each of `CLIENTS` WebSocket clients of the chat at ``ws``
    received of `POSTS` posts sent through random clients, once
    ``spread()`` says the clients are spread over the workers:
    [(body, cursor)] each."""
    clients = [await websocket_connect(HTTPRequest(ws)) for _ in range(CLIENTS)]
    deadline = time.monotonic() + 10
    while not spread():
        assert time.monotonic() < deadline, "the clients are not spread over the workers"
        await asyncio.sleep(0.05)
    received: list[list[tuple[str, str]]] = [[] for _ in clients]
    # A client is subscribed once its own hello comes back (its worker told
    # the hub it wants the topic before it published the hello).
    subscribed = [asyncio.Event() for _ in clients]

    async def read(i: int) -> None:
        while len(received[i]) < POSTS:
            text = await clients[i].read_message()
            assert isinstance(text, str), text
            message = json.loads(text)
            if message["body"] == f"hello {i}":
                subscribed[i].set()
            elif not message["body"].startswith("hello"):
                received[i].append((message["body"], message["cursor"]))

    readers = [asyncio.ensure_future(read(i)) for i in range(len(clients))]
    for i, client in enumerate(clients):
        await client.write_message(json.dumps({"body": f"hello {i}"}))
    await asyncio.gather(*(event.wait() for event in subscribed))
    for n in range(POSTS):
        await random.choice(clients).write_message(json.dumps({"body": f"post {n}"}))
        # One post at a time through random workers: the order is the posting order.
        await asyncio.sleep(0.002)
    await asyncio.gather(*readers)
    for client in clients:
        client.close()
    return received


def test_a_thousand_long_poll_resumes_at_once_are_served_from_the_history() -> None:
    with serving.running(argv=example("chat", "chatdemo:make_app")) as s:
        base = serving.url(s)
        token = xsrf(base)
        ids = [post(base, "/a/message/new", token, body=f"m{i}")["id"] for i in range(50)]
        cursor = ids[9]
        answers = asyncio.run(asyncio.wait_for(resumes(base, token, cursor, 1000), 60))
        expected = [f"m{i}" for i in range(10, 50)]
        assert len(answers) == 1000
        for bodies in answers:
            assert bodies == expected


async def resumes(base: str, token: str, cursor: str, count: int) -> list[list[str]]:
    parts = urllib.parse.urlsplit(base)
    body = urllib.parse.urlencode({"cursor": cursor, "_xsrf": token}).encode()
    request = (
        f"POST /a/message/updates HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Cookie: _xsrf={token}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body

    async def one() -> list[str]:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(request)
        response = await reader.read()
        writer.close()
        head, _, payload = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        return [m["body"] for m in json.loads(payload)["messages"]]

    return list(await asyncio.gather(*(one() for _ in range(count))))
