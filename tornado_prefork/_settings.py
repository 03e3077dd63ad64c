"""Every setting a user can give the server, in one table: `Settings`.

Each field of `Settings` is a setting (name, type, default, help, bounds,
scope); `SETTINGS` is that table as `Setting` rows for the doors that read
text. `serve`'s keyword defaults, the command line (``--graceful-timeout``),
the ``TORNADO_PREFORK_GRACEFUL_TIMEOUT`` environment variables, the
`tornado.options` helpers (``--graceful_timeout``) and the settings table of
docs/usage.md all come from it (the tests check each against it), and the
server's parts read one frozen `Settings` built from serve()'s arguments.
Adding a setting is one field here; each door then has it, with the same
default, bounds and message. A setting of scope `Scope.SERVE` or
`Scope.HTTP` is also a keyword of `serve` whose default is ``_D("name")``
(tests/test_settings.py says so if it is missing); the docs' table is
regenerated with ``UPDATE_README=1 pytest tests/test_settings.py``.

A value is checked in one place, `Setting.check` (a Python value) or
`Setting.parse` (text from a flag, the environment or a `tornado.options`
option, where ``None`` is the value None of a setting that takes it), and
every error has one form: ``<door> must be <what>, not <value>``, where the
door is how the user gave it (``serve() argument port``, ``--port``,
``TORNADO_PREFORK_PORT``, ``option --port``).

Every number has a largest value (``high`` for a range such as a port's,
``most`` otherwise), so that nan, infinity and numbers the operating system
or the event loop cannot take are refused at the door rather than failing in
a running server: the parent sleeps in ``poll()``, whose timeout is a C int
of milliseconds (24.8 days), ``listen()`` takes a C int, and each read
allocates a buffer of ``chunk_size`` bytes.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import ssl
import typing
from collections.abc import Callable, Mapping
from typing import Any

from tornado_prefork.errors import StartupError


class Scope(enum.Enum):
    """Which doors a setting has, besides the command line and the environment."""

    #: A keyword of `serve` (and a `tornado.options` option).
    SERVE = "serve"
    #: A keyword of serve() that each worker's `HTTPServer` gets.
    HTTP = "http"
    #: Part of the TLS context: serve()'s ``ssl_options`` is built from these.
    TLS = "tls"
    #: The command line only: logging, import path, development mode.
    COMMAND = "command"


ENV_PREFIX = "TORNADO_PREFORK_"

#: The event loops a worker can run (`tornado_prefork._worker.eventloop`).
LOOPS = ("auto", "asyncio", "uvloop")
#: How messages travel across workers (`tornado_prefork.broadcast`), and
#: the URLs that also take them across machines.
BROADCASTS = ("hub", "off")
BROKERS = ("redis", "rediss")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting: its name (serve()'s keyword), type, default, bounds and help."""

    name: str
    kind: type
    default: Any
    help: str
    scope: Scope = Scope.SERVE
    low: float | None = None
    #: With ``low``, the range of valid values (a port: from 0 to 65535).
    high: float | None = None
    #: The largest value the server can act on, for a number with no range
    #: of its own (a timeout, a count, a size); ``most_means`` says it in words.
    most: float | None = None
    most_means: str = ""
    #: The value must be above 0 (Tornado reads 0 as "use my default").
    positive: bool = False
    #: None is a valid value (it means "not set").
    optional: bool = False
    choices: tuple[str, ...] = ()
    #: With ``choices``, the schemes of the URLs also taken (``redis://host``).
    url_schemes: tuple[str, ...] = ()
    #: Read from text as octal (file modes).
    octal: bool = False
    metavar: str = "X"
    #: The command line's own default, where it differs (documented in the README).
    command_default: Any = dataclasses.field(default=None, compare=False)
    #: Read by the supervisor, and handed to a new image (`Settings.supervisor_record`).
    supervisor: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def cli_default(self) -> Any:
        return self.default if self.command_default is None else self.command_default

    def check(self, value: object, door: str) -> Any:
        """Returns ``value`` if it is valid; raises `TypeError` or `ValueError`
        naming ``door`` (``serve() argument port``) otherwise."""
        if value is None and self.optional:
            return None
        if not self._has_type(value):
            raise TypeError(f"{door} must be {self._kind_text()}, not {_shown(value)}")
        problem = self._problem(value)
        if problem:
            raise ValueError(f"{door} must be {problem}, not {self.show(value)}")
        return value

    def parse(self, text: str, door: str) -> Any:
        """The value of ``text`` from a flag, an environment variable or a
        `tornado.options` option; `ValueError` naming ``door`` (``--port``) if
        it is not one. ``None`` is None for a setting that takes None
        (``--address None``: every interface, as ``--help`` says)."""
        if self.optional and text == "None":
            return None
        if self.kind is bool:
            if text.strip().lower() in _TRUE | _FALSE:
                return text.strip().lower() in _TRUE
            raise ValueError(f"{door} must be true or false, not {text!r}")
        if self.kind is str:
            return self.check(text, door)
        try:
            value = int(text, 8 if self.octal else 10) if self.kind is int else float(text)
        except ValueError:
            raise ValueError(f"{door} must be {self._kind_text()}, not {text!r}") from None
        problem = self._problem(value)
        if problem:
            raise ValueError(f"{door} must be {problem}, not {text!r}")
        return value

    def meaning(self) -> str:
        """The help and, for a number, its bounds: what ``--help``, the
        `tornado.options` help and the README say of it."""
        bounds = self.constraint() if not self.choices else None
        return self.help + (f"; must be {bounds}" if bounds else "")

    def show(self, value: Any) -> str:
        """``value`` as text for a flag's help or the README."""
        if value is not None and self.octal:
            return f"0o{value:o}"
        return repr(value)

    def _is_url(self, value: str) -> bool:
        scheme, sep, rest = value.partition("://")
        return bool(sep) and scheme in self.url_schemes and bool(rest.strip("/"))

    def _has_type(self, value: object) -> bool:
        if self.kind is bool:
            return isinstance(value, bool)
        if isinstance(value, bool):
            return False
        if self.kind is float:
            return isinstance(value, (int, float))
        return isinstance(value, self.kind)

    def _kind_text(self) -> str:
        text = {int: "an int", float: "a number", bool: "True or False", str: "a string"}
        if self.octal:
            return "an octal file mode"
        if self.kind is bool and self.optional:
            return "True, False or None"
        return text[self.kind] + (" or None" if self.optional else "")

    def constraint(self) -> str | None:
        """What a valid value is, beyond its type: ``from 0 to 65535``,
        ``>= 0 and at most 86400 (a day)``."""
        if self.choices and self.url_schemes:
            schemes = " or ".join(f"{scheme}://" for scheme in self.url_schemes)
            return f"one of {', '.join(self.choices)}, or a {schemes} URL"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            return self._range()
        parts = [self._floor(), self._ceiling()]
        return " and ".join(part for part in parts if part) or None

    def _range(self) -> str:
        show = self.show if self.octal else str
        return f"from {show(self.low)} to {show(self.high)}"

    def _floor(self) -> str | None:
        if self.positive:
            return "> 0"
        return None if self.low is None else f">= {self.low}"

    def _ceiling(self) -> str | None:
        if self.most is None:
            return None
        return f"at most {self.most}" + (f" ({self.most_means})" if self.most_means else "")

    def _problem(self, value: Any) -> str | None:
        """The bound ``value`` breaks, as the message states it; None if it is valid."""
        if self.choices:
            if value in self.choices or self._is_url(value):
                return None
            return self.constraint()
        if self.kind not in (int, float):
            return None
        if isinstance(value, float) and math.isnan(value):
            # Compares false with every bound: it would pass them all.
            return self.constraint()
        if self.low is not None and self.high is not None:
            return None if self.low <= value <= self.high else self._range()
        if (self.positive and value <= 0) or (self.low is not None and value < self.low):
            return self._floor()
        if self.most is not None and value > self.most:
            return self._ceiling()
        return None


_MB = 1024 * 1024

# The parent's poll() takes its timeout as a C int of milliseconds (24.8
# days), and the nearest deadline of any process is that timeout: a day for
# waits, a week for a worker's age keep every one of them within it.
_DAY = 24 * 60 * 60
_WEEK = 7 * _DAY
_SECONDS = {"most": _DAY, "most_means": "a day"}
# What listen() takes (a C int).
_C_INT = 2**31 - 1
# Counts compared with a running total, where any int would do: a billion
# is past any real need, so that a value that is no count at all is told.
_COUNTS = {"most": 10**9}
# More than the CPUs of the largest machine Linux runs on (8192).
_MOST_PROCESSES = 10_000
# The largest size the operating system has (ssize_t).
_BYTES = {"most": 2**63 - 1, "most_means": "2**63 - 1"}


def _s(default: Any, help: str, **more: Any) -> Any:
    """A field of `Settings`: its default, and the rest of its row of the table."""
    return dataclasses.field(default=default, metadata={_ROW: {"help": help, **more}})


_ROW = "tornado_prefork.setting"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting with its value: the one table of settings, and what the
    server's parts read (``settings.graceful_timeout``).

    A field is a setting: its name is serve()'s keyword, its type says what
    the setting takes (``| None``: None is a valid value), and its row holds
    the default, help, bounds and scope (see `Setting`). `serve` and
    `fork_processes` build one from their arguments and `check` it before
    anything is forked; the supervisor, the workers and a reload in place
    read it. Built with no argument, it holds every default.
    """

    # fmt: off
    processes: int = _s(0, "worker processes; 0: one per usable CPU",
        low=0, most=_MOST_PROCESSES, metavar="N")
    port: int = _s(8888, "TCP port", low=0, high=65535, metavar="P")
    address: str | None = _s(None, "address to bind; None: every interface (IPv4 and IPv6)",
        command_default="127.0.0.1", metavar="A")
    unix_socket: str | None = _s(None, "listen on this unix socket instead of TCP",
        metavar="PATH")
    unix_socket_mode: int = _s(0o600, "file mode of the unix socket, in octal",
        low=0, high=0o777, octal=True, metavar="MODE")
    reuse_port: bool = _s(False, "each worker binds its own socket with SO_REUSEPORT")
    backlog: int = _s(2048,
        "listen backlog: connections the kernel queues until a worker accepts them; Linux "
        "lowers a larger value to net.core.somaxconn without an error (the server logs the "
        "value in force)",
        low=1, most=_C_INT, most_means="what listen() takes", metavar="N")
    graceful_timeout: float = _s(30.0,
        "seconds a worker gets to finish its requests after SIGTERM",
        low=0, **_SECONDS, supervisor=True, metavar="S")
    max_restarts: int = _s(100, "restarts of failed workers before the server gives up",
        low=0, **_COUNTS, supervisor=True, metavar="N")
    min_uptime: float = _s(1.0,
        "a worker that dies younger than this is restarted after a growing delay",
        low=0, **_SECONDS, supervisor=True, metavar="S")
    backoff_cap: float = _s(5.0, "the longest delay before restarting a failing worker",
        low=0, **_SECONDS, supervisor=True, metavar="S")
    ready_timeout: float = _s(60.0,
        "seconds a new worker has to get ready before it is killed; 0: no limit",
        low=0, **_SECONDS, supervisor=True, metavar="S")
    timeout: float = _s(30.0,
        "a worker whose event loop is silent this long is aborted and replaced; 0: off",
        low=0, **_SECONDS, supervisor=True, metavar="S")
    shutdown_delay: float = _s(0.0,
        "after SIGTERM, keep accepting this many seconds while /healthz answers 503, then "
        "drain: a load balancer (a Kubernetes Service) stops sending first",
        low=0, **_SECONDS, supervisor=True, metavar="S")
    max_requests: int = _s(0, "replace a worker after this many requests; 0: never",
        low=0, **_COUNTS, metavar="N")
    max_requests_jitter: int = _s(0, "add 0 to this many to max_requests, per worker",
        low=0, **_COUNTS, metavar="N")
    max_worker_age: float = _s(0.0, "replace a worker after this many seconds; 0: never",
        low=0, most=_WEEK, most_means="a week", supervisor=True, metavar="S")
    pid_file: str | None = _s(None, "write the parent's pid here; removed on exit",
        metavar="PATH")
    user: str | None = _s(None, "started as root: the user the workers run as",
        metavar="USER")
    group: str | None = _s(None, "started as root: the group the workers run as",
        metavar="GROUP")
    forwarded_allow_ips: str = _s("127.0.0.1",
        "with --xheaders, the proxies (comma-separated, * for any) whose "
        "X-Forwarded-For/X-Real-Ip are trusted", metavar="IPS")
    preload: bool | None = _s(None,
        "import the app's module in the parent before forking (--preload also calls a "
        "factory there), so that workers share its memory; --no-preload imports it in "
        "each worker; default: import in the parent, call a factory in each worker")
    loop: str = _s("auto", "each worker's event loop: auto (uvloop if installed), asyncio, uvloop",
        choices=LOOPS, metavar="LOOP")
    metrics_port: int | None = _s(None,
        "serve /metrics (Prometheus, every worker added up) and /healthz on this port; "
        "0: any free port; needs tornado-prefork[metrics]",
        low=0, high=65535, metavar="P")
    metrics_address: str = _s("127.0.0.1", "address of the metrics port", metavar="A")
    health_port: int | None = _s(None,
        "serve /healthz alone on this port, with no extra installed (the metrics port "
        "serves it too); 0: any free port",
        low=0, high=65535, metavar="P")
    health_address: str = _s("127.0.0.1", "address of the health port", metavar="A")
    broadcast: str = _s("hub",
        "messages across workers (tornado_prefork.broadcast): hub, through a process beside "
        "the workers; redis://host:port/db (or rediss://), across machines too, the hub "
        "being the server's one client of Redis (needs tornado-prefork[redis]); off: no hub, "
        "and publish() and subscribe() in a worker raise",
        choices=BROADCASTS, url_schemes=BROKERS, metavar="MODE")
    reload: bool = _s(False,
        "development: a rolling reload (as HUP) whenever a file of the app's package "
        "changes; the app must be an import string")
    # Each worker's HTTPServer.
    xheaders: bool = _s(False,
        "trust X-Real-Ip/X-Forwarded-For and X-Scheme/X-Forwarded-Proto", scope=Scope.HTTP)
    no_keep_alive: bool = _s(False, "close every connection after one response",
        scope=Scope.HTTP)
    decompress_request: bool = _s(False, "decompress gzip request bodies", scope=Scope.HTTP)
    max_body_size: int = _s(100 * _MB, "largest request body in bytes (larger: 400)",
        scope=Scope.HTTP, low=0, **_BYTES, metavar="BYTES")
    max_buffer_size: int = _s(100 * _MB,
        "largest amount of data buffered per connection, in bytes",
        scope=Scope.HTTP, low=1, **_BYTES, metavar="BYTES")
    # Tornado's own default is 3600 s: a slow client (slowloris) would hold a
    # connection for an hour. 65 s outlasts the 60 s idle time of nginx's
    # upstream keep-alive and of common load balancers, so a proxy never
    # reuses a connection the server is closing.
    idle_connection_timeout: float = _s(65.0,
        "seconds a connection may wait for (or take to send) a request's headers",
        scope=Scope.HTTP, positive=True, **_SECONDS, metavar="S")
    body_timeout: float | None = _s(None, "seconds a request body may take; default: no limit",
        scope=Scope.HTTP, positive=True, **_SECONDS, metavar="S")
    # Each read of each connection allocates this much.
    chunk_size: int = _s(65536, "bytes read from a connection at a time",
        scope=Scope.HTTP, low=1, most=2**30, most_means="1 GiB", metavar="BYTES")
    max_header_size: int = _s(65536, "largest request header in bytes",
        scope=Scope.HTTP, low=1, **_BYTES, metavar="BYTES")
    # TLS: serve()'s ssl_options is built from these.
    certfile: str | None = _s(None, "TLS certificate chain (PEM); with the key, serve HTTPS",
        scope=Scope.TLS, metavar="FILE")
    keyfile: str | None = _s(None, "TLS private key (PEM)", scope=Scope.TLS,
        metavar="FILE")
    ca_certs: str | None = _s(None,
        "CA certificates (PEM) that client certificates are checked with",
        scope=Scope.TLS, metavar="FILE")
    cert_reqs: str = _s("none", "client certificates: none, optional or required",
        scope=Scope.TLS, choices=("none", "optional", "required"), metavar="WHEN")
    ciphers: str | None = _s(None, "TLS ciphers, in OpenSSL's cipher list format",
        scope=Scope.TLS, metavar="LIST")
    # The command line only.
    app_dir: str = _s(".", "directory APP is imported from (put first on sys.path)",
        scope=Scope.COMMAND, metavar="DIR")
    log_level: str = _s("info", "one of debug, info, warning, error, critical",
        scope=Scope.COMMAND, choices=("debug", "info", "warning", "error", "critical"),
        metavar="L")
    access_log: bool = _s(False,
        "log every request (off by default, as gunicorn's; --access-logfile turns it on)",
        scope=Scope.COMMAND)
    access_logfile: str | None = _s(None, "write the access log to FILE ('-': stderr)",
        scope=Scope.COMMAND, metavar="FILE")
    log_config: str | None = _s(None,
        "a logging.config.dictConfig JSON file, applied before the server starts",
        scope=Scope.COMMAND, metavar="FILE")
    # fmt: on

    def check(self, door: str) -> None:
        """Raises `TypeError` or `ValueError` naming the first value that is
        not valid, as ``door`` (``serve() argument``) and its name."""
        for setting in SETTINGS:
            setting.check(getattr(self, setting.name), f"{door} {setting.name}")

    def http_server_keywords(self) -> dict[str, Any]:
        """The keyword arguments of each worker's `HTTPServer` (scope `Scope.HTTP`)."""
        return {s.name: getattr(self, s.name) for s in of_scope(Scope.HTTP)}

    def supervisor_record(self) -> dict[str, Any]:
        """The supervisor's settings as data, for the handover to a new image
        that cannot read its own (`from_record` is the inverse)."""
        return {s.name: getattr(self, s.name) for s in SETTINGS if s.supervisor}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Settings:
        """Settings holding the values of ``record`` (`supervisor_record`) and
        the defaults for the rest; names this version does not know are ignored."""
        return cls(**{name: value for name, value in record.items() if name in BY_NAME})


def _setting(field: dataclasses.Field[Any], hint: Any) -> Setting:
    """The `Setting` of a field of `Settings`: its kind and whether None is
    valid from its type (``int | None``), the rest from its row."""
    kinds = typing.get_args(hint) or (hint,)
    row = dict(field.metadata[_ROW])
    help = row.pop("help")
    kind = next(k for k in kinds if k is not type(None))
    return Setting(field.name, kind, field.default, help, optional=type(None) in kinds, **row)


SETTINGS: tuple[Setting, ...] = tuple(
    _setting(field, typing.get_type_hints(Settings)[field.name])
    for field in dataclasses.fields(Settings)
)

BY_NAME: Mapping[str, Setting] = {setting.name: setting for setting in SETTINGS}


def of_scope(*scopes: Scope) -> list[Setting]:
    """The settings of ``scopes``, in table order."""
    return [setting for setting in SETTINGS if setting.scope in scopes]


def default(name: str) -> Any:
    """The default of setting ``name`` (what serve() and fork_processes use)."""
    return BY_NAME[name].default


def check_tls(
    values: Mapping[str, Any], door: Callable[[Setting], str] = lambda s: s.flag
) -> dict[str, Any]:
    """The TLS settings in ``values`` (their defaults for those missing), if
    they go together; `ValueError` naming them as ``door`` does otherwise.
    Opens no file: what a command line can say before anything is loaded."""
    tls = {s.name: values.get(s.name, s.default) for s in of_scope(Scope.TLS)}
    names = {s.name: door(s) for s in of_scope(Scope.TLS)}
    if (tls["certfile"] is None) != (tls["keyfile"] is None):
        raise ValueError(f"{names['certfile']} and {names['keyfile']} go together")
    if tls["certfile"] is None:
        extras = [names[n] for n in ("ca_certs", "ciphers") if tls[n] is not None]
        if tls["cert_reqs"] != "none":
            extras.append(names["cert_reqs"])
        if extras:
            raise ValueError(f"{', '.join(extras)} need {names['certfile']} and {names['keyfile']}")
    return tls


def ssl_context(
    values: Mapping[str, Any], door: Callable[[Setting], str] = lambda s: s.flag
) -> ssl.SSLContext | None:
    """The server's TLS context from the TLS settings in ``values``, or None
    without a certificate. Raises `.StartupError` naming the file that cannot
    be loaded and `ValueError` for settings that do not go together
    (`check_tls`); ``door`` names a setting as the user gave it (default: its
    flag, ``--ca-certs``)."""
    tls = check_tls(values, door)
    if tls["certfile"] is None:
        return None
    names = {s.name: door(s) for s in of_scope(Scope.TLS)}
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls["certfile"], tls["keyfile"])
    except (OSError, ssl.SSLError) as e:
        raise StartupError(
            f"cannot load {names['certfile']} {tls['certfile']} / "
            f"{names['keyfile']} {tls['keyfile']}: {e}"
        ) from e
    if tls["ca_certs"] is not None:
        try:
            context.load_verify_locations(tls["ca_certs"])
        except (OSError, ssl.SSLError) as e:
            raise StartupError(f"cannot load {names['ca_certs']} {tls['ca_certs']}: {e}") from e
    context.verify_mode = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[tls["cert_reqs"]]
    if tls["ciphers"] is not None:
        try:
            context.set_ciphers(tls["ciphers"])
        except ssl.SSLError as e:
            raise StartupError(f"{names['ciphers']} {tls['ciphers']!r}: {e}") from e
    return context


def _shown(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


_WHERE = {
    Scope.SERVE: "serve(), option",
    Scope.HTTP: "serve() (HTTPServer), option",
    Scope.TLS: "option; serve() takes `ssl_options`",
    Scope.COMMAND: "command line only",
}


def markdown_table() -> str:
    """The README's table of every setting, generated from `SETTINGS`."""
    rows = [
        "| flag | `serve()` keyword and option | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for s in SETTINGS:
        default = f"`{s.show(s.default)}`"
        if s.command_default is not None:
            default += f" (command line: `{s.show(s.command_default)}`)"
        name = f"`{s.name}`" if s.scope in (Scope.SERVE, Scope.HTTP) else f"({_WHERE[s.scope]})"
        rows.append(f"| `{s.flag}` | {name} | {default} | {s.meaning().replace('|', '/')} |")
    return "\n".join(rows) + "\n"
