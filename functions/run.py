"""``knpy func run``: the function on this machine, behind a real queue-proxy, reloaded on
every change.

Theory of operation. Three processes, as a Knative pod has two containers:

    client -> queue-proxy (--port, 8080)  -> host (python -m functions.host) -> the function
              python -m queueproxy            on a socket this process owns

- The queue-proxy is started as the local platform starts a pod's sidecar
  (controlplane/podspec.py): Knative's environment (SERVING_*, USER_PORT, ...), knpy's extra
  ports on free loopback ports, and SERVING_READINESS_PROBE an httpGet of
  ``/health/readiness``, the readiness endpoint Knative's ``func deploy`` gives a function.
- The function's listening socket is bound here, once, and handed to each host process
  (KNPY_LISTEN_FD). A reload starts the new host beside the old one; once the new one says it
  is ready (a line on the KNPY_READY_FD pipe, after its ``start``), the old one is sent
  SIGTERM and drains (functions/host.py ``serve``). No connection is refused and no request
  fails during a reload: requests wait in the shared socket's backlog, or are answered by
  the old code until the new code is ready.
- The files under the function's directory (``*.py``, func.yaml, pyproject.toml, ...; not
  .func, .venv, .git or caches) are polled every ``POLL_INTERVAL_S`` (50 ms: a walk of a small
  project costs well under a millisecond). No dependency on inotify, which not every file
  system (network mounts, some container bind mounts) delivers.
- A host that fails to load (a syntax error, an import error, no ``handle``) prints why, and
  until the next change this process answers every request on the socket itself: 503 with
  the same message, so ``knpy func invoke`` and curl show the error too.
- ``.func/run.json`` (Knative's runtime metadata directory) holds this process's pid and the
  URL while it runs: ``knpy func invoke`` finds the local instance there.

The environment of the function: this shell's, then func.yaml's ``run.envs``, then ``-e``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import IO, Final

from functions.host import LISTEN_FD_ENV, PARENT_PID_ENV, READY_FD_ENV, STANDBY_ENV
from functions.project import (
    FunctionProject,
    ProjectError,
    duration_s,
    load,
    resolve_envs,
    source_files,
)
from shared.ports import LOOPBACK, free_port

__all__ = [
    "RUN_FILE",
    "RunConfig",
    "Runner",
    "read_instance",
    "run_command",
    "snapshot",
]

POLL_INTERVAL_S: Final = 0.05
SETTLE_POLLS: Final = 4  # 0.2 s at most spent waiting for a save to finish (Runner.settle)
STOP_GRACE_S: Final = 2.0
READY_TIMEOUT_S: Final = 30.0
RUN_FILE: Final = "run.json"
_ROOT: Final = Path(__file__).resolve().parents[1]  # where `python -m queueproxy` imports from


# -- watching ------------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, int]:
    """Every watched file under ``root`` with its mtime (ns) and size folded in."""
    out: dict[str, int] = {}
    for entry in source_files(root):
        with contextlib.suppress(OSError):
            st = entry.stat()
            out[entry.path] = st.st_mtime_ns ^ (st.st_size << 1)
    return out


def changed(before: Mapping[str, int], after: Mapping[str, int]) -> list[str]:
    """The files added, removed or modified between two snapshots."""
    keys = before.keys() | after.keys()
    return sorted(k for k in keys if before.get(k) != after.get(k))


# -- the instance file ---------------------------------------------------------------------------
def read_instance(project: FunctionProject) -> str | None:
    """The URL of the function's local instance, if one is running (its pid alive)."""
    path = project.run_dir / RUN_FILE
    try:
        doc = json.loads(path.read_text())
        pid, url = int(doc["pid"]), str(doc["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    return url


# -- the fallback server -------------------------------------------------------------------------
class _BrokenHandler(BaseHTTPRequestHandler):
    """Answers 503 with the load error while the function cannot load."""

    message: bytes = b""
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(503)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(self.message)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self.message)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up on the 503 (a probe's timeout) is no news


class _Fallback:
    """An HTTP server on a duplicate of the function's socket, in a thread."""

    def __init__(self, sock: socket.socket, message: str) -> None:
        handler = type("Handler", (_BrokenHandler,), {"message": message.encode()})
        self.server = _QuietServer(sock.getsockname()[:2], handler, bind_and_activate=False)
        self.server.socket.close()
        self.server.socket = sock.dup()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


# -- the host process ---------------------------------------------------------------------------
class _Host:
    """One ``python -m functions.host`` process: its stderr copied to ours (a load error's
    text kept for the fallback), and the pipe on which it says it is ready."""

    def __init__(self, proc: subprocess.Popen[bytes], ready_fd: int) -> None:
        self.proc = proc
        self.ready_fd = ready_fd
        self.errors: list[str] = []
        self.relay = threading.Thread(target=self._relay, daemon=True)
        self.relay.start()

    def _relay(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            sys.stderr.write(line)
            sys.stderr.flush()
            if line.startswith("Error: ") or self.errors:
                self.errors.append(line)

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the host wrote "ready"; False if it exited (or timed out) first."""
        ready, _, _ = select.select([self.ready_fd], [], [], timeout_s)
        said = os.read(self.ready_fd, 64) if ready else b""
        os.close(self.ready_fd)
        self.ready_fd = -1
        if said.startswith(b"ready"):
            return True
        if ready:  # the pipe closed: the host is exiting, its error on the way
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_GRACE_S)
            self.relay.join(timeout=1.0)  # the error's last lines
        return False

    def wake(self) -> bool:
        """Tell a spare to load the function; False if it is gone."""
        stdin = self.proc.stdin
        if stdin is None:
            return False
        try:
            stdin.write(b"go\n")
            stdin.close()
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1
        self.relay.join(timeout=1.0)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


# -- the runner ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunConfig:
    root: Path
    port: int = 8080  # the queue-proxy's; 0: a free one
    address: str = LOOPBACK
    envs: Mapping[str, str] | None = None  # -e, over func.yaml's run.envs
    reload: bool = True
    start_timeout_s: float | None = None  # --start-timeout, over func.yaml's run.startTimeout


def _bind(host: str, port: int, what: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ProjectError(
                f"port {port} on {host} is in use ({what}): stop what listens there, or "
                "choose another with --port N (--port 0 picks a free one)"
            ) from None
        raise ProjectError(f"cannot listen on {host}:{port} ({what}): {err.strerror}") from None
    return sock


class Runner:
    """The queue-proxy and the host of one function, and the reload loop."""

    def __init__(self, cfg: RunConfig, out: IO[str] | None = None) -> None:
        self.cfg = cfg
        self.out = out or sys.stdout
        self.project = load(cfg.root)
        self.env = self._environment(self.project)
        # The queue-proxy's port is checked by binding it here and released just before the
        # queue-proxy binds it: a clear error now instead of a queue-proxy that dies. --port 0
        # is shared.ports.free_port's pick (KNPY_PORT_RANGE when set), not the kernel's: an
        # ephemeral port released here may be an outgoing connection's before the bind.
        port = cfg.port
        if port == 0 and ":" not in cfg.address:
            port = free_port(cfg.address)
        probe = _bind(cfg.address, port, "the function's URL")
        self.port = probe.getsockname()[1]
        probe.close()
        self.app_sock = _bind(LOOPBACK, 0, "the function")
        self.app_sock.listen(1024)
        self.app_port: int = self.app_sock.getsockname()[1]
        self.host: _Host | None = None
        self.spare: _Host | None = None  # the next host, imported and waiting (start_spare)
        self.retiring: list[tuple[_Host, float]] = []
        self.queue: subprocess.Popen[bytes] | None = None
        self.fallback: _Fallback | None = None
        self.url = f"http://{cfg.address}:{self.port}"
        self.reloads = 0

    def _environment(self, project: FunctionProject) -> dict[str, str]:
        env = dict(os.environ)
        env.update(resolve_envs(project.envs, os.environ))
        env.update(self.cfg.envs or {})
        return env

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    # -- processes
    def start_queue_proxy(self) -> None:
        name = self.project.name
        log = self.project.run_dir / "queue-proxy.log"
        self.project.run_dir.mkdir(exist_ok=True)
        probe = {
            "httpGet": {"path": "/health/readiness", "port": self.app_port, "host": LOOPBACK},
            "periodSeconds": 0,
        }
        env = dict(os.environ)
        env.update(
            SERVING_NAMESPACE="default",
            SERVING_SERVICE=name,
            SERVING_CONFIGURATION=name,
            SERVING_REVISION=f"{name}-local",
            SERVING_POD=f"{name}-local-run",
            SERVING_POD_IP=LOOPBACK,
            QUEUE_BIND_HOST=self.cfg.address,
            USER_HOST=LOOPBACK,
            QUEUE_SERVING_PORT=str(self.port),
            QUEUE_ADMIN_PORT=str(free_port()),
            QUEUE_METRICS_PORT=str(free_port()),
            USER_METRICS_PORT=str(free_port()),
            USER_PORT=str(self.app_port),
            CONTAINER_CONCURRENCY="0",
            QUEUE_DRAIN_PERIOD_SECONDS="0",  # Ctrl-C ends it now; nothing routes here
            SERVING_READINESS_PROBE=json.dumps(probe),
        )
        with log.open("wb") as sink:
            self.queue = subprocess.Popen(
                [sys.executable, "-m", "queueproxy"], env=env, cwd=_ROOT, stdout=sink,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def start_host(self) -> _Host:
        """A host for the code on disk now: the spare if one waits (woken), else a new one."""
        spare, self.spare = self.spare, None
        if spare is not None and spare.proc.poll() is None and spare.wake():
            return spare
        if spare is not None:
            self.retire(spare)
        return self.spawn_host(standby=False)

    def start_spare(self) -> None:
        """A host that imports what every host needs and waits (functions/host.py standby)."""
        if self.cfg.reload and self.spare is None:
            self.spare = self.spawn_host(standby=True)

    def drop_spare(self) -> None:
        spare, self.spare = self.spare, None
        self.retire(spare)

    def spawn_host(self, *, standby: bool) -> _Host:
        env = dict(self.env)
        if standby:
            env[STANDBY_ENV] = "1"
        env[LISTEN_FD_ENV] = str(self.app_sock.fileno())
        read_end, write_end = os.pipe()
        env[READY_FD_ENV] = str(write_end)
        env["PORT"] = str(self.app_port)
        env[PARENT_PID_ENV] = str(os.getpid())
        env.pop("LISTEN_ADDRESS", None)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{_ROOT}{os.pathsep}{path}" if path else str(_ROOT)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "functions.host", str(self.project.root)],
                env=env, cwd=self.project.root, stderr=subprocess.PIPE,
                stdin=subprocess.PIPE if standby else subprocess.DEVNULL,
                pass_fds=(self.app_sock.fileno(), write_end),
                # Its own process group: a terminal's Ctrl-C reaches this process, which
                # stops every host with SIGTERM (drain, then stop()), not a host or spare
                # in the middle of its imports. KNPY_RUN_PID ends it if this process dies.
                process_group=0,
            )  # fmt: skip
        finally:
            os.close(write_end)
        return _Host(proc, read_end)

    def retire(self, host: _Host | None) -> None:
        """SIGTERM a host; it drains (functions/host.py serve) and is reaped later."""
        if host is not None and host.proc.poll() is None:
            host.proc.terminate()
            self.retiring.append((host, time.monotonic() + STOP_GRACE_S))
        elif host is not None:
            host.close()

    def reap(self, *, wait: bool = False) -> None:
        kept = []
        for host, deadline in self.retiring:
            if wait:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if host.proc.poll() is None and time.monotonic() >= deadline:
                host.proc.kill()
                host.proc.wait()
            if host.proc.poll() is None:
                kept.append((host, deadline))
            else:
                host.close()
        self.retiring = kept

    def close(self) -> None:
        if self.fallback is not None:
            self.fallback.close()
            self.fallback = None
        self.drop_spare()
        self.retire(self.host)
        self.host = None
        queue, self.queue = self.queue, None
        if queue is not None and queue.poll() is None:
            queue.terminate()
        self.reap(wait=True)
        if queue is not None:
            try:
                queue.wait(timeout=5)
            except subprocess.TimeoutExpired:
                queue.kill()
                queue.wait()
        self.app_sock.close()
        path = self.project.run_dir / RUN_FILE
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            # Only our own: a second ``knpy func run`` of the directory (another --port)
            # wrote its own and runs on; invoke must go on finding it.
            if int(json.loads(path.read_text())["pid"]) == os.getpid():
                path.unlink()

    # -- the loop
    def _start_function(self) -> bool:
        """Start a host beside whatever serves now; once it is ready, retire the old one
        (a host or the fallback). If it does not load, serve its error instead."""
        host = self.start_host()
        limit_s = self.cfg.start_timeout_s or self.project.start_timeout_s or READY_TIMEOUT_S
        loaded = host.wait_ready(limit_s)
        old, self.host = self.host, None
        self.retire(old)
        if self.fallback is not None:
            self.fallback.close()
            self.fallback = None
        if loaded:
            self.host = host
            self.start_spare()
            return True
        slow = host.proc.poll() is None  # still starting: not an error of its own
        self.retire(host)
        self.start_spare()
        message = "".join(host.errors).strip()
        if not message:  # the host said nothing itself: say it here
            message = (
                f"Error: the function was not ready within {limit_s:g} s (its start() may "
                "wait on something; --start-timeout or func.yaml's run.startTimeout give it "
                "longer)"
                if slow
                else "Error: the function exited before it was ready"
            )
            self.say(message)
        self.fallback = _Fallback(self.app_sock, f"knpy func run: {message}\n")
        if self.cfg.reload:
            self.say("The function did not load; fix it and save: it reloads on every change.")
        else:
            self.say("The function did not load; fix it and start knpy func run again.")
        return False

    def write_instance(self) -> None:
        self.project.run_dir.mkdir(exist_ok=True)
        doc = {"pid": os.getpid(), "url": self.url, "queueProxy": self.port,
               "function": self.app_port}  # fmt: skip
        path = self.project.run_dir / RUN_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc) + "\n")
        tmp.replace(path)  # atomic: a reader sees the whole file or none

    def wait_queue_proxy(self, *, loaded: bool, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until the queue-proxy serves: with the function loaded, until it answers its own
        probe (``K-Network-Probe: queue``, the function's readiness through it); with the
        function broken, that probe would fail until the next save, so until it answers the
        ingress's probe (``K-Network-Probe: probe``, answered by the queue-proxy alone).

        Raises:
            ProjectError: it exited or did not answer in time (its log's end says why).
        """
        import http.client

        if loaded:
            headers, want = {"K-Network-Probe": "queue"}, b"queue"
        else:
            headers, want = {"K-Network-Probe": "probe", "K-Network-Hash": "knpy-func-run"}, b""
        end = time.monotonic() + timeout_s
        log = self.project.run_dir / "queue-proxy.log"
        while time.monotonic() < end:
            queue = self.queue
            if queue is None or queue.poll() is not None:
                break
            conn = http.client.HTTPConnection(self.cfg.address, self.port, timeout=1.0)
            try:
                conn.request("GET", "/", headers=headers)
                resp = conn.getresponse()
                if resp.read() == want and resp.status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.01)
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise ProjectError(f"the queue-proxy did not start; the end of {log}:\n{tail}")

    def run(self) -> int:
        t0 = time.monotonic()
        seen = snapshot(self.project.root)  # before the host imports: no change is missed
        self.start_queue_proxy()
        loaded = self._start_function()
        self.wait_queue_proxy(loaded=loaded)
        self.write_instance()
        invoke = "CloudEvents" if self.project.invoke == "cloudevent" else "HTTP"
        took = time.monotonic() - t0
        state = "running" if loaded else "not loaded"
        self.say(
            f"Function '{self.project.name}' ({invoke}) {state} at {self.url} "
            f"(queue-proxy; started in {took:.2f} s). Ctrl-C stops it."
        )
        if self.cfg.reload:
            self.say(f"Watching {self.project.root} for changes.")
        while True:
            time.sleep(POLL_INTERVAL_S)
            self.reap()
            queue = self.queue
            if queue is not None and queue.poll() is not None:
                self.say(
                    f"The queue-proxy exited ({queue.returncode}); its log: "
                    f"{self.project.run_dir / 'queue-proxy.log'}"
                )
                return 1
            if not self.cfg.reload:
                continue
            now = snapshot(self.project.root)
            if not changed(seen, now):
                continue
            settled = self.settle(now)
            diff, seen = changed(seen, settled), settled
            if diff:
                self.reload([os.path.relpath(p, self.project.root) for p in diff])

    def settle(self, now: dict[str, int]) -> dict[str, int]:
        """The tree once two polls in a row see it alike (``SETTLE_POLLS`` polls at most).

        An editor may save several files in a row, or a large one in several writes; a host
        started in between would import half a change and fail (its traceback, and a cold spare
        for the rest of the change). A writer that pauses longer than a poll is still seen
        half-way: the next poll reloads the rest."""
        for _ in range(SETTLE_POLLS):
            time.sleep(POLL_INTERVAL_S)
            again = snapshot(self.project.root)
            if again == now:
                break
            now = again
        return now

    def reload(self, files: list[str]) -> None:
        t0 = time.monotonic()
        names = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        if any(Path(f).name == "func.yaml" for f in files):
            try:
                self.project = load(self.cfg.root)
                self.env = self._environment(self.project)
                self.drop_spare()  # it has the old environment
            except ProjectError as err:
                self.say(f"Error: {err}")
                self.say("Not reloaded: the function runs on with the func.yaml it had.")
                return
        if self._start_function():
            self.reloads += 1
            self.say(f"Reloaded in {time.monotonic() - t0:.2f} s ({names} changed)")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def interrupt(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_pairs(items: list[str], flag: str = "-e") -> dict[str, str]:
    """``NAME=VALUE`` flags (run's ``-e`` and invoke's ``-e``) as a mapping; the value may hold
    ``=``.

    Raises:
        ProjectError: an item without ``=`` or without a name.
    """
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ProjectError(f"{flag} {item!r}: want NAME=VALUE")
        out[name] = value
    return out


def run_command(args: argparse.Namespace) -> int:
    """``knpy func run`` (functions/cli.py)."""
    cfg = RunConfig(
        root=args.path,
        port=args.port,
        address=args.address,
        envs=parse_pairs(args.env),
        reload=not args.no_reload,
        start_timeout_s=None if args.start_timeout is None else duration_s(
            args.start_timeout, "--start-timeout"
        ),
    )
    runner = Runner(cfg)
    with _sigterm_as_interrupt():
        try:
            return runner.run()
        except KeyboardInterrupt:
            runner.say("Stopping.")
            return 0
        finally:
            runner.close()
