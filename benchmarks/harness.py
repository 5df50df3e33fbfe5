"""The benchmarks' harness: child processes, CPU pinning, /proc figures, wrk and k6, tables.

Every benchmark under benchmarks/ imports it (``from benchmarks import harness``) for the same
things: children started in their own process groups and always killed (``Children``), the two
cores split between load side and target (``pin_cores``), CPU time and RSS of a process tree from
/proc (``cpu_seconds``, ``rss_bytes``, ``RssPeak``, ``core_times``), load at saturation with wrk
and at a fixed rate with k6 (``Harness.wrk``, ``Harness.k6_rate``), the targets every benchmark
puts behind or in front of itself (the sample app, the queue-proxy, nginx, Go's ReverseProxy:
``start_*``), and markdown tables. The choices behind the figures (why k6 runs with GOGC=400,
why the baseline app sits on the test core) are explained in benchmarks/queueproxy/run.py.
"""

from __future__ import annotations

import asyncio
import ctypes
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from shared.proxy.memory import MemoryNetwork
    from shared.proxy.server import ProxyServer

from benchmarks import native
from shared.ports import free_port

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
QP_DIR = BENCH / "queueproxy"
APP = QP_DIR / "app.py"  # the app every benchmark proxies to
VENV_BIN = Path(sys.executable).parent

FIXED_RATE_RPS = 5000
# What k6 (GOGC=400) and the app together hold on one core with <1 % dropped arrivals.
HALF_RATE_CAP_RPS = FIXED_RATE_RPS
K6_VUS = 64  # preAllocatedVUs = maxVUs: one keep-alive connection each, like wrk's -c64.
K6_GOGC = "400"  # see benchmarks/queueproxy/run.py
RSS_SAMPLE_PERIOD_S = 0.2
READY_TIMEOUT_S = 20.0
KILL_GRACE_S = 3.0
# The app's answer, checked through every proxy before measuring it.
APP_BODY = b"Hello, World!\n"
QUEUE_PROBE_HEADERS = {"K-Network-Probe": "queue"}

PR_SET_PDEATHSIG = 1


class Unavailable(Exception):
    """A target cannot be measured (not installed, not built, did not become ready)."""


# ---------------------------------------------------------------------------------------------
# Child processes


class Children:
    """Every process we start, each in its own process group, so that one killpg ends it and
    whatever it forked (nginx's worker). `kill_all` is idempotent and runs from `finally`."""

    def __init__(self, logdir: Path) -> None:
        self._logdir = logdir
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        core: int | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        capture: bool = False,
    ) -> subprocess.Popen[bytes]:
        if core is not None:
            argv = ["taskset", "-c", str(core), *argv]
        log = self._logdir / f"{name}.log"
        out: Any = subprocess.PIPE if capture else log.open("ab")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        if not capture:
            out.close()
        self._procs.append(proc)
        self._logs[proc.pid] = log
        return proc

    def log_tail(self, proc: subprocess.Popen[bytes], lines: int = 15) -> str:
        log = self._logs.get(proc.pid)
        if log is None or not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def mark(self) -> int:
        """A bookmark for `stop_since`: the processes started from now on."""
        return len(self._procs)

    def stop_since(self, mark: int) -> None:
        for proc in reversed(self._procs[mark:]):
            self.stop(proc)

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the process group, SIGKILL it after a grace period, reap the leader."""
        if proc not in self._procs:
            return  # already stopped: its pgid may belong to someone else by now
        self._procs.remove(proc)
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(KILL_GRACE_S)
        # The leader may be gone while others in its group are not: always finish the group.
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()

    def kill_all(self) -> None:
        self.stop_since(0)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _die_with_parent() -> None:
    # In the child, before exec: if the harness is SIGKILLed, the kernel kills us too.
    # (taskset and nginx keep it across exec; nginx's worker ends when its master does.)
    with suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def raise_exit(signum: int, _frame: object) -> None:
    # Say so: a `pkill -f queueproxy` elsewhere on the machine also matches this script.
    print(f"\nstopped by {signal.Signals(signum).name}; killing children", file=sys.stderr)
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------------------------
# /proc measurements


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its live descendants, in seconds."""
    total = 0.0
    for p in _tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_bytes(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        with suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def core_times() -> dict[int, tuple[float, float, float, float]]:
    """(busy, steal, total, irq + softirq) jiffies per CPU from /proc/stat."""
    out: dict[int, tuple[float, float, float, float]] = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+)\s+(.*)", line)
            if m:
                v = [float(x) for x in m.group(2).split()]
                idle = v[3] + v[4]  # idle + iowait
                out[int(m.group(1))] = (sum(v[:8]) - idle, v[7], sum(v[:8]), v[5] + v[6])
    return out


def core_busy(
    before: dict[int, tuple[float, float, float, float]],
    after: dict[int, tuple[float, float, float, float]],
    field: int = 0,
) -> dict[int, float]:
    """% busy (field 0), stolen (1) or in interrupts (3) per CPU between two readings."""
    pct = {}
    for cpu, a in after.items():
        b = before.get(cpu, (0.0, 0.0, 0.0, 0.0))
        total = a[2] - b[2]
        pct[cpu] = round(100.0 * (a[field] - b[field]) / total, 1) if total > 0 else 0.0
    return pct


class RssPeak:
    """Samples a process tree's RSS every 200 ms in a thread while active; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self._pid))
            self._stop.wait(RSS_SAMPLE_PERIOD_S)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self._pid))


# ---------------------------------------------------------------------------------------------
# Load generators


_WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _wrk_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"wrk time {text!r}")
    return float(m.group(1)) * _WRK_UNITS_MS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """req/s, p50, p99 (ms), request count and errors from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise ValueError(f"no Requests/sec in wrk output:\n{out}")
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    count = re.search(r"(\d+) requests in", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _wrk_ms(pct["50"]),
        "p99_ms": _wrk_ms(pct["99"]),
        "requests": int(count.group(1)) if count else None,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


K6_SCRIPT = """\
import http from 'k6/http';

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['med', 'p(99)', 'avg', 'max'],
  scenarios: {
    fixed: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE),
      timeUnit: '1s',
      duration: __ENV.DURATION,
      preAllocatedVUs: Number(__ENV.VUS),
      maxVUs: Number(__ENV.VUS),
    },
  },
};

export default function () {
  http.get(__ENV.URL);
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY]: JSON.stringify(data) };
}
"""


@dataclass
class Harness:
    """Tools, cores and the work directory of one run."""

    workdir: Path
    children: Children
    duration_s: float
    connections: int
    load_core: int | None
    test_core: int | None
    k6: str
    half_rate_cap_rps: int = HALF_RATE_CAP_RPS
    go_binary: Path | None = None
    # The queue-proxy's CONTAINER_CONCURRENCY: 0 runs without the breaker, N > 0 with it.
    container_concurrency: int = 0
    # Where knpy's components are imported from: the repository, or native_tree() (--native).
    code_root: Path = REPO
    _seq: int = 0

    def _name(self, what: str) -> str:
        self._seq += 1
        return f"{self._seq:02d}-{what}"

    def _run_tool(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> str:
        proc = self.children.spawn(name, argv, core=self.load_core, env=env, capture=True)
        try:
            out, _ = proc.communicate(timeout=self.duration_s + 60)
        finally:
            self.children.stop(proc)
        text = out.decode(errors="replace")
        (self.workdir / f"{name}.log").write_text(text)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}:\n{text[-2000:]}")
        return text

    def wrk(self, url: str) -> dict[str, Any]:
        argv = ["wrk", "-t1", f"-c{self.connections}", f"-d{self.duration_s:g}s", "--latency", url]
        return parse_wrk(self._run_tool(self._name("wrk"), argv))

    def k6_rate(self, url: str, rate_rps: int) -> dict[str, Any]:
        """k6 constant-arrival-rate; returns requests, achieved rate, p50/p99 (ms), drops."""
        script = self.workdir / "fixed-rate.js"
        if not script.exists():
            script.write_text(K6_SCRIPT)
        name = self._name(f"k6-{rate_rps}")
        summary = self.workdir / f"{name}.json"
        argv = [self.k6, "run", "--no-usage-report", "--quiet", "--no-color"]
        for key, value in {
            "RATE": rate_rps,
            "DURATION": f"{self.duration_s:g}s",
            "VUS": K6_VUS,
            "URL": url,
            "SUMMARY": summary,
        }.items():
            argv += ["-e", f"{key}={value}"]
        argv.append(str(script))
        self._run_tool(name, argv, env={"GOGC": K6_GOGC, "K6_NO_USAGE_REPORT": "true"})
        metrics = json.loads(summary.read_text())["metrics"]
        duration = metrics["http_req_duration"]["values"]
        reqs = metrics["http_reqs"]["values"]
        return {
            "target_rps": rate_rps,
            "requests": int(reqs["count"]),
            "achieved_rps": round(reqs["rate"], 1),
            "dropped": int(metrics.get("dropped_iterations", {}).get("values", {}).get("count", 0)),
            "failed_rate": metrics.get("http_req_failed", {}).get("values", {}).get("rate", 0.0),
            "p50_ms": duration["med"],
            "p99_ms": duration["p(99)"],
        }


# ---------------------------------------------------------------------------------------------
# Targets: each `start_*` returns (url to load, pid whose tree is measured).


def wait_ready(
    proc: subprocess.Popen[bytes],
    children: Children,
    port: int,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> None:
    """Poll GET / until 200 (and `body`, if given), or raise Unavailable."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"exited {proc.returncode}: {children.log_tail(proc)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/", headers=headers or {})
            resp = conn.getresponse()
            got = resp.read()
            conn.close()
            if resp.status == 200 and (body is None or got == body):
                return
            last = f"{resp.status} {got[:80]!r}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.1)
    raise Unavailable(f"not ready after {READY_TIMEOUT_S:g} s ({last}): {children.log_tail(proc)}")


def start_app(h: Harness, core: int | None) -> tuple[int, int]:
    port = free_port()
    proc = h.children.spawn("app", [sys.executable, str(APP), "--port", str(port)], core=core)
    wait_ready(proc, h.children, port, body=APP_BODY)
    return port, proc.pid


def native_tree() -> Path:
    """The tree with the KNPY_NATIVE=1 build of the hot path (benchmarks/native.py)."""
    try:
        return native.tree()
    except RuntimeError as err:
        raise Unavailable(str(err)) from None


def start_queueproxy(h: Harness, app_port: int) -> tuple[int, int]:
    return _start_queueproxy(h, app_port, h.code_root)


def start_queueproxy_native(h: Harness, app_port: int) -> tuple[int, int]:
    """The queue-proxy of the native build: the same code, its hot path compiled by mypyc."""
    return _start_queueproxy(h, app_port, native_tree())


def _start_queueproxy(h: Harness, app_port: int, root: Path) -> tuple[int, int]:
    if not (REPO / "queueproxy" / "__main__.py").exists():
        raise Unavailable("queueproxy/__main__.py does not exist yet")
    port, admin, metrics, user_metrics = (free_port() for _ in range(4))
    env = {
        "SERVING_NAMESPACE": "bench",
        "SERVING_CONFIGURATION": "bench",
        "SERVING_REVISION": "bench-00001",
        "SERVING_POD": "bench-pod",
        "SERVING_POD_IP": "127.0.0.1",
        "QUEUE_SERVING_PORT": str(port),
        "QUEUE_ADMIN_PORT": str(admin),
        "QUEUE_METRICS_PORT": str(metrics),
        "USER_METRICS_PORT": str(user_metrics),
        "USER_PORT": str(app_port),
        "CONTAINER_CONCURRENCY": str(h.container_concurrency),
        "PYTHONPATH": str(root),
    }
    proc = h.children.spawn(
        "queue-proxy", [sys.executable, "-m", "queueproxy"], core=h.test_core, env=env, cwd=root
    )
    wait_ready(proc, h.children, port, headers=QUEUE_PROBE_HEADERS, body=b"queue")
    wait_ready(proc, h.children, port, body=APP_BODY)
    return port, proc.pid


NGINX_CONF = """\
{user}worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # The Python and Go proxies never close a client's keep-alive connection; nor does this.
    keepalive_requests 1000000;
    upstream app {{
        server 127.0.0.1:{app_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def nginx_argv(workdir: Path, app_port: int, port: int) -> list[str]:
    """nginx in the foreground on ``port``, proxying to ``app_port`` (NGINX_CONF, written
    with its temp dirs under ``workdir/nginx``).

    Raises:
        Unavailable: nginx is not installed.
    """
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise Unavailable("nginx not installed")
    ndir = workdir / "nginx"
    ndir.mkdir()
    # As root the worker would switch to `nobody`, who cannot enter our 0700 temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = ndir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, dir=ndir, app_port=app_port, port=port))
    return [nginx, "-e", str(ndir / "error.log"), "-c", str(conf), "-p", str(ndir),
            "-g", "daemon off;"]  # fmt: skip


def start_nginx(h: Harness, app_port: int) -> tuple[int, int]:
    port = free_port()
    argv = nginx_argv(h.workdir, app_port, port)
    proc = h.children.spawn("nginx", argv, core=h.test_core)
    wait_ready(proc, h.children, port, body=APP_BODY)
    return port, proc.pid


def build_goproxy(workdir: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        raise Unavailable("go not installed")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "knpy-bench"
    binary = workdir / "goproxy"
    env = {
        **os.environ,
        "GOCACHE": str(cache / "go-build"),
        "GOPATH": str(cache / "gopath"),
        "GOPROXY": "off",  # stdlib only: nothing to download
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=QP_DIR / "goproxy",
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0:
        raise Unavailable(f"go build failed: {done.stderr.strip()[-500:]}")
    return binary


def start_go(h: Harness, app_port: int) -> tuple[int, int]:
    if h.go_binary is None:
        h.go_binary = build_goproxy(h.workdir)
    port = free_port()
    argv = [str(h.go_binary), "-listen", f"127.0.0.1:{port}",
            "-upstream", f"http://127.0.0.1:{app_port}"]  # fmt: skip
    proc = h.children.spawn("goproxy", argv, core=h.test_core, env={"GOMAXPROCS": "1"})
    wait_ready(proc, h.children, port, body=APP_BODY)
    return port, proc.pid


PROXIES = {"queue-proxy": start_queueproxy, "nginx": start_nginx, "go": start_go}


# benchmarks/activator/profile.py's name for it.
_raise_exit = raise_exit


# ---------------------------------------------------------------------------------------------
# Pinning, tools, tables


def pin_cores() -> tuple[list[int], int | None, int | None]:
    """(all cores, load core, test core): the load side on the first, the target on the second.

    With fewer than two cores nothing is pinned (both None) and a warning is printed.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        return cores, cores[0], cores[1]
    print("warning: fewer than 2 CPUs: nothing is pinned", file=sys.stderr)
    return cores, None, None


def find_k6() -> str | None:
    """The venv's k6 (PyPI package ``k6``), else one on PATH."""
    return shutil.which("k6", path=str(VENV_BIN)) or shutil.which("k6")


def save_json(path: Path | None, result: dict[str, Any]) -> None:
    """A run's figures as JSON at ``path`` (``--out``), its folder made; nothing for None."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def load_script(path: Path, name: str) -> ModuleType:
    """A benchmark script imported by path (benchmarks/ is not a package), e.g. run.py from
    the profile and scaling scripts beside it."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_table(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table; ``columns`` are (title, "l" or "r" for the alignment)."""
    head = "| " + " | ".join(title for title, _ in columns) + " |\n"
    rule = "|" + "|".join("---:" if align == "r" else "---" for _, align in columns) + "|\n"
    return head + rule + "\n".join("| " + " | ".join(row) + " |" for row in rows)


def environment(cores: list[int]) -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unavailable"

    return {
        "cpus": cores,
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "unknown",
        ),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "python": sys.version.split()[0],
        "wrk": version(["wrk", "-v"]),
        "nginx": version(["nginx", "-v"]),
        "go": version(["go", "version"]),
        "k6": version([str(VENV_BIN / "k6"), "version"]),
    }


async def pass_through_ns(
    server: ProxyServer[Any],
    net: MemoryNetwork,
    request: bytes,
    response: bytes,
    requests: int,
    repeat: int,
) -> float:
    """Nanoseconds per request through ``server`` on the in-memory network (the hotpath
    benchmarks, for callgrind): one round trip opens the upstream connection, then the best of
    ``repeat`` passes of ``requests`` round trips fed straight into the two protocols, with no
    event-loop turn between them. The upstream connection must be reused throughout."""
    from shared.proxy.memory import MemoryTransport

    client = MemoryTransport(server(), peer=("127.0.0.1", 40000)).open()
    client.feed(request)
    for _ in range(3):
        await asyncio.sleep(0)
    upstream = net.opened[0]
    upstream.take()
    upstream.feed(response)
    assert client.take() == response
    feed_client, feed_upstream = client.protocol.data_received, upstream.protocol.data_received
    out_client, out_upstream = client.buffer, upstream.buffer
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter_ns()
        for _ in range(requests):
            feed_client(request)
            out_upstream.clear()
            feed_upstream(response)
            out_client.clear()
        best = min(best, (time.perf_counter_ns() - started) / requests)
    assert len(net.opened) == 1, "the upstream connection was not reused"
    return best
