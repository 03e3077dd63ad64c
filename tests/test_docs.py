"""Every code block of README.md and docs/*.md runs, or is checked against a
real server; the tables that describe the code are checked against it.
``pytest -k docs`` runs these tests alone.

A block is checked by its language, the word after its opening fence:

- ``python`` whose first line is ``# PATH`` (``# mypkg/web.py``): a file of the
  project the samples run in, written there (its directories get an empty
  ``__init__.py``) and compiled; another block must run it. Any other
  ``python`` block is a program run in that project: a test module (``def
  test_``, a ``TestCase``) by pytest, which must pass; a program that names a
  port is a server, which must answer there (one of tornado_prefork must say
  READY=1 and exit 0 on SIGTERM; Tornado's own is killed); any other must
  exit 0.
- ``sh``: its commands in turn. A server command (``tornado-prefork``,
  ``python -m tornado_prefork``, ``python FILE.py``, ``make demo``) starts a
  server that must say READY=1 and answer on every port it names; it runs
  until the next server command or the end of the block, where SIGTERM (or
  the sample's own ``kill``) must end it with status 0 and nothing left.
  ``curl`` must get a 2xx answer, ``kill`` and pipelines must exit 0,
  ``pip wheel`` is run on a copy of the checkout, ``pip install`` and ``make
  test`` are checked against pyproject.toml and the Makefile.
- ``ini``: systemd units. They must pass ``systemd-analyze verify`` where it
  exists; the service's ExecStart is run as systemd would run it (under
  ``systemd-socket-activate`` for the socket unit), its ExecReload and
  KillSignal sent.
- ``nginx``: run in front of the servers of its upstream (needs nginx).
- ``yaml``: a Kubernetes Deployment, whose container command is run and whose
  probes and scrape annotations must answer as they say, or a Prometheus
  scrape configuration, whose target must serve its metrics path.
- ``toml``: a file of the project (``# PATH`` first), which must parse.
- ``promql``: every metric and label it names must be in a server's scrape.

A block that only shows something (output, a diagram) says so on the line
before it: ``<!-- docs: not run (output) -->``.

The samples name the ports in `PORTS`: each is replaced by a free port (the
same one throughout a block and the project's files); a server command that
names no port listens on the one that stands for the default, 8888, given
through ``TORNADO_PREFORK_PORT`` (``PORT=`` for ``make demo``); ``0.0.0.0``
becomes ``127.0.0.1``, and paths under `PLACES` are put in the project's
directory. Every process runs in the project, on 127.0.0.1, with the
environment it is given, bounded in time; a server that a check leaves
running is killed with its process group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import http.client
import importlib
import json
import os
import pwd
import re
import select
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import tornado_prefork
from tests import procs
from tornado_prefork._settings import BY_NAME

ROOT = procs.ROOT
DOCS = [Path("README.md"), *sorted(p.relative_to(ROOT) for p in (ROOT / "docs").glob("*.md"))]
PACKAGE = ROOT / "tornado_prefork"
BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent

# The ports the samples name, and the places whose paths move into the project.
PORTS = ("80", "8000", "8001", "8888", "9000", "9100")
# A server command that names no port listens on the default one.
DEFAULT_PORT = str(BY_NAME["port"].default)
PORT = re.compile(r"(?<![\d.])(" + "|".join(PORTS) + r")(?![\d.])")
PLACES = {"/tmp/": "tmp/", "/run/": "run/", "/srv/myapp/": "", "/srv/myapp": ""}
PLACE = re.compile(r"(?<![\w./-])(/tmp/|/run/|/srv/myapp/?)")
# Where the README's files go in the project of a document: its root, and src/
# for `--app-dir src`; docs/testing.md says its project keeps them in src/.
LAYOUTS = {"docs/testing.md": ("src",)}
DEFAULT_LAYOUT = (".", "src")
# How long a sample's program may run, start or stop.
TIMEOUT = 30
# Illustrations that run nothing: a few, each with its reason.
MOST_NOT_RUN = 6

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```$", re.S | re.M)
NOT_RUN = re.compile(r"<!-- docs: not run \(([^)]+)\) -->\n\Z")
FILE_HEADER = re.compile(r"\A# ([\w./-]+\.(?:py|toml))\n")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a document."""

    doc: str
    line: int
    lang: str
    text: str
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def path(self) -> str | None:
        """The project file this block is, from its ``# PATH`` first line."""
        match = FILE_HEADER.match(self.text)
        return match.group(1) if match and self.lang in ("python", "toml") else None


def blocks_of(doc: Path) -> list[Block]:
    text = (ROOT / doc).read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()]
        not_run = NOT_RUN.search(before)
        found.append(
            Block(
                str(doc),
                before.count("\n") + 1,
                match.group(1).strip(),
                match.group(2),
                not_run.group(1) if not_run else None,
            )
        )
    return found


BLOCKS = [block for doc in DOCS for block in blocks_of(doc)]
RUN = [b for b in BLOCKS if b.not_run is None and b.path is None]


# --- The project a block runs in ----------------------------------------------------------


class Ports:
    """The free port that stands for each port a sample names, the same
    throughout one block, and those given for a default port."""

    def __init__(self) -> None:
        self.free: dict[str, int] = {}
        self.given: set[int] = set()

    def __getitem__(self, named: str) -> int:
        if named not in self.free:
            self.free[named] = self.fresh()
        return self.free[named]

    def fresh(self) -> int:
        port = free_port()
        self.given.add(port)
        return port

    def named_in(self, text: str) -> set[int]:
        """The ports given so far that ``text`` names."""
        return {p for p in self.given if re.search(rf"(?<![\d.]){p}(?![\d.])", text)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Project:
    """A directory with the files of the README and of one document, where
    the samples of that document run."""

    def __init__(self, directory: Path, doc: str) -> None:
        self.dir = directory
        self.doc = doc
        self.ports = Ports()
        for name in ("tmp", "run"):
            (directory / name).mkdir()
        # The venv of /srv/myapp/.venv/bin/tornado-prefork, and the files the
        # TLS sample names.
        (directory / ".venv").symlink_to(sys.prefix)
        shutil.copy(HERE / "test.crt", directory / "cert.pem")
        shutil.copy(HERE / "test.key", directory / "key.pem")
        shutil.copy(HERE / "test.crt", directory / "clients-ca.pem")
        readme = [b for b in blocks_of(Path("README.md")) if b.path]
        for block in readme:
            for place in LAYOUTS.get(doc, DEFAULT_LAYOUT):
                self.write(Path(place) / str(block.path), block)
        if doc != "README.md":
            for block in blocks_of(Path(doc)):
                if block.path:
                    self.write(Path(str(block.path)), block)

    def write(self, relative: Path, block: Block) -> None:
        target = self.dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        text = self.substitute(block.text)
        if block.lang == "python":
            compile(text, f"{block.id} ({relative})", "exec")
            package = target.parent
            # The file's own directories are packages (mypkg/), src/ is not.
            for _ in Path(str(block.path)).parent.parts:
                (package / "__init__.py").touch()
                package = package.parent
        target.write_text(text)

    def substitute(self, text: str) -> str:
        """``text`` with every named port replaced by its free one, 0.0.0.0
        by 127.0.0.1, and the `PLACES` moved into the project."""
        text = PORT.sub(lambda m: str(self.ports[m.group(1)]), text)
        text = text.replace("0.0.0.0", "127.0.0.1")
        return PLACE.sub(lambda m: f"{self.dir}/{PLACES[m.group(1)]}", text)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a sample: this interpreter's scripts first on
        PATH, nothing of a server around the tests."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NOTIFY_SOCKET", "LISTEN_", "PROMETHEUS_", "TORNADO_PREFORK_"))
        }
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        return {**env, **extra}

    def shell(self, command: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Runs a shell command line of a sample in the project."""
        return subprocess.run(
            ["bash", "-c", "set -o pipefail\n" + command],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
            env=self.env(),
        )


@pytest.fixture
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    return Project(tmp_path, request.node.callspec.params["block"].doc)


# --- Servers --------------------------------------------------------------------------------


class Server:
    """A server a sample starts: in its own session, in ``cwd``, with the
    environment ``env`` and no other, told to say READY=1 on a notify socket
    as systemd's is, its output read as it comes. Used as a context manager,
    it is killed at the end of the block if it still runs."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
        self.what = what
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # The abstract namespace: nothing to remove. SO_PASSCRED: who sent it.
        self.notify.bind("")
        self.notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        name = self.notify.getsockname()
        env = {
            **env,
            "NOTIFY_SOCKET": "@" + (name.decode() if isinstance(name, bytes) else name)[1:],
        }
        assigned = [f"{key}={value}" for key, value in env.items()]
        self.scenario = procs.Scenario(["env", "-i", "-C", str(cwd), *assigned, *argv])
        self.states: list[tuple[int, str]] = []

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.scenario.finish(timeout=5, kill=True)
        self.notify.close()

    @property
    def pid(self) -> int:
        return self.scenario.pid

    def fail(self, message: str) -> None:
        self.scenario.finish(timeout=5, kill=True)
        raise AssertionError(f"{self.what}: {message}\n{self.scenario.output}")

    def wait_state(self, state: str, timeout: float = TIMEOUT) -> int:
        """Waits for the server to notify ``state`` (``READY=1``); returns the
        pid that sent it. Fails at once if the server exits first."""
        deadline = time.monotonic() + timeout
        while True:
            for pid, message in self.states:
                if state in message.split("\n"):
                    self.states.remove((pid, message))
                    return pid
            if self.scenario.proc.poll() is not None:
                self.fail(f"exited with status {self.scenario.proc.returncode} before {state}")
            if time.monotonic() > deadline:
                self.fail(f"no {state} within {timeout} s")
            if select.select([self.notify], [], [], 0.05)[0]:
                data, ancillary, _, _ = self.notify.recvmsg(65536, socket.CMSG_SPACE(12))
                pid = 0
                for level, kind, value in ancillary:
                    if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                        pid = struct.unpack("3i", value[:12])[0]
                self.states.append((pid, data.decode(errors="replace")))

    def ready(self) -> Server:
        self.wait_state("READY=1")
        return self

    def stop(self, signum: int = signal.SIGTERM, timeout: float = TIMEOUT) -> None:
        """Sends ``signum``; it must exit 0 with no process of it left."""
        with self:
            self.scenario.stop(signum, timeout=timeout)

    def ended(self, timeout: float = TIMEOUT) -> None:
        """After a sample's own ``kill``: it must exit 0."""
        with self:
            code = self.scenario.finish(timeout)
            assert code == 0, f"{self.what}: exit status {code}\n{self.scenario.output}"


def request(port: int, path: str = "/", tls: bool = False) -> int:
    """One request to 127.0.0.1:``port`` on a fresh connection: its status.
    With ``tls``, over HTTPS, showing the test certificate to a server that
    asks for one."""
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(HERE / "test.crt", HERE / "test.key")
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=10, context=context
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def answers(server: Server, port: int, path: str = "/", tls: bool = False) -> int:
    """The status ``path`` gets on ``port``, retried while the port refuses
    (a server that is not up yet)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return request(port, path, tls)
        except (ConnectionRefusedError, ConnectionResetError):
            if server.scenario.proc.poll() is not None:
                server.fail(f"exited with status {server.scenario.proc.returncode}")
            if time.monotonic() > deadline:
                server.fail(f"nothing answers on port {port}")
            time.sleep(0.05)


def metrics_ports(text: str) -> set[int]:
    return {int(p) for p in re.findall(r"metrics[-_]port[=\s,\"']*(\d+)", text)}


def check_ports(server: Server, text: str, ports: Ports) -> None:
    """Every port ``text`` (a command, a program) names answers as it says: the
    metrics port with /healthz and /metrics, any other with HTTP (HTTPS when
    the command gives a certificate)."""
    named = ports.named_in(text)
    assert named, f"{server.what}: names no port to check"
    for port in sorted(named):
        if port in metrics_ports(text):
            for path in ("/healthz", "/metrics"):
                status = answers(server, port, path)
                assert status == 200, f"{server.what}: {path} on {port} answered {status}"
        else:
            status = answers(server, port, tls="--certfile" in text or "certfile=" in text)
            assert status < 500, f"{server.what}: / on {port} answered {status}"


# --- Shell ----------------------------------------------------------------------------------


def commands(text: str) -> list[str]:
    """The command lines of a shell block: continuations joined, comments and
    blank lines gone."""
    lines = []
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        line = uncomment(pending + raw).strip()
        pending = ""
        if line:
            lines.append(line)
    return lines


def uncomment(line: str) -> str:
    """``line`` without a ``#`` comment (one outside quotes, at a word's start)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def split_command(line: str) -> tuple[dict[str, str], list[str]]:
    """The leading ``NAME=VALUE`` words of a command line, and the rest."""
    words = shlex.split(line.rstrip("&").strip())
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return env, words


def is_server(words: list[str]) -> bool:
    if not words:
        return False
    if words[0] == "tornado-prefork":
        return True
    if words[0] == "python":
        return words[1:3] == ["-m", "tornado_prefork"] or words[1].endswith(".py")
    return words[0] == "make" and "demo" in words


def start_command(line: str, project: Project) -> Server:
    """Starts the server of a shell command line and checks the ports it names."""
    env, words = split_command(line)
    text = line + script_text(words, project)
    cwd = project.dir
    if words[0] == "make":
        words, port = demo_command(words, project)
        text += f" --port {port}"
        cwd = ROOT
    elif not re.search(r"(?<![\w-])(--port\b|port=)", text):
        port = project.ports[DEFAULT_PORT]
        env.setdefault("TORNADO_PREFORK_PORT", str(port))
        text += f" --port {port}"
    if words[0] == "python":
        words[0] = sys.executable
    server = Server(words, cwd, project.env(**env), line).ready()
    check_ports(server, text, project.ports)
    return server


def script_text(words: list[str], project: Project) -> str:
    """The program a ``python FILE.py`` command runs, where its ports are."""
    if len(words) > 1 and words[1].endswith(".py") and (project.dir / words[1]).exists():
        return "\n" + (project.dir / words[1]).read_text()
    return ""


def demo_command(words: list[str], project: Project) -> tuple[list[str], int]:
    """What ``make demo`` runs, as ``make -n`` prints it without running
    anything (the virtualenv it would make first included), on the port that
    stands for 8888."""
    port = project.ports[DEFAULT_PORT]
    assigned = [w for w in words[1:] if "=" in w and not w.startswith("PORT=")]
    # Under `make test` this runs inside make: its flags (-w, -j) must not reach this one.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    printed = subprocess.run(
        ["make", "-n", "-s", "--no-print-directory", *assigned, "demo", f"PORT={port}"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        env=env,
    )
    assert printed.returncode == 0, printed.stderr
    run = shlex.split(printed.stdout.strip().splitlines()[-1])
    assert Path(run[0]).name.startswith("python"), run
    return [sys.executable, *run[1:]], port


def check_pip(words: list[str], checkout: Callable[[], Path]) -> None:
    """``pip install .[extras]`` names extras that exist; ``pip wheel`` builds
    the wheel that ``pip install dist/...`` then names, with every module."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    command, target = words[1], words[-1]
    if command == "install" and target.startswith("."):
        extras = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", target)
        assert extras is not None, f"pip install {target}: not the checkout"
        known = set(project["optional-dependencies"])
        assert set(filter(None, (extras.group(1) or "").split(","))) <= known, target
    elif command == "wheel":
        built = subprocess.run(
            [sys.executable, "-m", *words],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=checkout(),
        )
        assert built.returncode == 0, built.stdout + built.stderr
    elif command == "install" and target.endswith(".whl"):
        wheel = checkout() / target
        assert wheel.exists(), f"{target} was not built: {os.listdir(wheel.parent)}"
        names = set(zipfile.ZipFile(wheel).namelist())
        modules = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
        assert modules <= names, sorted(modules - names)
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)
    else:
        raise AssertionError(f"no check for: pip {' '.join(words[1:])}")


def copy_of_the_checkout(directory: Path) -> Path:
    """The checkout's files (those git tracks or would), as they are on disk."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, directory / name)
    return directory


def run_shell(block: Block, project: Project) -> None:
    server: Server | None = None
    stopping = False
    checkout: list[Path] = []

    def the_checkout() -> Path:
        if not checkout:
            checkout.append(copy_of_the_checkout(project.dir / "checkout"))
        return checkout[0]

    try:
        for line in commands(project.substitute(block.text)):
            env, words = split_command(line)
            if is_server(words):
                if server is not None:
                    server.stop()
                server, stopping = start_command(line, project), False
            elif words[0] == "pip":
                check_pip(words, the_checkout)
            elif words[:2] == ["make", "test"]:
                makefile = (ROOT / "Makefile").read_text()
                assert re.search(r"^test:", makefile, re.M), "the Makefile has no test target"
            elif words[0] == "sysctl":
                check_sysctl(words)
            elif words[0] in ("curl", "kill"):
                assert server is not None, f"{line}: no server runs"
                if words[0] == "curl":
                    line = "curl --fail --silent --show-error" + line[len("curl") :]
                result = project.shell(line)
                assert result.returncode == 0, f"{line}\n{result.stderr}\n{server.scenario.output}"
                stopping = words[0] == "kill" and words[1] in ("-TERM", "-INT", "-QUIT")
            else:
                raise AssertionError(f"{block.id}: no check for the command {line!r}")
        if server is not None:
            server.ended() if stopping else server.stop()
    finally:
        if server is not None:
            server.__exit__()


def check_sysctl(words: list[str]) -> None:
    """A kernel setting the sample would change: it exists here, and it is the
    one the server reads."""
    name = words[-1].split("=")[0]
    path = Path("/proc/sys") / name.replace(".", "/")
    if not path.exists():
        pytest.skip(f"this kernel has no {name}")
    sources = "".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    assert str(path) in sources or name in sources, f"the server never reads {name}"


# --- Python ---------------------------------------------------------------------------------


def run_python(block: Block, project: Project) -> None:
    text = project.substitute(block.text)
    if re.search(r"^(async )?def test_|\bTestCase\)", text, re.M):
        (project.dir / "test_sample.py").write_text(text)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_sample.py"],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=project.dir,
            env=project.env(),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"\d+ passed", result.stdout) and "skipped" not in result.stdout
        return
    script = project.dir / "sample.py"
    script.write_text(text)
    if not PORT.search(block.text):
        result = subprocess.run(
            [sys.executable, script.name],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=project.dir,
            env=project.env(),
        )
        assert result.returncode == 0, result.stderr
        return
    with Server([sys.executable, script.name], project.dir, project.env(), block.id) as server:
        if "tornado_prefork" in text:
            server.ready()
            check_ports(server, text, project.ports)
            server.stop()
        else:
            # Tornado's own multi-process pattern: it answers, and SIGTERM
            # would leave its children serving; the end of the block kills them.
            check_ports(server, text, project.ports)


# --- systemd --------------------------------------------------------------------------------


def units(block: Block, project: Project) -> dict[str, dict[str, str]]:
    """The systemd units of ``block``'s document, written into the project:
    their keys by name (continuations joined)."""
    directory = project.dir / "units"
    directory.mkdir(exist_ok=True)
    found = {}
    for other in blocks_of(Path(block.doc)):
        if other.lang == "ini":
            name = other.text.splitlines()[0].rsplit("/", 1)[-1]
            text = project.substitute(other.text)
            (directory / name).write_text(text)
            joined = text.replace("\\\n", " ")
            found[name] = dict(re.findall(r"^(\w+)=(.*)$", joined, re.M))
    return found


def run_unit(block: Block, project: Project) -> None:
    found = units(block, project)
    name = block.text.splitlines()[0].rsplit("/", 1)[-1]
    service = name.rsplit(".", 1)[0] + ".service"
    analyze = shutil.which("systemd-analyze")
    if analyze:
        verify = subprocess.run(
            [analyze, "verify", *sorted({name, service})],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=project.dir / "units",
        )
        complaints = [line for line in verify.stderr.splitlines() if any(u in line for u in found)]
        assert verify.returncode == 0 and not complaints, verify.stderr
    unit = found[service]
    argv = shlex.split(unit["ExecStart"])
    assert Path(argv[0]).exists(), argv[0]
    argv = as_this_user(argv)
    graceful = float(argv[argv.index("--graceful-timeout") + 1])
    assert float(unit["TimeoutStopSec"]) > graceful, "TimeoutStopSec must exceed the drain"
    cwd = Path(unit.get("WorkingDirectory", project.dir))
    port = project.ports[DEFAULT_PORT]
    env = project.env(TORNADO_PREFORK_PORT=str(port))
    if name.endswith(".socket"):
        activate = shutil.which("systemd-socket-activate")
        if activate is None:
            pytest.skip("systemd-socket-activate is not installed")
        # As systemd does, it starts the service at the first connection,
        # which waits in the socket's backlog meanwhile, and passes the
        # service only the environment it is told to.
        listen = found[name]["ListenStream"]
        passed = ["-E", "NOTIFY_SOCKET", "-E", "TORNADO_PREFORK_PORT"]
        with Server([activate, "-l", listen, *passed, *argv], cwd, env, block.id) as server:
            status = answers(server, int(listen.rsplit(":", 1)[1]))
            assert status == 200, f"{listen} answered {status}"
            server.ready()
            with pytest.raises(ConnectionRefusedError):
                request(port)  # it did not bind a port of its own
            server.stop(getattr(signal, unit["KillSignal"]))
        return
    with Server(argv, cwd, env, block.id) as server:
        ready = server.wait_state("READY=1")
        if unit.get("NotifyAccess") == "main":
            assert ready == server.pid, f"READY=1 came from {ready}, not the main pid"
        assert answers(server, port) == 200
        reload = project.shell(unit["ExecReload"].replace("$MAINPID", str(server.pid)))
        assert reload.returncode == 0, reload.stderr
        server.wait_state("RELOADING=1")
        assert server.wait_state("READY=1") == server.pid
        assert answers(server, port) == 200
        server.stop(getattr(signal, unit["KillSignal"]), timeout=float(unit["TimeoutStopSec"]))


def as_this_user(argv: list[str]) -> list[str]:
    """``argv`` with ``--user``/``--group`` naming the user that runs the tests
    (they need root; without it they are left out)."""
    result = []
    words = iter(argv)
    for word in words:
        if word in ("--user", "--group"):
            next(words)
            if os.geteuid() == 0:
                name = pwd.getpwuid(0).pw_name if word == "--user" else grp.getgrgid(0).gr_name
                result += [word, name]
        else:
            result.append(word)
    return result


# --- nginx ----------------------------------------------------------------------------------

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def nginx_main(directory: Path, http: str) -> str:
    """A main nginx configuration around the ``http`` block of a sample: in
    the foreground, every file in ``directory``, run by this user."""
    temp = "".join(
        f"    {kind}_temp_path {directory}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return (
        f"daemon off;\nworker_processes 1;\n{user}pid {directory}/nginx.pid;\n"
        f"error_log stderr warn;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n    access_log off;\n{temp}{http}\n}}\n"
    )


def run_nginx(block: Block, project: Project) -> None:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx)")
    config = project.substitute(block.text)
    config = re.sub(r"^(\s*listen) (\d+);", r"\1 127.0.0.1:\2;", config, flags=re.M)
    front = int(re.findall(r"listen 127\.0\.0\.1:(\d+);", config)[0])
    (project.dir / "nginx.conf").write_text(nginx_main(project.dir, config))
    argv = [NGINX, "-p", str(project.dir), "-c", str(project.dir / "nginx.conf")]
    with contextlib.ExitStack() as started:
        # "Start each server with --xheaders."
        servers = []
        for port in re.findall(r"^\s*server 127\.0\.0\.1:(\d+)", config, re.M):
            line = f"tornado-prefork mypkg.web:make_app --processes 1 --port {port} --xheaders"
            servers.append(started.enter_context(start_command(line, project)))
        with Server(argv, project.dir, project.env(), block.id) as nginx:
            assert [answers(nginx, front) for _ in range(4)] == [200] * 4
        for server in servers:
            server.stop()


# --- YAML -----------------------------------------------------------------------------------


def flow(text: str) -> dict[str, str]:
    """A YAML flow mapping of plain scalars, ``{path: /healthz, port: 9100}``."""
    pairs = (item.split(":", 1) for item in text.strip("{} ").split(","))
    return {k.strip(): v.strip().strip("\"'") for k, v in pairs}


def run_yaml(block: Block, project: Project) -> None:
    text = project.substitute(block.text)
    if "scrape_configs:" in text:
        port = int(re.findall(r"targets: \[\"[\w.-]+:(\d+)\"\]", text)[0])
        path = (re.findall(r"metrics_path: (\S+)", text) or ["/metrics"])[0]
        line = f"tornado-prefork mypkg.web:make_app --metrics-port {port}"
        with start_command(line, project) as server:
            assert answers(server, port, path) == 200
            server.stop()
        return
    assert "kind: Deployment" in text, f"{block.id}: no check for this YAML"
    command = json.loads(
        re.search(r"(?:command|args): (\[\"tornado-prefork\".*?\])", text, re.S)[1]
    )
    ports = {
        name: int(port) for name, port in re.findall(r"name: (\w+), containerPort: (\d+)", text)
    }
    with start_command(shlex.join(command), project) as server:
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            section = re.search(
                rf"{probe}:\n(.*?)(?=\n\s*\w+Probe:|\n\s*lifecycle:|\Z)", text, re.S
            )
            if section is None:
                continue
            kind, spec = re.search(r"(httpGet|tcpSocket): (\{.*?\})", section[1]).groups()
            how = flow(spec)
            port = ports.get(how["port"]) or int(how["port"])
            if kind == "httpGet":
                status = answers(server, port, how["path"])
                assert 200 <= status < 400, f"{probe}: GET {how['path']} on {how['port']}: {status}"
            else:
                socket.create_connection(("127.0.0.1", port), timeout=10).close()
        annotations = dict(re.findall(r"prometheus\.io/(\w+): \"?([^\"\n]+)\"?", text))
        if annotations.get("scrape") == "true":
            assert answers(server, int(annotations["port"]), annotations["path"]) == 200
        grace = int(re.search(r"terminationGracePeriodSeconds: (\d+)", text)[1])
        drain = float(command[command.index("--graceful-timeout") + 1])
        sleep = re.search(r"preStop:.*?\"sleep\", \"(\d+)\"", text, re.S)
        assert grace > drain + (int(sleep[1]) if sleep else 0), "the kubelet would cut the drain"
        server.stop()


# --- PromQL ---------------------------------------------------------------------------------


def run_promql(block: Block, project: Project) -> None:
    """The metrics and labels of the queries are in a real scrape, one taken
    after a request and a worker's exit (SIGTTOU)."""
    port = project.ports.fresh()
    line = f"tornado-prefork mypkg.web:make_app --processes 2 --metrics-port {port}"
    names = set(re.findall(r"\b(tornado_prefork_\w+)", block.text))
    labels = set(re.findall(r"\bby \((\w+)\)|[{,](\w+)=~?\"", block.text))
    labels = {name for pair in labels for name in pair if name}
    with start_command(line, project) as server:
        os.kill(server.pid, signal.SIGTTOU)
        deadline = time.monotonic() + TIMEOUT
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/metrics")
            scrape = conn.getresponse().read().decode()
            conn.close()
            missing = {n for n in names if not re.search(rf"^{n}[{{ ]", scrape, re.M)}
            missing |= {label for label in labels if f"{label}=" not in scrape}
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        server.stop()
    assert not missing, f"not in a scrape: {sorted(missing)}\n{scrape}"


# --- The tests ------------------------------------------------------------------------------

CHECKS: dict[str, Callable[[Block, Project], None]] = {
    "sh": run_shell,
    "python": run_python,
    "ini": run_unit,
    "nginx": run_nginx,
    "yaml": run_yaml,
    "promql": run_promql,
}


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.id)
def test_docs_block(block: Block, project: Project) -> None:
    CHECKS[block.lang](block, project)


def test_docs_every_block_is_checked_or_says_why_not() -> None:
    for block in BLOCKS:
        assert block.lang, f"{block.id}: a fence without a language"
        if block.not_run is None and block.path is None:
            assert block.lang in CHECKS, f"{block.id}: nothing checks a {block.lang} block"
    not_run = [b.id for b in BLOCKS if b.not_run]
    assert len(not_run) <= MOST_NOT_RUN, not_run
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        fences = re.findall(r"^\s*```", text, re.M)
        assert len(fences) == 2 * len(blocks_of(doc)), f"{doc}: a fence that is no block"
        assert not re.search(r"\n\n {4}\S", FENCE.sub("", text)), (
            f"{doc}: an indented code block; fence it"
        )


def test_docs_every_file_is_run_by_a_block() -> None:
    for block in BLOCKS:
        if block.path is None or block.lang != "python":
            continue
        module = block.path.removesuffix(".py").replace("/", ".")
        users = [
            b.id
            for b in RUN
            if (b.doc == block.doc or block.doc == "README.md")
            and (module in b.text or block.path in b.text)
        ]
        assert users, f"{block.id}: no block runs {block.path}"


def headings(doc: Path) -> set[str]:
    """The anchors of ``doc``'s headings, as GitHub makes them."""
    text = FENCE.sub("", (ROOT / doc).read_text())
    found = set()
    for title in re.findall(r"^#+ (.*)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower().replace("`", "")).replace(" ", "-")
        found.add(slug)
    return found


def test_docs_links_lead_to_files_and_headings() -> None:
    for doc in [*DOCS, Path("CHANGELOG.md")]:
        text = FENCE.sub("", (ROOT / doc).read_text())
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (ROOT / doc).parent / path if path else ROOT / doc
            assert linked.exists(), f"{doc}: {target} leads nowhere"
            if anchor:
                relative = linked.resolve().relative_to(ROOT)
                assert anchor in headings(relative), f"{doc}: no heading for {target}"


def test_docs_the_readme_is_read_in_five_minutes() -> None:
    assert len((ROOT / "README.md").read_bytes()) <= 10_000


def table(doc: str, name: str) -> str:
    text = (ROOT / doc).read_text()
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match is not None, f"{doc} needs <!-- {name}:start --> ... <!-- {name}:end -->"
    return match.group(1)


def section(doc: str, heading: str) -> str:
    """The text of ``doc`` under ``heading``, to its first blank line after a table."""
    text = (ROOT / doc).read_text()
    text = text[text.index(f"\n{heading}\n") :]
    return text[: text.index("\n\n", text.index("| --- |"))]


def test_docs_module_map_names_every_module_once() -> None:
    named = re.findall(r"`([\w/]+\.py)`", table("docs/architecture.md", "modules"))
    assert len(named) == len(set(named)), "a module named twice"
    modules = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))
    assert sorted(named) == modules


def test_docs_channel_table_names_every_message() -> None:
    from tornado_prefork._supervisor import channel

    documented = set(
        re.findall(r"^\| `(\w+)", section("docs/architecture.md", "## The channel"), re.M)
    )
    messages = {channel.READY, channel.HEARTBEAT, channel.RECYCLE, channel.ERROR, channel.SILENT}
    assert documented == {m.decode() for m in messages}


def test_docs_signal_table_names_every_signal_the_parent_handles() -> None:
    from tornado_prefork._supervisor import spawn

    rows = re.findall(
        r"^\| ([A-Z0-9, /]+) \|", section("README.md", "## Signals to the parent"), re.M
    )
    documented = {f"SIG{name.strip()}" for row in rows for name in re.split(r"[,/]", row)}
    handled = {signal.Signals(s).name for s in spawn.HANDLED} - {"SIGCHLD"}
    assert documented == handled


def test_docs_one_version() -> None:
    """The version is written once, in the package; the build reads it there,
    and the command line and the changelog's newest release say it."""
    tomllib = pytest.importorskip("tomllib")
    pyproject = (ROOT / "pyproject.toml").read_text()
    project = tomllib.loads(pyproject)
    assert "version" in project["project"]["dynamic"]
    module, _, name = project["tool"]["setuptools"]["dynamic"]["version"]["attr"].rpartition(".")
    version = getattr(importlib.import_module(module), name)
    assert version == tornado_prefork.__version__
    written = [
        str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if f'"{version}"' in p.read_text()
    ]
    assert len(written) == 1 and f'"{version}"' not in pyproject, written
    released = re.findall(r"^## (\d+\.\d+\.\d+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert released[0] == version
    shown = subprocess.run(
        [str(BIN / "tornado-prefork"), "--version"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert shown.stdout.strip() == f"tornado-prefork {version}"


def test_docs_version_markers_are_not_from_the_future() -> None:
    version = tuple(int(n) for n in tornado_prefork.__version__.split(".")[:2])
    for path in PACKAGE.rglob("*.py"):
        for number in re.findall(r"\.\. version(?:added|changed):: ([\d.]+)", path.read_text()):
            marked = tuple(int(n) for n in number.split(".")[:2])
            assert marked <= version, f"{path.relative_to(ROOT)}: {number} > {version}"


def test_docs_license_is_the_one_declared() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()
