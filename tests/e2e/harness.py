"""Whole-platform runs: a real ``knpy serve`` process on 127.0.0.1 and the clients to drive it.

Every test starts its own ``knpy serve`` (ingress, Kubernetes API, autoscaler and activator pods,
revision pods) on free loopback ports with its state dir under ``tmp_path``, the way a person
runs it, and talks to it only as a person would: ``knpy apply/get``, ``kubectl`` with the
kubeconfig it writes, the Kubernetes API with that kubeconfig's token, and HTTP through the
ingress with a Host header.
Nothing is faked. Time is bounded everywhere: each wait has a deadline, and a test that times
out names what it waited for, so a hang reads as a finding, not as a stuck CI job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import psutil

from controlplane.supervision import end_marked
from shared.ports import free_port

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
EXAMPLES: Final = REPO_ROOT / "examples"
# One knpy command or one request: far above what any of them takes on loopback (< 1 s).
STEP_S: Final = 30.0
# A pod is spawned, probed and published in about a second here; 30 s means it is stuck.
WAIT_S: Final = 30.0
# Short autoscaling windows so that an idle revision reaches zero pods in ~10 s rather than
# Knative's 90 s: the smallest stable window the validation allows (6 s, WINDOW_MIN_S in
# autoscaler/register.py) and a 2 s grace period (it must only be positive).
FAST_AUTOSCALER: Final = """
apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {stable-window: 6s, scale-to-zero-grace-period: 2s}
"""
READY_LINE: Final = b"knpy serve: ingress"

Json = dict[str, Any]


def slow_mode() -> bool:
    """KNPY_SLOW=1 runs the full form of the tests marked slow."""
    return os.environ.get("KNPY_SLOW", "") not in ("", "0")


def hello_yaml(name: str = "hello", *, env: str = "", annotations: str = "", cc: int = 0) -> str:
    """A Service running the sample app; ``env`` changes the template (a new revision)."""
    env_block = f"\n          env: [{{name: VERSION, value: '{env}'}}]" if env else ""
    ann_block = f"\n    metadata:\n      annotations: {{{annotations}}}" if annotations else ""
    return f"""
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  template:{ann_block}
    spec:
      containerConcurrency: {cc}
      containers:
        - image: knpy/sampleapp
          command: [python, {EXAMPLES / "sampleapp" / "app.py"}]{env_block}
"""


@dataclass
class LoadResult:
    """What a load saw: statuses and revisions by count, and every failure as text."""

    statuses: Counter[int] = field(default_factory=Counter)
    revisions: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.failures)

    def record(self, status: int, body: str) -> None:
        self.statuses[status] += 1
        if status != 200:
            self.failures.append(f"{status}: {body[:200]}")
        else:
            self.revisions[revision_of(body)] += 1


def revision_of(body: str) -> str:
    """The revision the sample app names in its ``GET /`` answer ("revision: hello-00001")."""
    for line in body.splitlines():
        if line.startswith("revision: "):
            return line.removeprefix("revision: ")
    return ""


class Serve:
    """One running ``knpy serve`` and the ways a person reaches it."""

    def __init__(
        self, proc: subprocess.Popen[bytes], port: int, api_port: int, log: Path, state: Path
    ):
        self.proc = proc
        self.port = port
        self.api = f"http://127.0.0.1:{api_port}"
        self.state = state
        self.kubeconfig = state / "kubeconfig"
        self.log_path = log
        self.session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<Serve pid={self.proc.pid} ingress=:{self.port} api={self.api}>"

    # -- the knpy commands, as real processes ----------------------------------------------
    async def knpy(self, *args: str, stdin: str = "", check: bool = True) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli", *args, "--kubeconfig", str(self.kubeconfig),
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), STEP_S)
        code = proc.returncode if proc.returncode is not None else -1
        if check:
            assert code == 0, f"knpy {' '.join(args)}: {err.decode()}"
        return code, out.decode(), err.decode()

    async def apply(
        self, text: str, check: bool = True, wait: bool = False
    ) -> tuple[int, str, str]:
        """``knpy apply -f -``; by default with ``--no-wait``, as these tests wait for what
        they need themselves (some apply services that are meant to fail)."""
        flags = () if wait else ("--no-wait",)
        return await self.knpy("apply", "-f", "-", *flags, stdin=text, check=check)

    async def get(self, kind: str, name: str = "") -> Json:
        _, out, _ = await self.knpy("get", kind, *([name] if name else []), "-o", "json")
        doc: Json = json.loads(out)
        return doc

    async def revision(self, name: str) -> Json:
        return await self.get("revisions", name)

    async def revision_names(self, service: str) -> list[str]:
        items = (await self.get("revisions"))["items"]
        return sorted(
            r["metadata"]["name"]
            for r in items
            if r["metadata"]["labels"].get("serving.knative.dev/service") == service
        )

    async def kube(self, path: str, **params: str) -> Json:
        """GET on the Kubernetes API with the kubeconfig's token (as any API client)."""
        url = f"{self.api}{path}"
        async with self.client().get(url, params=params, headers=self.auth()) as resp:
            assert resp.status == 200, f"GET {path}: {resp.status} {await resp.text()}"
            doc: Json = await resp.json()
            return doc

    def auth(self) -> dict[str, str]:
        import yaml

        config = yaml.safe_load(self.kubeconfig.read_text())
        return {"Authorization": f"Bearer {config['users'][0]['user']['token']}"}

    async def pods(self, revision: str, namespace: str = "default") -> list[Json]:
        """Every Pod object of a revision, ready or not (what the autoscaler counts)."""
        doc = await self.kube(
            f"/api/v1/namespaces/{namespace}/pods",
            labelSelector=f"serving.knative.dev/revision={revision}",
        )
        pods: list[Json] = doc["items"]
        return pods

    async def kubectl(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        """``kubectl --kubeconfig <state>/kubeconfig ARGS`` (Debian's kubernetes-client)."""
        proc = await asyncio.create_subprocess_exec(
            "kubectl", "--kubeconfig", str(self.kubeconfig), *args,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), STEP_S)
        code = proc.returncode if proc.returncode is not None else -1
        if check:
            assert code == 0, f"kubectl {' '.join(args)}: {err.decode()}"
        return code, out.decode(), err.decode()

    # -- through the ingress -------------------------------------------------------------
    def client(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=STEP_S),
            )
        return self.session

    async def request(self, host: str, path: str = "/") -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        async with self.client().get(url, headers={"Host": host}) as resp:
            return resp.status, await resp.text()

    async def load(
        self,
        host: str,
        *,
        clients: int,
        requests: int | None = None,
        until: asyncio.Event | None = None,
        path: str = "/",
    ) -> LoadResult:
        """``clients`` loops of GETs until ``requests`` are sent or ``until`` is set.

        A connection error or a timeout is a failure like a non-200: a lost request.
        """
        result = LoadResult()
        budget = [requests if requests is not None else -1]

        async def one_client() -> None:
            while True:
                if until is not None and until.is_set():
                    return
                if budget[0] == 0:
                    return
                budget[0] -= 1
                try:
                    status, body = await self.request(host, path)
                except (aiohttp.ClientError, TimeoutError) as err:
                    result.failures.append(f"{type(err).__name__}: {err}")
                    continue
                result.record(status, body)

        await asyncio.gather(*(one_client() for _ in range(clients)))
        return result

    async def until(
        self, check: Callable[[], Awaitable[bool]], what: str, s: float = WAIT_S
    ) -> None:
        deadline = time.monotonic() + s
        while not await check():
            assert time.monotonic() < deadline, f"timed out after {s:.0f} s waiting for {what}"
            await asyncio.sleep(0.1)

    async def answers(self, host: str, revision: str) -> None:
        """Wait until ``host`` answers 200 from ``revision``."""

        last = ["nothing yet"]

        async def check() -> bool:
            try:
                status, body = await self.request(host)
            except aiohttp.ClientError as err:
                last[0] = repr(err)
                return False
            last[0] = f"{status} {body!r}"
            return status == 200 and revision_of(body) == revision

        try:
            # A first start applies every -f file through the controllers (the traffic-split
            # example names one object twice and waits between): give a loaded CI machine room.
            await self.until(check, f"{host} to answer from {revision}", 2 * WAIT_S)
        except AssertionError as err:
            raise AssertionError(f"{err}; last answer: {last[0]}") from None

    # -- stop ----------------------------------------------------------------------------
    async def close_client(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop knpy serve; asserts that it exits and leaves no process of its tree behind."""
        await self.close_client()
        tree = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(sig)
        code = await asyncio.to_thread(self.proc.wait, STEP_S)
        _, alive = await asyncio.to_thread(psutil.wait_procs, tree, 2.0)
        assert not alive, [p.cmdline() for p in alive]
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_serve(
    tmp: Path,
    *files: Path,
    state_dir: Path | None = None,
    args: Sequence[str] = (),
    start_s: float = WAIT_S,
) -> Serve:
    """``knpy serve [ARGS]`` with its state in ``tmp/state``; returns once its ingress is up
    (within ``start_s``).

    A free port can be taken by another process between ``free_port`` and the bind (other test
    runs share this machine), so a start refused for a port in use is tried again on new ports.
    """
    for _ in range(PORT_ATTEMPTS - 1):
        try:
            return _start_serve(tmp, files, state_dir, args, start_s)
        except PortInUse:
            continue
    return _start_serve(tmp, files, state_dir, args, start_s)


PORT_ATTEMPTS: Final = 3


class PortInUse(Exception):
    pass


def _start_serve(
    tmp: Path, files: tuple[Path, ...], state_dir: Path | None, extra: Sequence[str], start_s: float
) -> Serve:
    port, api_port = free_port(), free_port()
    args = ["--port", str(port), "--api-port", str(api_port), *extra]
    state = state_dir or tmp / "state"
    args += ["--state-dir", str(state)]
    for f in files:
        args += ["-f", str(f)]
    log = tmp / f"serve-{len(list(tmp.glob('serve-*.log')))}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "serve", *args],
            cwd=REPO_ROOT,  # the examples' command paths are relative to the repository
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    serve = Serve(proc, port, api_port, log, state)
    deadline = time.monotonic() + start_s
    while READY_LINE not in log.read_bytes():
        if proc.poll() is not None:
            text = log.read_text()
            if "address already in use" in text:
                raise PortInUse(text)
            raise AssertionError(f"knpy serve exited {proc.returncode}: {text}")
        assert time.monotonic() < deadline, f"knpy serve did not start: {log.read_text()}"
        time.sleep(0.05)
    return serve


@asynccontextmanager
async def serving(tmp: Path) -> AsyncIterator[Callable[..., Serve]]:
    """Start ``knpy serve``s; whatever still runs at the end is killed with its whole tree."""
    started: list[Serve] = []

    def start(
        *files: Path,
        state_dir: Path | None = None,
        args: Sequence[str] = (),
        start_s: float = WAIT_S,
    ) -> Serve:
        s = start_serve(tmp, *files, state_dir=state_dir, args=args, start_s=start_s)
        started.append(s)
        return s

    try:
        yield start
    finally:
        for s in started:
            await s.close_client()
            if s.proc.poll() is None:
                # knpy serve first: killing its pods first let its kubelet restart them.
                tree = _children(s.proc.pid)
                s.proc.kill()
                s.proc.wait()
                for child in tree:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
            # Whatever still carries the run's mark (a pod started while the tree above was
            # read) goes too: a test run leaves nothing behind.
            await asyncio.to_thread(end_marked, s.state, 2.0)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
