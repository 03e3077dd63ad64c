"""The command line's flags end to end: HTTPServer settings, environment
variables, arguments after --, logging files, TLS, one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest

from tests import procs, serving
from tests.serving import MODULE
from tornado_prefork import __version__

APP = "tests.settingsapp:make_app"
run = serving.command


def post(base: str, size: int) -> int:
    """The status of a POST of ``size`` bytes, headers and body sent in one
    write: a server that refuses the body at its headers then closes with
    nothing unread, rather than with a reset that can beat its answer."""
    host, port = _addr(base)
    head = f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n\r\n"
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head.encode() + b"x" * size)
        reply = sock.makefile("rb").readline()
    return int(reply.split()[1])


def test_version() -> None:
    result = run("--version")
    assert (result.returncode, result.stdout) == (0, f"tornado-prefork {__version__}\n")


@pytest.mark.tornado_api
def test_every_http_flag_reaches_the_server_env_and_app_options() -> None:
    argv = [
        *MODULE,
        APP,
        "--port=0",
        "--no-keep-alive",
        "--decompress-request",
        "--max-body-size",
        "1000",
        "--max-buffer-size=5000000",
        "--idle-connection-timeout=0.5",
        "--body-timeout=9",
        "--chunk-size=4096",
        "--max-header-size=8192",
        "--xheaders",
        "--",
        "--greeting",
        "bonjour",
        "--debug=false",
    ]
    # The environment gives the worker count; the flag beats its max body size.
    env = {"TORNADO_PREFORK_PROCESSES": "2", "TORNADO_PREFORK_MAX_BODY_SIZE": "10"}
    with serving.running(argv=argv, env=env) as s:
        base = serving.url(s)
        assert any(line.endswith("with 2 workers") for line in s.lines), s.lines
        conn = serving.connect(base)
        conn.request("GET", "/", headers={"X-Real-Ip": "10.1.2.3"})
        params = json.loads(conn.getresponse().read())
        conn.close()
        assert params == {
            "pid": params["pid"],
            "no_keep_alive": True,
            "decompress": True,
            "chunk_size": 4096,
            "max_header_size": 8192,
            "header_timeout": 0.5,
            "max_body_size": 1000,
            "body_timeout": 9.0,
            "max_buffer_size": 5000000,
            "remote_ip": "10.1.2.3",
            "protocol": "http",
            "greeting": "bonjour",
            "debug": False,
        }
        assert (post(base, 1000), post(base, 1001)) == (200, 400)
        # A client that never sends its headers is dropped after the idle timeout.
        with socket.create_connection(_addr(base)) as c:
            c.settimeout(5)
            started = time.monotonic()
            assert c.recv(1) == b""
            assert time.monotonic() - started < 3
        s.stop(timeout=15, group=True)
    assert re.search(r"Stopped; the workers took \d+\.\d s to drain", s.output)


def _addr(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@pytest.mark.tornado_api
def test_defaults_reach_the_server() -> None:
    argv = [*MODULE, APP, "--port=0", "--processes=1"]
    with serving.running(argv=argv) as s:
        status, params = serving.get(serving.url(s))
        assert status == 200
        assert (params["header_timeout"], params["max_body_size"]) == (65.0, 100 * 1024 * 1024)
        assert (params["greeting"], params["debug"]) == ("hello", True)
        s.stop(timeout=15, group=True)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-body-size", "-1"], {}, "--max-body-size must be >= 0, not '-1'"),
        (["--idle-connection-timeout", "0"], {}, "--idle-connection-timeout must be > 0, not '0'"),
        (["--chunk-size", "big"], {}, "--chunk-size must be an int, not 'big'"),
        (["--unix-socket-mode", "999"], {}, "--unix-socket-mode must be an octal file mode"),
        (["--cert-reqs", "maybe"], {}, "--cert-reqs must be one of none, optional, required"),
        (["--ca-certs", "ca.pem"], {}, "--ca-certs need --certfile and --keyfile"),
        ([], {"TORNADO_PREFORK_PORT": "http"}, "TORNADO_PREFORK_PORT must be an int, not 'http'"),
        ([], {"TORNADO_PREFORK_XHEADERS": "maybe"}, "TORNADO_PREFORK_XHEADERS must be true or"),
        (["--log-config", "missing.json"], {}, "--log-config missing.json: [Errno 2]"),
        (["--access-logfile", "/no/such/dir/a.log"], {}, "--access-logfile /no/such/dir/a.log: "),
        (["--log-level", "loud"], {}, "--log-level must be one of debug, info, warning"),
    ],
)
def test_bad_values_exit_2_with_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run(APP, *args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"tornado-prefork: error: {message}"), result.stderr


@pytest.mark.tornado_api
def test_a_cipher_list_openssl_refuses_exits_1_naming_the_flag() -> None:
    result = run(
        APP,
        f"--certfile={serving.HERE / 'test.crt'}",
        f"--keyfile={serving.HERE / 'test.key'}",
        "--ciphers=NO-SUCH-CIPHER",
    )
    assert result.returncode == 1
    assert result.stderr.startswith("tornado-prefork: error: --ciphers 'NO-SUCH-CIPHER': ")


@pytest.mark.tornado_api
def test_client_certificates_required() -> None:
    crt, key = str(serving.HERE / "test.crt"), str(serving.HERE / "test.key")
    argv = [*MODULE, APP, "--port=0", "--processes=1", f"--certfile={crt}", f"--keyfile={key}"]
    argv += [f"--ca-certs={crt}", "--cert-reqs=required"]
    with procs.Scenario(argv) as s:
        host, port = _addr(serving.url(s).replace("https://", "http://"))
        anonymous = ssl.create_default_context(cafile=crt)
        with (
            pytest.raises((ssl.SSLError, ConnectionResetError)),
            socket.create_connection((host, port), timeout=10) as raw,
            anonymous.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            tls.recv(100)
        known = ssl.create_default_context(cafile=crt)
        known.load_cert_chain(crt, key)
        with (
            socket.create_connection((host, port), timeout=10) as raw,
            known.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data
        assert json.loads(data[data.index(b"{") :])["protocol"] == "https"
        s.stop(timeout=15, group=True)


def log_config(fmt: str) -> dict[str, object]:
    """A dictConfig document: the root logger to stdout in ``fmt``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"mine": {"format": fmt}},
        "handlers": {
            "out": {
                "class": "logging.StreamHandler",
                "formatter": "mine",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": "INFO", "handlers": ["out"]},
    }


@pytest.mark.tornado_api
def test_log_config_keeps_its_format_and_access_logfile_reopens(tmp_path: Path) -> None:
    (tmp_path / "log.json").write_text(json.dumps(log_config("MINE %(worker)s| %(message)s")))
    access = tmp_path / "access.log"
    argv = [*MODULE, APP, "--port=0", "--processes=1", f"--log-config={tmp_path / 'log.json'}"]
    argv.append(f"--access-logfile={access}")
    with procs.Scenario(argv) as s:
        base = serving.url(s)
        assert serving.get(base, "/?first")[0] == 200
        deadline = time.monotonic() + 10
        # The line is written once the response has gone out.
        while "GET /?first" not in access.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.rename(access, tmp_path / "access.log.1")
        s.signal(signal.SIGUSR1)
        # The parent reopens, then forwards SIGUSR1 to the worker, which does too.
        s.wait_line("log files reopened", count=2, timeout=10)
        deadline = time.monotonic() + 10
        assert serving.get(base, "/?second")[0] == 200
        while not access.exists() or "GET /?second" not in access.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        s.stop(timeout=15, group=True)
    assert "200 GET /?first" in (tmp_path / "access.log.1").read_text()
    assert "200 GET /?second" in access.read_text()
    output = s.output
    assert "GET /?" not in output  # the access log went to its file only
    assert any(line.startswith("MINE master| Serving on") for line in s.lines), output
    assert any(line.startswith("MINE worker 0| ") for line in s.lines), output


@pytest.mark.tornado_api
def test_access_logfile_dash_is_stderr(tmp_path: Path) -> None:
    # The other lines go to stdout: only the access log is on stderr.
    (tmp_path / "log.json").write_text(json.dumps(log_config("%(message)s")))
    argv = [*MODULE, APP, "--port=0", "--processes=1", "--access-logfile=-"]
    argv.append(f"--log-config={tmp_path / 'log.json'}")
    with procs.Scenario(argv, merge=False) as s:
        base = serving.url(s)
        assert serving.get(base, "/?hello")[0] == 200
        s.stop(timeout=15, group=True)
    assert "200 GET /?hello" in s.stderr
    assert "Serving on" not in s.stderr and "GET /" not in s.output


@pytest.mark.tornado_api
def test_app_dir_and_arguments_for_an_app_that_does_not_define_them(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text(
        "from tornado.web import Application\nfrom tests.settingsapp import ParamsHandler\n"
        "def make_app():\n    return Application([(r'/', ParamsHandler)])\n"
    )
    argv = [*MODULE, "elsewhere:make_app", f"--app-dir={tmp_path}", "--port=0", "--processes=1"]
    with serving.running(argv=argv + ["--", "--greeting=hi"]) as s:
        status, params = serving.get(serving.url(s))
        assert (status, params["greeting"]) == (200, "hi")
        s.stop(timeout=15, group=True)
    argv += ["--", "--no-such-option=1"]
    with procs.Scenario(argv) as s:
        assert s.finish(timeout=15) == 1
    # The module is imported in the parent (preload): one line, before any fork.
    assert s.lines[-1].startswith("tornado-prefork: error: cannot import elsewhere"), s.lines
    assert "Unrecognized command line option: 'no-such-option'" in s.lines[-1]
    assert "Starting" not in s.output
