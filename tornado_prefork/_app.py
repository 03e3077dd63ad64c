"""The application given to `tornado_prefork.serve`: an object, a factory or an import string.

An import string is first checked in the parent without running the module
(it is found, its source compiles, the name is defined at its top level), so
that a typo is one line before anything runs; `tornado_prefork._preload`
then imports it in the parent, or each worker does (``preload=False``).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import io
import re
from collections.abc import Awaitable, Callable

from tornado.httputil import HTTPServerConnectionDelegate

from tornado_prefork import options
from tornado_prefork.errors import StartupError

# Arguments for the application's own tornado.options (the command line's
# after "--"), parsed right after the import string's module is imported.
_app_argv: list[str] | None = None

Factory = Callable[[], HTTPServerConnectionDelegate | Awaitable[HTTPServerConnectionDelegate]]
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


async def load(app: AppSource) -> HTTPServerConnectionDelegate:
    """In a worker: imports and calls what is needed to get the application.

    A factory may be a coroutine function, awaited on the worker's event loop.
    """
    obj: object = import_target(app) if isinstance(app, str) else app
    if not isinstance(obj, HTTPServerConnectionDelegate) and callable(obj):
        obj = obj()
        if inspect.isawaitable(obj):
            obj = await obj
    if not isinstance(obj, HTTPServerConnectionDelegate):
        raise TypeError(
            f"{describe(app)} gave {type(obj).__name__} {obj!r}, not a tornado.web.Application"
        )
    return obj


def parse_options_after_import(argv: list[str]) -> None:
    """Has `import_target` parse ``argv`` with `tornado.options` right after
    it imports the application's module (which defines its options)."""
    global _app_argv
    _app_argv = list(argv)


def _parse_app_options(target: str, argv: list[str]) -> None:
    # Not final: the parse callbacks would redo the server's logging set-up.
    # Tornado prints its whole help before it raises on an unknown option:
    # the error alone says it, once, not once per worker.
    with contextlib.redirect_stderr(io.StringIO()):
        options.parse_command_line([target, *argv], final=False)


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
    names = _top_level_names(tree.body)
    dynamic = "*" in names or "__getattr__" in names
    if not dynamic and name not in names:
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


def _top_level_names(body: list[ast.stmt]) -> set[str]:
    """Names a module binds outside functions and classes ("*" for a star import)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, block, [])
                for child in children:
                    if isinstance(child, ast.ExceptHandler):
                        names |= _top_level_names(child.body)
                    else:
                        names |= _top_level_names([child])
        elif isinstance(node, ast.Pass):
            continue
        elif isinstance(node, ast.Expr):
            for sub in ast.walk(node):
                if isinstance(sub, ast.NamedExpr) or (
                    isinstance(sub, ast.Name) and sub.id in ("globals", "setattr", "exec")
                ):
                    # globals()["app"] = ... and friends bind names we cannot see.
                    names.add("*")
        else:
            # Anything else (match, walrus in an expression...) may bind the
            # name in ways not followed here: do not refuse on a guess.
            names.add("*")
    return names
