"""The application given to `tornado_prefork.serve`: an object, a factory or an import string.

An import string is first checked in the parent without running the module
(it is found, its source compiles, nothing rules out that it binds the name),
so that a typo is one line before anything runs; `tornado_prefork._serve.preload`
then imports it in the parent, or each worker does (``preload=False``).

A factory returns the application, and the worker serves it; one that starts
a server itself (Tornado's usual ``main()``) is refused as it tries, in a
worker or in the parent (``preload=True``), with the name of the function to
give instead (`servers_refused`). A lifespan is a function that returns an
async context manager (what `contextlib.asynccontextmanager` makes): entered
in the worker, it yields the application, and is exited after the drain.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import re
import sys
import textwrap
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import NoReturn, TypeGuard

from tornado.httputil import HTTPServerConnectionDelegate
from tornado.tcpserver import TCPServer
from tornado.web import Application

from tornado_prefork import options
from tornado_prefork.errors import StartupError

# Arguments for the application's own tornado.options (the command line's
# after "--"), parsed right after the import string's module is imported.
_app_argv: list[str] | None = None

Factory = Callable[
    [],
    HTTPServerConnectionDelegate
    | Awaitable[HTTPServerConnectionDelegate]
    | contextlib.AbstractAsyncContextManager[HTTPServerConnectionDelegate],
]
AppSource = HTTPServerConnectionDelegate | Factory | str

IMPORT_STRING = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def describe(app: AppSource) -> str:
    """A short name for logs and process titles."""
    if isinstance(app, str):
        return app
    if isinstance(app, HTTPServerConnectionDelegate):
        return f"{type(app).__module__}.{type(app).__qualname__} object"
    return f"{getattr(app, '__module__', '?')}:{getattr(app, '__qualname__', repr(app))}"


def check(app: object) -> None:
    """Checks ``app`` in the parent, before any fork.

    Raises `TypeError` for something that is no application at all and
    `StartupError` for an import string that cannot work.
    """
    if isinstance(app, str):
        _check_import_string(app)
    elif not isinstance(app, HTTPServerConnectionDelegate) and not callable(app):
        raise TypeError(
            "app must be a tornado.web.Application, a callable that returns one, or an "
            f"import string 'package.module:name', not {type(app).__name__} {app!r}"
        )


async def load(app: AppSource, lifespan: contextlib.AsyncExitStack) -> HTTPServerConnectionDelegate:
    """In a worker: imports and calls what is needed to get the application.

    A factory may be a coroutine function, awaited on the worker's event
    loop, or a lifespan, entered on the ``lifespan`` stack (which the worker
    exits after its drain). While it runs, starting a server
    (``Application.listen``, an `.HTTPServer`'s ``listen``, ``bind`` or
    ``add_sockets``) raises `.StartupError` saying what to give the server
    instead: that is a ``main()`` that serves the application itself, and
    would never return it. Raises `TypeError` if what it returns (or yields)
    is no application.
    """
    obj: object = import_target(app) if isinstance(app, str) else app
    if not isinstance(obj, HTTPServerConnectionDelegate) and callable(obj):
        with servers_refused(app):
            obj = obj()
            if inspect.isawaitable(obj):
                obj = await obj
            elif is_lifespan(obj):
                obj = await lifespan.enter_async_context(obj)
    if not isinstance(obj, HTTPServerConnectionDelegate):
        raise TypeError(
            f"{describe(app)} gave {type(obj).__name__} {obj!r}, not a "
            f"tornado.web.Application. {_instead(app)}"
        )
    return obj


def is_lifespan(obj: object) -> TypeGuard[contextlib.AbstractAsyncContextManager[object]]:
    """Whether a factory gave a lifespan (an async context manager) to enter."""
    return hasattr(obj, "__aenter__") and hasattr(obj, "__aexit__")


# How a main() serves an application itself; Application.listen is named
# apart because that is the call the user wrote.
_SERVER_STARTS: tuple[tuple[type, str], ...] = (
    (Application, "listen"),
    (TCPServer, "listen"),
    (TCPServer, "bind"),
    (TCPServer, "add_sockets"),
)


@contextlib.contextmanager
def servers_refused(app: AppSource, in_parent: bool = False) -> Iterator[None]:
    """Makes every way of starting a server raise `.StartupError` while the
    factory of ``app`` runs, in a worker or (``in_parent``) in the parent
    with ``preload=True``: a ``main()`` given as the factory would serve
    there for good instead of returning the application. Tornado offers no
    hook for it; the methods are put back at once, before the worker builds
    its own server."""
    where = "the parent was building" if in_parent else "the worker was building"
    never = "no worker would ever start" if in_parent else "the worker would never be ready"

    def refusal(name: str) -> Callable[..., NoReturn]:
        def refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
            caller = traceback.extract_stack(limit=2)[0]
            raise StartupError(
                f"{describe(app)} called {type(self).__name__}.{name}() "
                f"({caller.filename}:{caller.lineno}) while {where} its "
                "application: it serves the application itself (a main()) instead of "
                f"returning it, and {never}. {_instead(app)}"
            )

        return refuse

    saved = [(cls, name, cls.__dict__[name]) for cls, name in _SERVER_STARTS]
    for cls, name, _ in saved:
        setattr(cls, name, refusal(name))
    try:
        yield
    finally:
        for cls, name, method in saved:
            setattr(cls, name, method)


def _instead(app: AppSource) -> str:
    """What to point the server at instead of a function that does not
    return the application: the likely factories of its module, by name."""
    module_name = app.partition(":")[0] if isinstance(app, str) else getattr(app, "__module__", "")
    module = sys.modules.get(module_name)
    own = app.partition(":")[2] if isinstance(app, str) else getattr(app, "__name__", "")
    found = [
        f"{module_name}:{name}"
        for name, value in (vars(module).items() if module is not None else ())
        if name != own
        and not name.startswith("_")
        and (
            isinstance(value, HTTPServerConnectionDelegate)
            # make_app, create_app, get_application: what factories are called.
            or (inspect.isfunction(value) and value.__module__ == module_name and "app" in name)
        )
    ]
    made = _application_made_in(getattr(module, own, None) if isinstance(app, str) else app)
    if found:
        example = f"e.g. {' or '.join(found)}"
    elif made is not None:
        example = (
            f"such as 'def make_app(): return {made}' beside it in {module_name}, "
            f"then {module_name}:make_app"
        )
    else:
        example = "such as make_app in 'def make_app(): return tornado.web.Application([...])'"
    return (
        "Point the server at a function that returns the tornado.web.Application, "
        f"{example}: the server listens for every worker itself (--port, --address)."
    )


def _application_made_in(function: object) -> str | None:
    """The expression that builds the application in ``function``'s source
    (``tornado.web.Application([(r"/", MainHandler)])``), if it has one."""
    try:
        source = textwrap.dedent(inspect.getsource(function))  # type: ignore[arg-type]
        tree = ast.parse(source)
    except (TypeError, OSError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name.endswith("Application"):
                text = ast.get_source_segment(source, node)
                if text is not None and "\n" not in text:
                    return text
    return None


def parse_options_after_import(argv: list[str]) -> None:
    """Has `import_target` parse ``argv`` with `tornado.options` right after
    it imports the application's module (which defines its options)."""
    global _app_argv
    _app_argv = list(argv)


def _parse_app_options(target: str, argv: list[str]) -> None:
    # Not final: the parse callbacks would redo the server's logging set-up.
    options.parse_command_line([target, *argv], final=False, exit_on_error=False)


def import_target(target: str) -> object:
    """Imports the module of ``target`` (``"package.module:name"``) and returns the name.

    Raises what the import raises, `AttributeError` naming what is missing, or
    `tornado.options.Error` for arguments (`parse_options_after_import`) that
    the module's options do not take.
    """
    module_name, _, attribute = target.partition(":")
    # Files written since the parent started (a deploy) must be seen.
    importlib.invalidate_caches()
    obj: object = importlib.import_module(module_name)
    if _app_argv is not None:
        _parse_app_options(target, _app_argv)
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(f"{target!r}: {module_name} has no attribute {part!r}") from None
    return obj


def _check_import_string(target: str) -> None:
    if not IMPORT_STRING.match(target):
        raise StartupError(f"import string {target!r} must look like 'package.module:name'")
    module_name, _, attribute = target.partition(":")
    spec = _find(module_name, target)
    if spec.origin is None or not spec.origin.endswith(".py"):
        return
    try:
        with open(spec.origin, "rb") as f:
            tree = ast.parse(f.read(), spec.origin)
    except SyntaxError as e:
        raise StartupError(
            f"cannot import {module_name} ({target!r}): syntax error at "
            f"{e.filename}:{e.lineno}: {e.msg}"
        ) from e
    except OSError as e:
        raise StartupError(f"cannot import {module_name} ({target!r}): {e}") from e
    name = attribute.split(".")[0]
    if not _may_bind(tree, name) and not _is_submodule(spec, module_name, name):
        raise StartupError(f"{module_name} has no name {name!r} (from import string {target!r})")


def _find(module_name: str, target: str) -> importlib.machinery.ModuleSpec:
    # Found without running the module or its packages' __init__: the parent
    # must not hold user code that workers forked later would inherit stale.
    parts = module_name.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError) as e:
        raise StartupError(f"cannot import {module_name} ({target!r}): {e}") from e
    for depth in range(1, len(parts) + 1):
        if spec is None:
            raise StartupError(
                f"cannot import {module_name} ({target!r}): "
                f"no module named {'.'.join(parts[:depth])!r}"
            )
        if depth == len(parts):
            return spec
        if spec.submodule_search_locations is None:
            raise StartupError(
                f"cannot import {module_name} ({target!r}): "
                f"{'.'.join(parts[:depth])} is not a package"
            )
        spec = importlib.machinery.PathFinder.find_spec(
            ".".join(parts[: depth + 1]), list(spec.submodule_search_locations)
        )
    raise AssertionError("unreachable")


# Names through which code can bind any name of a module, or replace the
# module (sys.modules): a module that uses one is never refused.
_DYNAMIC = frozenset(
    {"globals", "vars", "locals", "exec", "eval", "setattr", "__setattr__", "__dict__"}
    | {"modules", "f_globals"}
)


def _may_bind(tree: ast.Module, name: str) -> bool:
    """False only if importing the module certainly leaves ``name`` unbound.

    The check refuses a typo before anything runs; it must never refuse a
    module that works, so anything it cannot follow counts as a binding: a
    star import, a module ``__getattr__``, ``global name`` in a function
    (which may run at import), an attribute assignment ``x.name = ...`` (``x``
    may be the module itself), and the names of `_DYNAMIC`.
    """
    bound = _module_scope_names(tree.body)
    if name in bound or "*" in bound or "__getattr__" in bound:
        return True
    for node in ast.walk(tree):
        if isinstance(node, ast.Global) and name in node.names:
            return True
        if isinstance(node, ast.Name) and node.id in _DYNAMIC:
            return True
        if isinstance(node, ast.Attribute) and (
            node.attr in _DYNAMIC or (node.attr == name and isinstance(node.ctx, ast.Store))
        ):
            return True
    return False


def _module_scope_names(body: list[ast.stmt]) -> set[str]:
    """Every name a statement of ``body`` can bind in the module's namespace
    ("*" for a star import), on any path through it: assignments of any
    shape, ``for``/``with``/``match`` targets, imports, walruses
    (those in comprehensions too), definitions. What function and class
    bodies bind is theirs, but their decorators, defaults, annotations and
    bases run in the module."""
    names: set[str] = set()
    todo: list[ast.AST] = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            todo += _run_in_enclosing_scope(node)
            continue
        if isinstance(node, ast.Lambda):
            todo += _run_in_enclosing_scope(node)
            continue
        if isinstance(node, ast.comprehension):
            # Its target is the comprehension's own; a walrus in it binds here.
            todo += [node.iter, *node.ifs]
            continue
        if isinstance(node, ast.AnnAssign) and node.value is None:
            # "name: T" alone binds nothing.
            todo.append(node.annotation)
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name is not None:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest is not None:
            names.add(node.rest)
        # An "except ... as name" is not followed: Python deletes the name
        # when the handler ends.
        todo += ast.iter_child_nodes(node)
    return names


def _run_in_enclosing_scope(
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda,
) -> list[ast.AST]:
    """The parts of a definition that are evaluated where it is defined."""
    if isinstance(node, ast.ClassDef):
        return [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]
    args = node.args
    found: list[ast.AST] = [*args.defaults, *(d for d in args.kw_defaults if d is not None)]
    if isinstance(node, ast.Lambda):
        return found
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    found += [a.annotation for a in every if a is not None and a.annotation is not None]
    return [*found, *node.decorator_list, *([node.returns] if node.returns else [])]


def _is_submodule(spec: importlib.machinery.ModuleSpec, module_name: str, name: str) -> bool:
    # Importing package.name anywhere sets the attribute on the package.
    if spec.submodule_search_locations is None:
        return False
    locations = list(spec.submodule_search_locations)
    found = importlib.machinery.PathFinder.find_spec(f"{module_name}.{name}", locations)
    return found is not None


def code_in_parent(source: AppSource) -> bool:
    """Whether the workers are built from code imported in the parent (so that
    only a re-exec in place loads new code)."""
    return not isinstance(source, str)
