"""kube API server benchmark: 1,000 Knative Revisions through ``python -m controlplane.kubeapi``.

Theory of operation. The server runs as its own process (uvloop, as in ``knpy serve``) on
127.0.0.1 over plain HTTP with its bearer token, so its resident memory is its own. This
process opens 10 watches on revisions (``watch=1&resourceVersion=<list rv>``), then:

1. creates N revisions one after another (a Revision as Knative's controller writes it:
   labels, annotations, an ownerReference, a container with env, ports and probes) ->
   create latency p50/p99, and for each create the delay from sending the request to the
   event's arrival on each of the 10 watches -> watch delay p50/p99 over N x 10 arrivals;
2. merge-patches each revision's status (conditions, replicas, as the reconciler writes
   them) -> patch latency p50/p99 and its watch delay;
   The server's CPU time (user + system) per create and per patch, with its 10 watch lines,
   is the figure that least depends on what else runs on the machine.
3. lists all revisions (one GET) -> list latency and body size;
4. deletes the Configuration that owns them all (Background propagation: the server deletes
   the N revisions by their ownerReferences) -> time of that one DELETE;
5. reads the server's RSS (psutil) before the creates, with N revisions, and at the end.

One client connection for writes (keep-alive), requests strictly sequential, so the latencies
are the server's per-request cost plus loopback, not queueing. The watch delay includes the
request's own latency (the event can only be produced once the write is made).

Run: .venv/bin/python benchmarks/kubeapi/run.py [--revisions 1000] [--watchers 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
import yaml

ROOT = Path(__file__).resolve().parents[2]
REVS = "/apis/serving.knative.dev/v1/namespaces/default/revisions"
CONFIGS = "/apis/serving.knative.dev/v1/namespaces/default/configurations"


def revision(i: int, owner_uid: str) -> dict[str, Any]:
    name = f"bench-{i:05d}"
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": name,
            "labels": {
                "serving.knative.dev/configuration": "bench",
                "serving.knative.dev/configurationGeneration": str(i + 1),
                "serving.knative.dev/configurationUID": owner_uid,
                "serving.knative.dev/service": "bench",
                "serving.knative.dev/serviceUID": "7f1b6c2e-0000-4000-8000-000000000002",
                "serving.knative.dev/routingState": "active",
            },
            "annotations": {
                "serving.knative.dev/creator": "admin",
                "serving.knative.dev/routes": "bench",
                "serving.knative.dev/routingStateModified": "2026-01-01T00:00:00Z",
                "autoscaling.knative.dev/target": "10",
            },
            "ownerReferences": [{
                "apiVersion": "serving.knative.dev/v1", "kind": "Configuration",
                "name": "bench", "uid": owner_uid,
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "containerConcurrency": 0,
            "timeoutSeconds": 300,
            "containers": [{
                "name": "user-container",
                "image": "knpy/sampleapp",
                "command": ["python", "examples/sampleapp/app.py"],
                "env": [{"name": "TARGET", "value": f"bench {i}"}],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"successThreshold": 1, "tcpSocket": {"port": 0}},
                "resources": {},
            }],
            "enableServiceLinks": False,
        },
    }


def status_patch(i: int) -> dict[str, Any]:
    return {"status": {
        "observedGeneration": 1,
        "actualReplicas": 1,
        "desiredReplicas": 1,
        "containerStatuses": [{"name": "user-container", "imageDigest": "knpy/sampleapp"}],
        "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            for t in ("Active", "ContainerHealthy", "Ready", "ResourcesAvailable")
        ],
    }}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


class Watch:
    """One watch stream; records when each (type, name) arrived."""

    def __init__(self) -> None:
        self.arrived: dict[tuple[str, str], float] = {}
        self.task: asyncio.Task[None] | None = None

    async def run(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str]
                  ) -> None:
        async with session.get(url, headers=headers,
                               timeout=aiohttp.ClientTimeout(total=None)) as resp:
            async for line in resp.content:
                now = time.perf_counter()
                ev = json.loads(line)
                status = ev["object"].get("status") or {}
                typ = "STATUS" if status.get("actualReplicas") else ev["type"]
                self.arrived[(typ, ev["object"]["metadata"]["name"])] = now


async def bench(n: int, watchers: int) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="knpy-kubeapi-bench-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane.kubeapi", "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        kubeconfig = Path(proc.stdout.readline().strip())
        token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
        headers = {"Authorization": f"Bearer {token}"}
        ps = psutil.Process(proc.pid)
        out: dict[str, Any] = {"rss_start_mib": ps.memory_info().rss / 2**20}
        conn = aiohttp.TCPConnector(limit=watchers + 4)
        async with aiohttp.ClientSession(connector=conn) as session:
            post_headers = {**headers, "Content-Type": "application/json"}
            config = {"apiVersion": "serving.knative.dev/v1", "kind": "Configuration",
                      "metadata": {"name": "bench"}, "spec": {"template": {"spec": {
                          "containers": [{"image": "knpy/sampleapp"}]}}}}
            async with session.post(url + CONFIGS, json=config, headers=headers) as r:
                owner_uid = (await r.json())["metadata"]["uid"]
            async with session.get(url + REVS, headers=headers) as r:
                rv = (await r.json())["metadata"]["resourceVersion"]
            ws = [Watch() for _ in range(watchers)]
            for w in ws:
                w.task = asyncio.create_task(
                    w.run(session, f"{url}{REVS}?watch=1&resourceVersion={rv}", headers))
            await asyncio.sleep(0.3)
            sent: dict[str, float] = {}
            create_ms: list[float] = []
            cpu0 = ps.cpu_times()
            for i in range(n):
                body = json.dumps(revision(i, owner_uid)).encode()
                t0 = time.perf_counter()
                async with session.post(url + REVS, data=body, headers=post_headers) as r:
                    await r.read()
                    assert r.status == 201, r.status
                create_ms.append((time.perf_counter() - t0) * 1000)
                sent[f"bench-{i:05d}"] = t0
            cpu1 = ps.cpu_times()
            patch_headers = {**headers, "Content-Type": "application/merge-patch+json"}
            patch_sent: dict[str, float] = {}
            patch_ms: list[float] = []
            for i in range(n):
                name = f"bench-{i:05d}"
                body = json.dumps(status_patch(i)).encode()
                t0 = time.perf_counter()
                async with session.patch(f"{url}{REVS}/{name}/status", data=body,
                                         headers=patch_headers) as r:
                    await r.read()
                    assert r.status == 200, r.status
                patch_ms.append((time.perf_counter() - t0) * 1000)
                patch_sent[name] = t0
            cpu2 = ps.cpu_times()
            out["cpu_create_ms"] = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) * 1000 / n
            out["cpu_patch_ms"] = (cpu2.user + cpu2.system - cpu1.user - cpu1.system) * 1000 / n
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                len(w.arrived) < 2 * n for w in ws
            ):
                await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            async with session.get(url + REVS, headers=headers) as r:
                listed = await r.read()
            out["list_ms"] = (time.perf_counter() - t0) * 1000
            out["list_kib"] = len(listed) / 1024
            add_delay = [(w.arrived[("ADDED", k)] - t) * 1000 for w in ws for k, t in sent.items()
                         if ("ADDED", k) in w.arrived]
            mod_delay = [(w.arrived[("STATUS", k)] - t) * 1000 for w in ws
                         for k, t in patch_sent.items() if ("STATUS", k) in w.arrived]
            out["missing_events"] = 2 * n * watchers - len(add_delay) - len(mod_delay)
            out["rss_full_mib"] = ps.memory_info().rss / 2**20
            # Background cascading delete: the Configuration, then its N revisions.
            t0 = time.perf_counter()
            async with session.delete(f"{url}{CONFIGS}/bench", headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status
            out["cascade_ms"] = (time.perf_counter() - t0) * 1000
            async with session.get(url + REVS, headers=headers) as r:
                assert (await r.json())["items"] == []
            for w in ws:
                assert w.task is not None
                w.task.cancel()
            await asyncio.gather(*(w.task for w in ws if w.task), return_exceptions=True)
        out.update({
            "create": (statistics.median(create_ms), pct(create_ms, 0.99)),
            "patch": (statistics.median(patch_ms), pct(patch_ms, 0.99)),
            "watch_create": (statistics.median(add_delay), pct(add_delay, 0.99)),
            "watch_patch": (statistics.median(mod_delay), pct(mod_delay, 0.99)),
            "rss_end_mib": ps.memory_info().rss / 2**20,
            "db_mib": sum(p.stat().st_size for p in state.glob("kube.sqlite3*")) / 2**20,
        })
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--revisions", type=int, default=1000)
    p.add_argument("--watchers", type=int, default=10)
    args = p.parse_args()
    r = asyncio.run(bench(args.revisions, args.watchers))
    n, w = args.revisions, args.watchers
    rows = [
        (f"create revision (x{n})", "p50 / p99 ms", "{:.2f} / {:.2f}".format(*r["create"])),
        (f"patch status (x{n})", "p50 / p99 ms", "{:.2f} / {:.2f}".format(*r["patch"])),
        ("server CPU per create / patch", "ms",
         f"{r['cpu_create_ms']:.2f} / {r['cpu_patch_ms']:.2f}"),
        (f"watch delay, create ({w} watchers)", "p50 / p99 ms",
         "{:.2f} / {:.2f}".format(*r["watch_create"])),
        (f"watch delay, status ({w} watchers)", "p50 / p99 ms",
         "{:.2f} / {:.2f}".format(*r["watch_patch"])),
        ("missing watch events", "count", str(r["missing_events"])),
        (f"list {n} revisions", "ms / KiB", f"{r['list_ms']:.1f} / {r['list_kib']:.0f}"),
        (f"delete their Configuration (cascade x{n})", "ms", f"{r['cascade_ms']:.0f}"),
        (f"server RSS: start, {n} revisions, end", "MiB",
         f"{r['rss_start_mib']:.1f}, {r['rss_full_mib']:.1f}, {r['rss_end_mib']:.1f}"),
        ("kube.sqlite3 (+WAL)", "MiB", f"{r['db_mib']:.1f}"),
    ]
    width = max(len(a) for a, _, _ in rows)
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:<14}  {c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
