"""Local platform benchmark: cold starts and the ingress's cost, on a real ``knpy serve``.

Theory of operation. One ``knpy serve`` (fresh state dir, free loopback ports), driven only
through its ingress and its API, as a person would; nothing is pinned to a core (the platform
spawns its own processes), so the figures are the whole machine's.

1. Cold start of the hello app (``examples/sampleapp/app.py``), zero pods to the first response
   byte, ``--runs`` times (20). Short autoscaler windows (config-autoscaler: stable window 6 s,
   scale-to-zero grace 1 s) send an idle revision to zero in ~8 s; ``--services`` (5) copies of
   hello go to zero together and are then cold-started one after another, so 20 runs take 4
   rounds rather than 20 waits. Per run, by the clock of this process and what the API shows:

       total      request sent -> first response byte (raw socket, ``Connection: close``)
       decision   request sent -> Pod created (``knpy.dev/created-at``): ingress -> activator
                  -> autoscaler poke -> scale decision (/scale) -> the kubelet makes the pod
       pod ready  creation -> the kubelet's probe passes (``knpy.dev/ready-after-seconds``):
                  app and queue-proxy processes start, the queue-proxy's probe sees the app
       release    the rest: total - decision - pod ready. The activator learns of the pod
                  from the endpoints watch and probes it itself (as Knative's does), so it may
                  forward the held request before the platform's probe passes: then this is
                  about 0 or below, and "pod ready" is an upper bound of the pod's share

   ``coldStarts.last_s`` (the ingress's own figure for the same request) is reported beside
   ``total``. For reference, the app process alone (spawn -> its "listening" line) is timed
   ``APP_ALONE_RUNS`` times outside the platform.
2. Throughput and p50/p99, ``wrk -t1 -c64 -d10s --latency`` with a Host header, against a fast
   app (``benchmarks/queueproxy/app.py``, so the proxies are what is measured), one pod each
   (min-scale = max-scale = 1):

       direct      to the pod's queue-proxy (its queue-port from the Pod object)
       serve mode  ingress -> queue-proxy (target-burst-capacity 0: the activator only at zero)
       proxy mode  ingress -> activator -> queue-proxy (target-burst-capacity -1, Knative's
                   way to keep the activator in the path)
       nginx       nginx (one worker, benchmarks/harness.py's configuration) in the ingress's
                   place, in front of the same queue-proxy: what a well-known proxy reaches as
                   that extra hop on the same machine, the reference for the ingress's ratios
                   (on two cores every hop shares them with wrk, the app and the queue-proxy)

   The revision's mode is read from the API before and after each run and must be the one
   measured.

Run: .venv/bin/python benchmarks/platform/run.py [--quick] [--runs N] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import psutil

if str(Path(__file__).resolve().parents[2]) not in sys.path:
    # Run as a script: make the repo's packages (benchmarks/ is not installed) importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import harness
from controlplane.podspec import CREATED_AT_ANNOTATION as CREATED_AT
from controlplane.podspec import READY_AFTER_ANNOTATION as READY_AFTER
from shared.apiclient import Api, apply_text, load_kubeconfig
from shared.cli import with_live_status
from shared.kube.resources import CONFIGMAPS, PODS, REVISIONS, SYSTEM_NAMESPACE
from shared.ports import free_port

HERE: Final = Path(__file__).resolve().parent
REPO: Final = HERE.parents[1]
SAMPLE_APP: Final = REPO / "examples" / "sampleapp" / "app.py"
FAST_APP: Final = REPO / "benchmarks" / "queueproxy" / "app.py"
NAMESPACE: Final = "default"
# Each wait has a bound: a pod starts in ~1 s and an idle revision is at zero ~8 s after its
# last request (6 s window + 1 s grace + a 2 s decision tick at most).
WAIT_S: Final = 60.0
POLL_S: Final = 0.1
# The activator must have seen the endpoints go before a run starts, or the request could
# find a pod that is draining: one watch round trip is milliseconds, 1 s is ample.
SETTLE_AT_ZERO_S: Final = 1.0
APP_ALONE_RUNS: Final = 10
STOP_S: Final = 60.0

FAST_AUTOSCALER: Final = """
apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {stable-window: 6s, scale-to-zero-grace-period: 1s}
"""

Json = dict[str, Any]


def service_yaml(name: str, command: list[str], annotations: dict[str, str] | None = None) -> str:
    doc: Json = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {"containers": [{"image": "knpy/bench", "command": command}]},
            }
        },
    }
    return json.dumps(doc)


def until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(POLL_S)


class Platform:
    """A ``knpy serve`` child and its API; ``stop`` drains it and leaves nothing running."""

    def __init__(self, workdir: Path, args: Sequence[str] = (), root: Path = REPO) -> None:
        """``args``: more of knpy serve's options (benchmarks/images passes ``--images``);
        ``root``: where knpy is imported from, for it and the processes it starts (the
        repository, or the KNPY_NATIVE=1 build's tree: ``--native``)."""
        self.port, api_port = free_port(), free_port()
        self.state = workdir / "state"
        self.log = workdir / "serve.log"
        argv = [sys.executable, "-m", "shared.cli", "serve", "--port", str(self.port)]
        argv += ["--api-port", str(api_port), "--state-dir", str(workdir / "state"), *args]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=root,
                env={**os.environ, "PYTHONPATH": str(root)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        until(lambda: b"knpy serve: ingress" in self.log.read_bytes() or self._dead(), "serve")
        if self._dead():
            raise RuntimeError(f"knpy serve exited: {self.log.read_text()[-2000:]}")

    def _dead(self) -> bool:
        return self.proc.poll() is not None

    def client(self) -> Api:
        return load_kubeconfig(self.state / "kubeconfig")

    def apply(self, *docs: str) -> None:
        apply_text(self.client(), "\n---\n".join(docs))

    def revision(self, name: str) -> Json:
        """The Revision's status with knpy get's view (mode, replicas, cold starts)."""
        api = self.client()
        rev = api.get(REVISIONS, NAMESPACE, name) or {"metadata": {"name": name}}
        cold = api.get(CONFIGMAPS, SYSTEM_NAMESPACE, "knpy-cold-starts") or {}
        status: Json = with_live_status(api, rev, cold.get("data") or {})["status"]
        pods = self.pods(name)
        ready = [p for p in pods if READY_AFTER in (p["metadata"].get("annotations") or {})]
        if ready:
            newest = max(ready, key=lambda p: float(p["metadata"]["annotations"][CREATED_AT]))
            figures = status.setdefault("coldStarts", {})
            figures["lastPodReadySeconds"] = float(newest["metadata"]["annotations"][READY_AFTER])
        return status

    def pods(self, revision: str) -> list[Json]:
        """The revision's Pod objects, with ``startedAt`` (the kubelet's creation time) and the
        queue-proxy's serving ``port``, as the old endpoints had them."""
        items = self.client().list(PODS, NAMESPACE, f"serving.knative.dev/revision={revision}")
        for pod in items:
            pod["startedAt"] = float(pod["metadata"]["annotations"][CREATED_AT])
            for c in pod["spec"]["containers"]:
                for port in c.get("ports") or []:
                    if port.get("name") == "queue-port":
                        pod["port"] = port["containerPort"]
        return items

    def at_zero(self, revision: str) -> bool:
        return self.revision(revision).get("actualReplicas") == 0 and not self.pods(revision)

    def has_cold_figures(self, revision: str) -> bool:
        cold = self.revision(revision).get("coldStarts", {})
        return "lastPodReadySeconds" in cold and "last_s" in cold

    def serving_in(self, revision: str, mode: str) -> bool:
        status = self.revision(revision)
        return bool(status.get("actualReplicas", 0) >= 1 and status.get("mode") == mode)

    def stop(self) -> None:
        tree = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        # knpy serve drains its tree; whatever it left (it should leave nothing) goes too.
        for child in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.proc.wait()


# -- 1. cold starts ------------------------------------------------------------------------------
def first_byte(port: int, host: str) -> tuple[float, float, int]:
    """GET / by Host on a new connection: (wall clock at send, seconds to first byte, status)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        head = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        sent_wall, sent = time.time(), time.perf_counter()
        sock.sendall(head)
        data = sock.recv(65536)
        elapsed = time.perf_counter() - sent
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return sent_wall, elapsed, status


def measure_cold_starts(p: Platform, runs: int, services: int) -> Json:
    app_alone = measure_app_alone()  # first, while nothing else of ours runs
    names = [f"cold{i}" for i in range(1, services + 1)]
    hello = ["python", str(SAMPLE_APP)]
    p.apply(FAST_AUTOSCALER, *(service_yaml(n, hello) for n in names))
    samples: list[Json] = []
    while len(samples) < runs:
        for n in names:
            until(functools.partial(p.at_zero, f"{n}-00001"), f"{n} at zero")
        time.sleep(SETTLE_AT_ZERO_S)
        for n in names[: runs - len(samples)]:
            rev = f"{n}-00001"
            sent_wall, total_s, status = first_byte(p.port, f"{n}.{NAMESPACE}.localhost")
            if status != 200:
                raise RuntimeError(f"cold start of {rev} answered {status}")
            pods = p.pods(rev)
            decision_s = min(e["startedAt"] for e in pods) - sent_wall
            # The activator probes a new pod itself and may release the request before the
            # platform's kubelet-style probe has passed, so the pod's ready time can lag.
            until(functools.partial(p.has_cold_figures, rev), f"{rev} pod ready time", 10.0)
            cold = p.revision(rev)["coldStarts"]
            ready_s = float(cold["lastPodReadySeconds"])
            samples.append(
                {
                    "revision": rev,
                    "total_s": total_s,
                    "ingress_s": cold.get("last_s"),
                    "decision_s": decision_s,
                    "pod_ready_s": ready_s,
                    "release_s": total_s - decision_s - ready_s,
                }
            )
            print(f"  cold start {len(samples):2d}/{runs}: {_ms(total_s)} ms", file=sys.stderr)
    return {"runs": samples, "summary": summarize(samples), "app_alone": app_alone}


def measure_app_alone() -> Json:
    """The sample app's process start by itself: spawn -> its "listening on" line."""
    times = []
    for _ in range(APP_ALONE_RUNS):
        env = {**os.environ, "PORT": str(free_port())}
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(SAMPLE_APP)], env=env, stdout=subprocess.PIPE, cwd=REPO
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        times.append(time.perf_counter() - started)
        proc.terminate()
        proc.wait(10)
        if b"listening on" not in line:
            raise RuntimeError(f"the sample app did not start: {line!r}")
    return {"p50_s": statistics.median(times), "max_s": max(times)}


def summarize(samples: list[Json]) -> Json:
    out: Json = {}
    for key in ("total_s", "ingress_s", "decision_s", "pod_ready_s", "release_s"):
        values = sorted(s[key] for s in samples if s[key] is not None)
        if values:
            out[key] = {"p50": statistics.median(values), "p99": percentile(values, 0.99)}
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: with 20 samples, p99 is the largest (rank ceil(19.8) = 20)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


# -- 2. throughput -------------------------------------------------------------------------------
def measure_throughput(p: Platform, duration_s: float, connections: int) -> Json:
    fast = ["sh", "-c", f'exec {sys.executable} {FAST_APP} --port "$PORT"']
    one_pod = {"autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "1"}
    serve_ann = {**one_pod, "autoscaling.knative.dev/target-burst-capacity": "0"}
    proxy_ann = {**one_pod, "autoscaling.knative.dev/target-burst-capacity": "-1"}
    p.apply(service_yaml("bench", fast, serve_ann), service_yaml("benchproxy", fast, proxy_ann))
    modes = {"bench-00001": "Serve", "benchproxy-00001": "Proxy"}
    for rev, wanted in modes.items():
        until(functools.partial(p.serving_in, rev, wanted), f"{rev} ready in {wanted} mode")
    (pod,) = p.pods("bench-00001")
    targets: dict[str, tuple[str, str, str | None]] = {
        "direct to the queue-proxy": (f"http://127.0.0.1:{pod['port']}/", "bench", None),
        "ingress, serve mode": (f"http://127.0.0.1:{p.port}/", "bench", "Serve"),
        "ingress, proxy mode (activator)": (f"http://127.0.0.1:{p.port}/", "benchproxy", "Proxy"),
    }
    results: Json = {}
    for label, (url, service, mode) in targets.items():
        rev = f"{service}-00001"
        figures = wrk(url, f"{service}.{NAMESPACE}.localhost", duration_s, connections)
        after = p.revision(rev)["mode"]
        if mode is not None and after != mode:
            raise RuntimeError(f"{label}: {rev} was in {after} mode after the run, not {mode}")
        results[label] = figures
        print(f"  {label}: {figures['rps']:.0f} req/s", file=sys.stderr)
    port = free_port()
    try:
        argv = harness.nginx_argv(p.log.parent, pod["port"], port)
    except harness.Unavailable as err:
        print(f"  ({err}: no reference row)", file=sys.stderr)
        return results
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until(functools.partial(_listening, port), "nginx listening")
        figures = wrk(f"http://127.0.0.1:{port}/", "bench", duration_s, connections)
        results[NGINX_ROW] = figures
        print(f"  {NGINX_ROW}: {figures['rps']:.0f} req/s", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return results


NGINX_ROW: Final = "nginx in the ingress's place"


def wrk(url: str, host: str, duration_s: float, connections: int) -> Json:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency"]
    argv += ["-H", f"Host: {host}", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk exited {out.returncode}: {out.stderr}")
    return dict(harness.parse_wrk(out.stdout))


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


# -- report --------------------------------------------------------------------------------------
def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def report(result: Json) -> str:
    lines = []
    cold = result.get("cold_start")
    if cold:
        s = cold["summary"]
        lines += [
            f"Cold start, hello app, {len(cold['runs'])} runs (ms):",
            "",
            "| | p50 | p99 |",
            "|---|---:|---:|",
        ]
        labels = {
            "total_s": "zero -> first response byte (client)",
            "ingress_s": "the same, as the ingress measured it",
            "decision_s": "request -> pod spawned (activator, autoscaler, platform)",
            "pod_ready_s": "pod spawned -> ready (app + queue-proxy start, probe)",
            "release_s": "ready -> first byte (activator sees it, probes, forwards; app)",
        }
        for key, label in labels.items():
            if key in s:
                lines.append(f"| {label} | {_ms(s[key]['p50'])} | {_ms(s[key]['p99'])} |")
        alone = cold["app_alone"]
        lines.append(f"| the app process alone, spawn -> listening | {_ms(alone['p50_s'])} | |")
    tput = result.get("throughput")
    if tput:
        lines += ["", "| path | req/s | p50 ms | p99 ms | non-2xx | socket errors |"]
        lines.append("|---|---:|---:|---:|---:|---|")
        for label, f in tput.items():
            lines.append(
                f"| {label} | {f['rps']:,.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} "
                f"| {f['non_2xx']} | {f['socket_errors'] or 0} |"
            )
        direct = tput.get("direct to the queue-proxy")
        if direct:
            lines.append("")
            for label, f in tput.items():
                if f is not direct:
                    lines.append(f"{label} / direct: {f['rps'] / direct['rps']:.2f}x")
        nginx = tput.get(NGINX_ROW)
        if nginx:
            for label in ("ingress, serve mode", "ingress, proxy mode (activator)"):
                if label in tput:
                    lines.append(f"{label} / nginx: {tput[label]['rps'] / nginx['rps']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 cold starts, 3 s wrk runs")
    parser.add_argument("--runs", type=int, default=None, help="cold starts (default 20)")
    parser.add_argument("--services", type=int, default=5, help="hello copies per round")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--skip", choices=("cold", "throughput"), action="append", default=[])
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--workers", type=int, default=1, help="knpy serve --workers (ingress)")
    parser.add_argument("--native", action="store_true", help="knpy of the KNPY_NATIVE=1 build")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is required (apt-get install wrk)", file=sys.stderr)
        return 2
    runs = args.runs or (5 if args.quick else 20)
    duration_s = 3.0 if args.quick else 10.0
    workdir = Path(tempfile.mkdtemp(prefix="knpy-bench-platform-"))
    result: Json = {
        "benchmark": "platform",
        "when": time.strftime("%Y-%m-%dT%H:%M"),
        "cpus": os.cpu_count(),
        "ingress_workers": args.workers,
        "native": args.native,
    }
    root = harness.native_tree() if args.native else REPO
    serve_args = ["--workers", str(args.workers)] if args.workers > 1 else []
    p = Platform(workdir, serve_args, root)
    try:
        if "cold" not in args.skip:
            print("cold starts ...", file=sys.stderr)
            result["cold_start"] = measure_cold_starts(p, runs, min(args.services, runs))
        if "throughput" not in args.skip:
            print("throughput ...", file=sys.stderr)
            result["throughput"] = measure_throughput(p, duration_s, args.connections)
    finally:
        p.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    harness.save_json(args.out, result)
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
