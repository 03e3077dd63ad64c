"""Tornado's demos/helloworld and demos/file_upload, ported (examples/), at 4
workers: started the way their README says, as a user would."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from tests import procs, serving, test_docs

EXAMPLES = procs.ROOT / "examples"


def request(
    base: str, method: str, path: str, body: bytes = b"", **headers: str
) -> tuple[int, bytes]:
    conn = serving.connect(base)
    try:
        conn.request(method, path, body, {"Connection": "close", **headers})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_helloworld_runs_as_python_helloworld_py_at_4_workers() -> None:
    argv = [sys.executable, str(EXAMPLES / "helloworld" / "helloworld.py"), "--port=0"]
    with serving.running(argv=[*argv, "--processes=4"]) as s:
        base = serving.url(s)
        assert serving.live_workers(s, 4)
        for _ in range(8):
            assert request(base, "GET", "/") == (200, b"Hello, world")


def test_file_upload_receives_a_multipart_post_and_a_streamed_put_at_4_workers() -> None:
    argv = [serving.COMMAND, "file_receiver:make_app", "--app-dir", str(EXAMPLES / "file_upload")]
    with serving.running(argv=[*argv, "--processes", "4", "--port", "0"]) as s:
        base = serving.url(s)
        assert serving.live_workers(s, 4)
        boundary = uuid.uuid4().hex
        form = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="notes.txt"\r\n'
            "Content-Type: text/plain\r\n\r\n"
            "some notes\r\n"
            f"--{boundary}--\r\n"
        ).encode()
        content_type = f"multipart/form-data; boundary={boundary}"
        assert request(base, "POST", "/post", form, **{"Content-Type": content_type}) == (
            200,
            b"OK",
        )
        s.wait_line('POST "notes.txt" "text/plain" 10 bytes', timeout=5)
        big = b"x" * (3 * 1024 * 1024)
        put = request(base, "PUT", "/big%20file.bin", big, **{"Content-Type": "application/x"})
        assert put == (200, b"OK")
        s.wait_line(f'PUT "big file.bin" "application/x" {len(big)} bytes', timeout=5)


def test_docs_porting_shows_the_examples_as_they_are() -> None:
    """docs/porting.md runs its "after" samples; they are examples/porting/, word for word."""
    shown = {
        block.path: block.text.split("\n", 1)[1]
        for block in test_docs.blocks_of(Path("docs/porting.md"))
        if block.path is not None
    }
    files = sorted((EXAMPLES / "porting").glob("*.py"))
    assert sorted(shown) == [f"examples/porting/{f.name}" for f in files]
    for path, text in shown.items():
        assert (procs.ROOT / path).read_text() == text, path


BEFORE = """
import asyncio
import tornado


class MainHandler(tornado.web.RequestHandler):
    def get(self):
        self.write("Hello, world")


async def main():
    application = tornado.web.Application([(r"/", MainHandler)])
    http_server = tornado.httpserver.HTTPServer(application)
    http_server.listen(8888)
    await asyncio.Event().wait()
"""


def test_pointed_at_a_main_that_listens_it_fails_once_showing_the_factory(tmp_path: Path) -> None:
    (tmp_path / "helloworld.py").write_text(BEFORE)
    result = serving.command("helloworld:main", "--app-dir", str(tmp_path), "--port", "0")
    assert result.returncode == 1
    factory = "'def make_app(): return tornado.web.Application([(r\"/\", MainHandler)])'"
    assert result.stderr.count(factory) == 1, result.stderr
    assert "then helloworld:make_app" in result.stderr
