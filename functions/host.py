"""``python -m functions.host DIR``: serve the function in DIR over HTTP, in this process.

The role of Knative's scaffolding plus func-python (knative/func
templates/python/scaffolding/instanced-{http,cloudevents}/service/main.py, func-python
src/func_python/http.py): import the user's package ``function`` from DIR, take ``new()``
(an instance) or else a module-level ``handle`` (wrapped, as func-python's DefaultFunction),
call ``start(cfg)`` with a copy of the environment, serve, and call ``stop()`` on SIGTERM or
SIGINT. The middleware is chosen by func.yaml's ``invoke`` (``cloudevent`` or http), as
Knative's scaffolding picks instanced-cloudevents or instanced-http from it.

The address is Knative's: ``LISTEN_ADDRESS`` (``host:port``, comma-separated, as func-python's
sock.py reads it), else all interfaces on ``$PORT`` (8080 when unset), which is where a
Knative revision's user container listens. ``knpy func run`` instead hands over a listening
socket (``KNPY_LISTEN_FD``) that outlives each reload. Two differences from func-python's
default (``[::]:8080,0.0.0.0:8080``), on purpose: the port is ``$PORT``, Knative's container
contract, because knpy serve's kubelet moves every pod's 8080 to a free port and says where in
PORT; and IPv4 only, because the queue-proxy dials the user container at 127.0.0.1.

The server is knpy's own minimal ASGI HTTP/1.1 server (functions/server.py: httptools on
uvloop), not Hypercorn. Measured side by side in benchmarks/functions (docs/functions.md).

A function that cannot load ends the process with status 1 and says why on stderr: the
syntax error with its file, line and caret; the traceback of an import that failed, cut to
the function's own frames; a missing ``new``/``handle``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib
import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from functions.middleware import FunctionApp

__all__ = ["LoadError", "load_function", "main", "parse_listen", "serve"]

PACKAGE: Final = "function"  # Knative's Python layout: function/__init__.py, function/func.py
DEFAULT_PORT: Final = 8080
READY_FD_ENV: Final = "KNPY_READY_FD"
STANDBY_ENV: Final = "KNPY_HOST_STANDBY"
PARENT_PID_ENV: Final = "KNPY_RUN_PID"
_PARENT_CHECK_S: Final = 0.5
# How long a stopping host keeps its open connections for their next request (serve()).
DRAIN_S: Final = 1.0
LISTEN_FD_ENV: Final = "KNPY_LISTEN_FD"
_READ_CHUNK_BYTES: Final = 64 * 1024
log = logging.getLogger("functions.host")


class LoadError(Exception):
    """The function could not be loaded; the message is what to show the developer."""


class DefaultFunction:
    """A module-level ``handle`` as an instance (func-python's DefaultFunction)."""

    __slots__ = ("handle",)

    def __init__(self, handle: Callable[..., Any]) -> None:
        self.handle = handle

    def __repr__(self) -> str:
        return f"<DefaultFunction {getattr(self.handle, '__qualname__', self.handle)!r}>"


def _user_traceback(err: BaseException, root: Path) -> str:
    """The traceback with only the frames in the function's directory (importlib's and ours
    are noise to the developer), ending in the exception line."""
    tb = traceback.TracebackException.from_exception(err)
    where = str(root)
    kept = [f for f in tb.stack if f.filename.startswith(where)]
    tb.stack = traceback.StackSummary.from_list(kept)
    return "".join(tb.format()).rstrip()


def load_function(root: Path) -> object:
    """Import ``function`` from ``root`` and return the function instance.

    Raises:
        LoadError: a syntax error, an import that failed, no ``new``/``handle``, or ``new()``
            failing or returning an object without ``handle``.
    """
    root = root.resolve()
    if not (root / PACKAGE / "__init__.py").is_file():
        raise LoadError(
            f"{root} has no {PACKAGE}/__init__.py: a Python function lives in the package "
            f"'{PACKAGE}' (function/__init__.py exporting new, function/func.py)"
        )
    sys.path.insert(0, str(root))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    try:
        module = importlib.import_module(PACKAGE)
    except SyntaxError as err:
        detail = "".join(traceback.format_exception_only(err)).rstrip()
        raise LoadError(
            f"the function does not compile: {err.filename}, line {err.lineno}:\n{detail}"
        ) from None
    except Exception as err:
        raise LoadError(f"the function failed to import:\n{_user_traceback(err, root)}") from None
    new = getattr(module, "new", None)
    handle = getattr(module, "handle", None)
    if new is None and handle is None:
        # Knative's scaffolding imports only from the package; the module is a kind fallback
        # for an __init__.py that was not updated after renaming new() to handle().
        func = sys.modules.get(f"{PACKAGE}.func")
        new = getattr(func, "new", None)
        handle = getattr(func, "handle", None)
    if callable(new):
        try:
            instance = new()
        except Exception as err:
            raise LoadError(f"new() failed:\n{_user_traceback(err, root)}") from None
        if not callable(getattr(instance, "handle", None)):
            raise LoadError(
                f"new() returned {type(instance).__name__}, which has no handle method: give "
                "it `async def handle(self, scope, receive, send)`"
            )
        return instance
    if callable(getattr(handle, "handle", None)):
        return handle  # a decorated function (functions/decorators.py) is an instance
    if callable(handle):
        return DefaultFunction(handle)
    raise LoadError(
        f"{root / PACKAGE / '__init__.py'} exports neither new nor handle. Define "
        "`def new()` returning an object with `async def handle(self, scope, receive, send)` "
        "(Knative's template), or a module-level `async def handle(scope, receive, send)`, "
        "and export it from function/__init__.py (`from .func import new`)."
    )


# -- the server ----------------------------------------------------------------------------------
def parse_listen(env: Mapping[str, str]) -> list[tuple[str, int]]:
    """``LISTEN_ADDRESS`` (func-python's sock.py: ``host:port`` and ``[v6]:port``, by commas),
    else ``0.0.0.0:$PORT``.

    Raises:
        LoadError: an address that does not parse.
    """
    listen = env.get("LISTEN_ADDRESS", "").strip()
    if not listen:
        port_text = env.get("PORT", "") or str(DEFAULT_PORT)
        listen = f"0.0.0.0:{port_text}"
    out: list[tuple[str, int]] = []
    for item in listen.split(","):
        host, sep, port_text = item.strip().rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            port = -1
        if not sep or not 0 <= port <= 65535:
            raise LoadError(f"LISTEN_ADDRESS / PORT: {item!r} is not host:port")
        out.append((host.strip("[]") or "0.0.0.0", port))
    return out


def bind_sockets(addresses: Sequence[tuple[str, int]]) -> list[socket.socket]:
    """Listening sockets for ``addresses``.

    Raises:
        LoadError: an address in use or not available, with what to do.
    """
    out: list[socket.socket] = []
    for host, port in addresses:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            sock.close()
            for s in out:
                s.close()
            if err.errno == errno.EADDRINUSE:
                raise LoadError(
                    f"port {port} on {host} is in use: stop what listens there, or choose "
                    "another port (knpy func run --port N; the host reads PORT or "
                    "LISTEN_ADDRESS)"
                ) from None
            raise LoadError(f"cannot listen on {host}:{port}: {err.strerror}") from None
        sock.listen(1024)
        sock.setblocking(False)
        out.append(sock)
    return out


def inherited_sockets(env: Mapping[str, str]) -> list[socket.socket]:
    """The listening socket ``knpy func run`` hands over (KNPY_LISTEN_FD, knpy's addition:
    the socket outlives each reload, so no connection is refused while the code reloads)."""
    fd_text = env.get(LISTEN_FD_ENV, "")
    if not fd_text:
        return []
    try:
        sock = socket.socket(fileno=int(fd_text))
    except (ValueError, OSError) as err:
        raise LoadError(f"{LISTEN_FD_ENV}={fd_text!r}: not a socket ({err})") from None
    sock.setblocking(False)
    return [sock]


async def serve(
    instance: object,
    invoke: Literal["http", "cloudevent"],
    sockets: Sequence[socket.socket],
    cfg: dict[str, str],
    stop: asyncio.Event,
    *,
    ready_fd: int | None = None,
    drain_s: float = DRAIN_S,
) -> None:
    """Start the function, serve on ``sockets`` until ``stop`` is set, then drain and stop it.

    Draining: stop accepting (the next process sharing the socket takes the new
    connections), answer each request still arriving on an open connection with
    ``Connection: close``, and wait up to ``drain_s`` for the connections to end, before
    closing the rest and calling ``stop()``. A keep-alive client (the queue-proxy) then sees
    its connection closed after a response, not under a request it just sent (a 502).
    """
    from functions.server import Server

    app = FunctionApp(instance, invoke)
    await app.start(cfg)
    server = Server(app)
    for sock in sockets:
        await server.listen(sock)
    log.info("function %s serving on %s", type(instance).__name__, _names(sockets))
    if ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
    try:
        await stop.wait()
    finally:
        await server.drain(drain_s)
        await app.stop()


def _names(sockets: Sequence[socket.socket]) -> str:
    return ", ".join("{}:{}".format(*s.getsockname()[:2]) for s in sockets)


def standby() -> bool:
    """A spare for ``knpy func run`` (KNPY_HOST_STANDBY): import what every host needs, then
    wait for "go" on stdin before loading the function. Under load the imports take most of
    a host's start (uvloop, httptools, the CloudEvents SDK: 0.6 s to 1.2 s of a 2-core machine
    shared with other work, against 0.1 s for a bare interpreter), so a reload that wakes a
    spare serves the change in the time the user's own code takes to import.

    Returns False when stdin closes without "go" (the spare was not needed). Ctrl-C in the
    terminal reaches the whole process group; the spare leaves it to ``knpy func run``, which
    closes its stdin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import httptools  # noqa: F401
    import uvloop  # noqa: F401

    import functions.decorators
    import functions.events
    import functions.server  # noqa: F401  (serve's; 7.5 ms of imports here, email.utils's)

    go = sys.stdin.readline().strip() == "go"
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return go


async def _orphaned(parent: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once ``knpy func run`` (pid ``parent``) is gone: a host in its own
    process group would otherwise outlive a ``kill -9`` of it."""
    while not stop.is_set():
        if os.getppid() != parent:
            log.info("knpy func run is gone: stopping")
            stop.set()
            return
        await asyncio.sleep(_PARENT_CHECK_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m functions.host", description="Serve a Knative Python function."
    )
    parser.add_argument("path", nargs="?", default=".", type=Path, help="the function's dir")
    parser.add_argument(
        "--invoke", choices=("http", "cloudevent"), default=None, help="default: func.yaml's"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from functions.project import ProjectError, load

    if os.environ.get(STANDBY_ENV) and not standby():
        return 0

    try:
        project = load(args.path)
        instance = load_function(project.root)
        # A decorated function says what it takes (functions/decorators.py).
        invoke = args.invoke or getattr(instance, "invoke", None) or project.invoke
        sockets = inherited_sockets(os.environ) or bind_sockets(parse_listen(os.environ))
    except (LoadError, ProjectError) as err:
        print(f"Error: {err}", file=sys.stderr, flush=True)
        return 1
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        parent = os.environ.get(PARENT_PID_ENV, "")
        watch = asyncio.create_task(_orphaned(int(parent), stop)) if parent.isdigit() else None
        ready = os.environ.get(READY_FD_ENV, "")
        try:
            await serve(instance, invoke, sockets, dict(os.environ), stop,
                        ready_fd=int(ready) if ready.isdigit() else None)  # fmt: skip
        except Exception as err:
            # start() failed (func-python: lifespan.startup.failed ends the server).
            print(f"Error: the function's start failed:\n{_user_traceback(err, project.root)}",
                  file=sys.stderr, flush=True)  # fmt: skip
            return 1
        finally:
            if watch is not None:
                watch.cancel()
        return 0

    code: int = runner(run())
    return code


if __name__ == "__main__":
    sys.exit(main())
