"""The command line end to end: tornado-prefork and python -m tornado_prefork."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest

from tests import procs, serving
from tests.serving import COMMAND

run = serving.command


@pytest.mark.tornado_api
def test_start_answer_ctrl_c_clean_exit() -> None:
    argv = [COMMAND, "tests.webapp:make_app", "--processes", "2", "--port", "0"]
    with serving.running(argv=argv) as s:
        base = serving.url(s)
        assert base.startswith("http://127.0.0.1:")  # the default address
        workers = {serving.get(base)[1]["pid"] for _ in range(4)}
        assert all(procs.state(pid) for pid in workers)
        s.stop(signal.SIGINT, group=True)
        assert procs.wait_dead(list(workers), timeout=1) == []
    assert "Traceback" not in s.output


def test_help_documents_every_flag_with_its_default() -> None:
    result = run("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag, default in [
        ("--processes N", "(default: 0)"),
        ("--port P", "(default: 8888)"),
        ("--address A", "(default: 127.0.0.1)"),
        ("--unix-socket PATH", "(default: None)"),
        ("--reuse-port", "(default: False)"),
        ("--graceful-timeout S", "(default: 30.0)"),
        ("--backlog N", "(default: 2048)"),
        ("--certfile FILE", "(default: None)"),
        ("--keyfile FILE", "(default: None)"),
        ("--xheaders", "(default: False)"),
        ("--log-level L", "(default: info)"),
    ]:
        after = text.split(f" {flag} ", 1)[1]
        assert default in after.split(" --", 1)[0], flag


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tests.webapp:app", "--bogus"], "unrecognized arguments: --bogus"),
        (["tests.webapp:app", "--processes", "-1"], "--processes must be >= 0, not '-1'"),
        (["tests.webapp:app", "--port", "http"], "--port must be an int, not 'http'"),
        (["tests.webapp:app", "--port", "70000"], "--port must be from 0 to 65535, not '70000'"),
        (["tests/webapp.py"], "APP 'tests/webapp.py' is not of the form 'package.module:name'"),
        (["tests.webapp:app", "--certfile", "c.pem"], "--certfile and --keyfile go together"),
        ([], "the following arguments are required: APP"),
    ],
)
def test_bad_flags_and_values_exit_2(args: list[str], message: str) -> None:
    # One line, naming the flag as the user typed it; no usage block.
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr == f"tornado-prefork: error: {message} (see tornado-prefork --help)\n"


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("tests.nosuch:app", "tornado-prefork: error: cannot import tests.nosuch"),
        ("tests.webapp:broken_factory", "tornado-prefork: error: the workers failed to start"),
    ],
)
def test_app_that_cannot_start_exits_1_with_a_message(app: str, message: str) -> None:
    result = run(app, "--port", "0", "--processes", "2")
    assert result.returncode == 1
    assert message in result.stderr


def test_lifecycle_flags_end_to_end(tmp_path: Path) -> None:
    sock = tmp_path / "app.sock"
    pid_file = tmp_path / "app.pid"
    argv = [
        COMMAND,
        "tests.webapp:make_app",
        "--processes=1",
        f"--unix-socket={sock}",
        "--unix-socket-mode=660",
        f"--pid-file={pid_file}",
        "--max-requests=3",
        "--timeout=5",
    ]
    with serving.running(argv=argv) as s:
        assert serving.url(s) == f"unix:{sock}"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660
        assert pid_file.read_text() == f"{s.pid}\n"
        pids: list[int] = []
        deadline = time.monotonic() + 10
        # Replaced after 3 requests, once its successor is ready.
        while len(set(pids)) < 2 and time.monotonic() < deadline:
            pids.append(serving.get(f"unix:{sock}")[1]["pid"])
        assert len(set(pids)) == 2 and pids.index(pids[-1]) >= 3, pids
        s.stop(group=True)
    assert not sock.exists() and not pid_file.exists()


@pytest.mark.tornado_api
@pytest.mark.parametrize(
    ("app", "says"),
    [
        ("tests.mainapp:main", "called Application.listen() ("),
        ("tests.mainapp:main_sync", "called Application.listen() ("),
        ("tests.mainapp:main_bind", "called HTTPServer.bind() ("),
        ("tests.mainapp:main_sockets", "called HTTPServer.add_sockets() ("),
        ("tests.mainapp:setup", "gave NoneType None, not a tornado.web.Application"),
    ],
)
def test_a_main_instead_of_a_factory_fails_once_naming_the_factory(app: str, says: str) -> None:
    # Tornado's usual main() serves the app itself and never returns it: the
    # server must stop at once, say what to give it instead, and leave nothing.
    argv = [COMMAND, app, "--processes", "2", "--port", "0"]
    with procs.Scenario(argv) as s:
        code = s.finish(timeout=15)
    assert code == 1, s.output
    assert s.output.count(f"{app} {says}") == 1, s.output
    assert "Point the server at a function that returns the tornado.web.Application, " in s.output
    assert "e.g. tests.mainapp:make_app: the server listens for every worker" in s.output
    assert "keeps serving" not in s.output and "ready_timeout" not in s.output
    assert s.lines[-1] == (
        "tornado-prefork: error: the workers failed to start: every one exited before it was ready"
    )
    assert procs.wait_dead(procs.children_of(os.getpid()), timeout=1) == []


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--address", "None"], {}), ([], {"TORNADO_PREFORK_ADDRESS": "None"})],
    ids=["flag", "environment"],
)
def test_address_none_is_every_interface(args: list[str], env: dict[str, str]) -> None:
    # As --help says, None: every interface (the command line's default is 127.0.0.1).
    argv = [COMMAND, "tests.webapp:make_app", "--processes", "1", "--port", "0", *args]
    with serving.running(argv=argv, env=env) as s:
        base = serving.url(s)
        assert base.startswith("http://0.0.0.0:"), s.output
        assert serving.get(f"http://127.0.0.1:{serving.port_of(base)}")[0] == 200


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--timeout", "nan"], {}, "--timeout must be >= 0 and at most 86400 (a day), not 'nan'"),
        (
            [],
            {"TORNADO_PREFORK_TIMEOUT": "nan"},
            "TORNADO_PREFORK_TIMEOUT must be >= 0 and at most 86400 (a day), not 'nan'",
        ),
        (
            ["--graceful-timeout", "inf"],
            {},
            "--graceful-timeout must be at most 86400 (a day), not 'inf'",
        ),
        (
            ["--backlog", "99999999999"],
            {},
            "--backlog must be at most 2147483647 (what listen() takes), not '99999999999'",
        ),
    ],
    ids=["timeout-nan", "timeout-nan-environment", "graceful-timeout-inf", "backlog"],
)
def test_a_number_the_server_cannot_act_on_is_one_line_and_exit_2_before_any_fork(
    args: list[str], env: dict[str, str], message: str
) -> None:
    # nan declared every worker hung at once, in a loop; inf crashed the
    # parent at the first SIGTERM; the backlog ended in listen()'s traceback.
    argv = [COMMAND, "tests.webapp:make_app", "--processes", "2", "--port", "0", *args]
    with procs.Scenario(argv, env=env, merge=False) as s:
        code = s.finish(timeout=10)
    assert code == 2, s.stderr
    # Nothing logged (the parent says "Starting 2 processes" before it forks).
    assert s.output == ""
    assert s.stderr.splitlines() == [
        f"tornado-prefork: error: {message} (see tornado-prefork --help)"
    ]


@pytest.mark.parametrize("timeout", ["86400", "0"], ids=["timeout-a-day", "timeout-off"])
def test_the_largest_numbers_run_and_stop_cleanly(timeout: str) -> None:
    # The largest value of every number at once: each deadline of the parent
    # (a day, or with --timeout 0 a worker's age of a week) must fit poll()'s
    # timeout, and a SIGTERM must drain within graceful_timeout's day.
    largest = {
        "--backlog": "2147483647",
        "--graceful-timeout": "86400",
        "--max-restarts": "1000000000",
        "--min-uptime": "86400",
        "--backoff-cap": "86400",
        "--ready-timeout": "86400",
        "--timeout": timeout,
        "--max-requests": "1000000000",
        "--max-requests-jitter": "1000000000",
        "--max-worker-age": "604800",
        "--max-body-size": str(2**63 - 1),
        "--max-buffer-size": str(2**63 - 1),
        "--idle-connection-timeout": "86400",
        "--body-timeout": "86400",
        "--chunk-size": str(2**30),
        "--max-header-size": str(2**63 - 1),
    }
    argv = [COMMAND, "tests.webapp:make_app", "--processes", "1", "--port", "0"]
    argv += [part for flag, value in largest.items() for part in (flag, value)]
    with serving.running(argv=argv) as s:
        base = serving.url(s)
        assert serving.get(base)[0] == 200
        s.stop()
    assert "Traceback" not in s.output, s.output
