"""The broker data plane's benchmark, in Knative's eventing vocabulary (its old test/performance
harness): publish latency (send -> 202), delivery latency (send -> subscriber), send and
deliver throughput, errors; 1 KB binary-mode events on loopback, the default backend (the
SQLite event log, ``synchronous=FULL``: every 202 is fsynced).

    python benchmarks/eventing/run.py [--duration 10] [--triggers 1,10,100] [--no-rt]
        [--backend sqlite,rabbitmq]
    python benchmarks/eventing/run.py --codec      # the codec against the cloudevents package

Layout (two cores): core 1 runs ``python -m eventing.broker`` alone (ingress and dispatcher in
one process: "events/s on one core" is that process's figure); core 0 runs the load (wrk, or
the paced sender of this file), the subscriber (a raw httptools sink of this file) and knpy's
API server. Every benchmark process runs under ``chrt -r 10`` (real-time round robin), to
approximate a quiet machine on a shared, busy one; ``--no-rt`` turns that off.

For each trigger count (every trigger matches every event, each its own delivery):

1. **Saturation**: ``wrk -t1 -c128`` POSTs for ``--duration`` seconds: events acknowledged per
   second (202s, each durably stored), publish p50/p99, and what the subscriber got meanwhile.
2. **Fixed pace**: 1,000 deliveries/s (1,000 events/s to one trigger, 100 to ten, 10 to a
   hundred) from 32 kept-alive connections, latency measured from each event's
   scheduled time (no coordinated omission): publish and delivery p50/p99, deliveries
   missing at the end, the broker's CPU.

Each phase starts a fresh broker on a fresh state dir, so a backlog from one cannot slow the
next. ``--backend rabbitmq`` runs the same phases on the ``RabbitMQBroker`` class (the broker
annotated, ``python -m eventing.broker --backend rabbitmq``: ingress and dispatcher in one
process, as above) against the RabbitMQ at ``RABBITMQ_URL`` (default 127.0.0.1:5672), each phase
with names of its own, deleted after it; ``--backend sqlite,rabbitmq`` runs both side by side
for each trigger count. The RabbitMQ server is not pinned: it runs where the system put it.
Figures go to stdout as markdown and to ``<workdir>/results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import harness  # noqa: E402
from shared.ports import free_port  # noqa: E402

PAYLOAD = b'{"d":"' + b"x" * 1014 + b'"}'  # 1,024 bytes of JSON data
CONNECTIONS = 32  # the paced sender's
# wrk's: a 202 waits for its group commit (an fsync, 4-10 ms here), so the events in flight,
# not the CPU, bound what 32 connections can get acknowledged.
SATURATION_CONNECTIONS = 128
NS = "bench"
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


# -- the subscriber -------------------------------------------------------------------------
def sink_main(port: int, out: Path) -> None:
    """A subscriber that answers 200 at once and records (ce-id, arrival) per request; writes
    them to ``out`` on SIGTERM."""
    import httptools
    import uvloop

    arrivals: list[tuple[str, int]] = []
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    class Conn(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.ce_id = ""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_header(self, name: bytes, value: bytes) -> None:
            if name.lower() == b"ce-id":
                self.ce_id = value.decode()

        def on_message_complete(self) -> None:
            arrivals.append((self.ce_id, time.monotonic_ns()))
            self.transport.write(ok)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Conn, "127.0.0.1", port, backlog=4096)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("sink ready", flush=True)
        await stop.wait()
        server.close()
        out.write_text("\n".join(f"{i} {t}" for i, t in arrivals))

    uvloop.run(serve())


# -- the paced sender -----------------------------------------------------------------------
def request_bytes(port: int, event_id: str) -> bytes:
    head = (
        f"POST /{NS}/default HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"ce-specversion: 1.0\r\nce-id: {event_id}\r\nce-source: /bench\r\n"
        f"ce-type: bench.event\r\ncontent-type: application/json\r\n"
        f"content-length: {len(PAYLOAD)}\r\n\r\n"
    )
    return head.encode() + PAYLOAD


def send_main(port: int, rate: float, duration_s: float, out: Path) -> None:
    """Events ``e<i>`` at ``rate``/s for ``duration_s``; writes (id, scheduled, acked, status)
    per event, times in monotonic ns."""
    import uvloop

    async def run() -> None:
        total = int(rate * duration_s)
        queue: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        results: list[tuple[int, int, int, int]] = []

        async def worker() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            while True:
                item = await queue.get()
                if item is None:
                    writer.close()
                    return
                i, scheduled = item
                try:
                    writer.write(request_bytes(port, f"e{i}"))
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head.split(b" ", 2)[1])
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    if length:
                        await reader.readexactly(length)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status = 0
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                results.append((i, scheduled, time.monotonic_ns(), status))

        workers = [asyncio.create_task(worker()) for _ in range(CONNECTIONS)]
        start = time.monotonic_ns() + 50_000_000
        period = 1e9 / rate
        for i in range(total):
            at = start + int(i * period)
            delay = (at - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((i, at))
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        out.write_text("\n".join(" ".join(map(str, r)) for r in results))

    uvloop.run(run())


# -- the run --------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


class Bench:
    def __init__(
        self, workdir: Path, duration_s: float, rt: bool, synchronous: str = "FULL"
    ) -> None:
        self.synchronous = synchronous
        self.workdir = workdir
        self.duration_s = duration_s
        self.children = harness.Children(workdir)
        self.cores, self.load_core, self.test_core = harness.pin_cores()
        self.rt = ["chrt", "-r", "10"] if rt else []
        self.py = sys.executable
        self.kubeconfig = Path()
        self.sink_port = free_port()
        self.sink_proc: subprocess.Popen[bytes] | None = None
        self.seq = 0
        self.backend = "sqlite"
        self.trigger_uids: list[str] = []
        self.prefix = ""

    def spawn(self, name: str, argv: list[str], *, core: int | None, **kw: Any) -> Any:
        return self.children.spawn(name, [*self.rt, *argv], core=core, **kw)

    def start_api(self) -> None:
        proc = self.spawn(
            "kubeapi", [self.py, "-m", "controlplane.kubeapi", "--state-dir",
                        str(self.workdir / "kube")], core=self.load_core, capture=True,
        )
        assert proc.stdout is not None
        proc.stdout.readline()
        self.kubeconfig = Path(proc.stdout.readline().decode().strip())

    async def api(self, triggers: int) -> None:
        """The namespace, the broker (of the backend's class) and exactly ``triggers``
        triggers to the sink."""
        from shared.kube.config import load_api_client
        from shared.kube.kubeclient import ApiKubeClient
        from shared.kube.resources import (
            BROKER_CLASS_ANNOTATION,
            BROKERS,
            DEFAULT_BROKER_CLASS,
            NAMESPACES,
            RABBITMQ_BROKER_CLASS,
            TRIGGERS,
        )

        cls = RABBITMQ_BROKER_CLASS if self.backend == "rabbitmq" else DEFAULT_BROKER_CLASS
        api = await load_api_client({}, str(self.kubeconfig))
        try:
            kube = ApiKubeClient(api)
            if await kube.get(NAMESPACES, "", NS) is None:
                await kube.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": NS}})
            broker = await kube.get(BROKERS, NS, "default")
            annotations = ((broker or {}).get("metadata") or {}).get("annotations") or {}
            if broker is not None and annotations.get(BROKER_CLASS_ANNOTATION) != cls:
                await kube.delete(BROKERS, NS, "default")  # the class is immutable
                for _ in range(100):
                    if await kube.get(BROKERS, NS, "default") is None:
                        break
                    await asyncio.sleep(0.05)
                broker = None
            if broker is None:
                await kube.create(BROKERS, NS, {
                    "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                    "metadata": {"name": "default", "namespace": NS,
                                 "annotations": {BROKER_CLASS_ANNOTATION: cls}}, "spec": {}})
            for obj in (await kube.list(TRIGGERS, NS))["items"]:
                await kube.delete(TRIGGERS, NS, obj["metadata"]["name"])
            self.trigger_uids = []
            for n in range(triggers):
                made = await kube.create(TRIGGERS, NS, {
                    "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
                    "metadata": {"name": f"t{n}", "namespace": NS},
                    "spec": {"broker": "default",
                             "subscriber": {"uri": f"http://127.0.0.1:{self.sink_port}/"}}})
                self.trigger_uids.append(str(made["metadata"]["uid"]))
        finally:
            await api.close()

    async def rabbitmq_cleanup(self) -> None:
        """Delete the exchanges and queues of the phase that just ended."""
        import aio_pika

        from eventing.broker.rabbitmq import broker_exchange, trigger_queue

        broker = f"{NS}/default"
        conn = await aio_pika.connect(RABBITMQ_URL, timeout=10)
        try:
            channel = await conn.channel()
            for uid in self.trigger_uids:
                await channel.queue_delete(trigger_queue(uid, broker, self.prefix))
            name = broker_exchange(broker, self.prefix)
            await channel.queue_delete(f"{name}.dlq")
            await channel.exchange_delete(f"{name}.dlx")
            await channel.exchange_delete(name)
        finally:
            await conn.close()

    def stop_broker(self, proc: Any) -> None:
        self.children.stop(proc)
        if self.backend == "rabbitmq":
            asyncio.run(self.rabbitmq_cleanup())

    def start_sink(self, rt: bool = True) -> Path:
        self.seq += 1
        out = self.workdir / f"sink-{self.seq}.txt"
        argv = [self.py, __file__, "--sink", str(self.sink_port), str(out)]
        self.sink_proc = (self.spawn if rt else self.children.spawn)(
            f"sink-{self.seq}", argv, core=self.load_core, capture=True,
        )
        assert self.sink_proc.stdout is not None
        self.sink_proc.stdout.readline()
        return out

    def stop_sink(self, out: Path) -> dict[str, int]:
        assert self.sink_proc is not None
        self.children.stop(self.sink_proc)
        arrivals: dict[str, int] = {}
        self.deliveries: list[tuple[str, int]] = []
        for line in out.read_text().splitlines():
            event_id, at = line.split()
            self.deliveries.append((event_id, int(at)))
            arrivals.setdefault(event_id, int(at))
        return arrivals

    def start_broker(self) -> tuple[Any, int]:
        self.seq += 1
        port = free_port()
        env = {
            "BROKER_STATE_DIR": str(self.workdir / f"broker-{self.seq}"),
            "BROKER_BIND_HOST": "127.0.0.1",
            "INGRESS_PORT": str(port),
            "BROKER_METRICS_PORT": str(free_port()),
            "BROKER_SQLITE_SYNCHRONOUS": self.synchronous,
        }
        if self.backend == "rabbitmq":
            self.prefix = f"bench-{os.getpid()}-{self.seq}."
            env.update(BROKER_BACKEND="rabbitmq", RABBITMQ_URL=RABBITMQ_URL,
                       BROKER_RABBITMQ_PREFIX=self.prefix)
        proc = self.spawn(
            f"broker-{self.seq}",
            [self.py, "-m", "eventing.broker", "--kubeconfig", str(self.kubeconfig)],
            core=self.test_core, env=env,
        )
        deadline = time.monotonic() + harness.READY_TIMEOUT_S
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise harness.Unavailable(f"the broker: {self.children.log_tail(proc)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
        time.sleep(1.0)  # the triggers' workers start once the informers have listed
        return proc, port

    def saturation(self, triggers: int) -> dict[str, Any]:
        # wrk keeps the load core busy: a real-time subscriber beside it would take turns with
        # it in 100 ms slices (SCHED_RR) and halve the load; at normal priority it gets what
        # wrk leaves, and deliveries catch up after the phase.
        out = self.start_sink(rt=False)
        broker, port = self.start_broker()
        script = self.workdir / "post.lua"
        script.write_text(WRK_SCRIPT.replace("PAYLOAD", PAYLOAD.decode()))
        cpu0 = harness.cpu_seconds(broker.pid)
        argv = [*self.rt, "wrk", "-t1", f"-c{SATURATION_CONNECTIONS}", f"-d{self.duration_s:g}s",
                "--latency", "-s", str(script), f"http://127.0.0.1:{port}/{NS}/default"]
        proc = self.children.spawn("wrk", argv, core=self.load_core, capture=True)
        text, _ = proc.communicate(timeout=self.duration_s + 60)
        self.children.stop(proc)
        cpu = harness.cpu_seconds(broker.pid) - cpu0
        figures = harness.parse_wrk(text.decode())
        delivered = len(self.stop_sink(out)) and len(self.deliveries)
        self.stop_broker(broker)
        return {
            "backend": self.backend, "triggers": triggers, "acked_per_s": figures["rps"],
            "publish_p50_ms": figures["p50_ms"], "publish_p99_ms": figures["p99_ms"],
            "errors": figures["non_2xx"], "socket_errors": figures["socket_errors"],
            "deliveries_per_s": delivered / self.duration_s,
            "broker_cpu_cores": cpu / self.duration_s,
        }

    def paced(self, triggers: int, rate: float) -> dict[str, Any]:
        out = self.start_sink()
        broker, port = self.start_broker()
        sent = self.workdir / f"sent-{self.seq}.txt"
        cpu0 = harness.cpu_seconds(broker.pid)
        proc = self.spawn(
            "sender", [self.py, __file__, "--send", str(port), str(rate),
                       str(self.duration_s), str(sent)], core=self.load_core,
        )
        try:
            proc.wait(timeout=self.duration_s * 3 + 30)
        finally:
            self.children.stop(proc)
        time.sleep(1.0)  # the last deliveries
        cpu = harness.cpu_seconds(broker.pid) - cpu0
        self.stop_sink(out)
        self.stop_broker(broker)
        scheduled: dict[str, int] = {}
        publish: list[float] = []
        errors = 0
        for line in sent.read_text().splitlines():
            i, at, acked, status = (int(x) for x in line.split())
            if status == 202:
                scheduled[f"e{i}"] = at
                publish.append((acked - at) / 1e6)
            else:
                errors += 1
        delivery = [
            (t - scheduled[event_id]) / 1e6
            for event_id, t in self.deliveries if event_id in scheduled
        ]
        return {
            "backend": self.backend, "triggers": triggers, "rate": rate,
            "acked": len(scheduled), "errors": errors,
            "publish_p50_ms": pct(publish, 0.5), "publish_p99_ms": pct(publish, 0.99),
            "delivery_p50_ms": pct(delivery, 0.5), "delivery_p99_ms": pct(delivery, 0.99),
            "deliveries": len(delivery),
            "missing": len(scheduled) * triggers - len(delivery),
            "broker_cpu_cores": cpu / (self.duration_s + 1.0),
        }


WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = 'PAYLOAD'
wrk.headers["ce-specversion"] = "1.0"
wrk.headers["ce-source"] = "/bench"
wrk.headers["ce-type"] = "bench.event"
wrk.headers["content-type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  wrk.headers["ce-id"] = "w" .. n
  return wrk.format()
end
"""


def codec() -> None:
    """The broker's codec against the cloudevents package: one binary request parsed and
    written back in binary mode, 1 KB of JSON data."""
    from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event
    from cloudevents.v1.conversion import to_binary as v1_to_binary
    from cloudevents.v1.http import from_http

    from shared.cloudevent import parse_message, to_binary

    hdr = {"ce-specversion": "1.0", "ce-id": "abc", "ce-source": "/s", "ce-type": "t.t",
           "content-type": "application/json", "ce-time": "2020-01-01T00:00:00Z"}
    pairs = [(k.encode(), v.encode()) for k, v in hdr.items()]

    def lean() -> None:
        (e,) = parse_message(pairs, PAYLOAD)
        to_binary(e)

    def v1() -> None:
        v1_to_binary(from_http(hdr, PAYLOAD))

    def v2() -> None:
        to_binary_event(from_http_event(HTTPMessage(headers=hdr, body=PAYLOAD)))

    base = None
    for name, f in (("shared.cloudevent", lean), ("cloudevents v1 API", v1),
                    ("cloudevents 2.x core", v2)):
        t = min(timeit.repeat(f, number=2000, repeat=5)) / 2000
        base = base or t
        print(f"{name:24} {t * 1e6:8.1f} us  {t / base:5.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--triggers", default="0,1,10,100",
                   help="trigger counts; 0 measures the ingress and the event log alone")
    p.add_argument("--no-rt", action="store_true", help="no chrt -r 10")
    p.add_argument("--workdir", type=Path)
    p.add_argument("--codec", action="store_true")
    p.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"],
                   help="the event log's fsync policy (BROKER_SQLITE_SYNCHRONOUS)")
    p.add_argument("--backend", default="sqlite",
                   help="sqlite, rabbitmq, or both side by side: sqlite,rabbitmq")
    p.add_argument("--sink", nargs=2, metavar=("PORT", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--send", nargs=4, metavar=("PORT", "RATE", "SECONDS", "OUT"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.sink:
        sink_main(int(args.sink[0]), Path(args.sink[1]))
        return 0
    if args.send:
        send_main(int(args.send[0]), float(args.send[1]), float(args.send[2]),
                  Path(args.send[3]))
        return 0
    if args.codec:
        codec()
        return 0
    if shutil.which("wrk") is None:
        print("wrk is required (apt-get install wrk)", file=sys.stderr)
        return 2
    rt = not args.no_rt and subprocess.run(["chrt", "-r", "10", "true"]).returncode == 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="knpy-eventing-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    backends = args.backend.split(",")
    if not set(backends) <= {"sqlite", "rabbitmq"}:
        print(f"--backend: sqlite and/or rabbitmq, got {args.backend!r}", file=sys.stderr)
        return 2
    bench = Bench(workdir, args.duration, rt, args.synchronous)
    results: dict[str, Any] = {"environment": harness.environment(bench.cores), "rt": rt,
                               "synchronous": args.synchronous,
                               "saturation": [], "paced": []}
    signal.signal(signal.SIGTERM, harness.raise_exit)
    try:
        bench.start_api()
        for n in (int(x) for x in args.triggers.split(",")):
            for backend in backends:
                bench.backend = backend
                asyncio.run(bench.api(n))
                results["saturation"].append(bench.saturation(n))
                # 1,000 deliveries/s in each case: 1,000 events/s to one trigger, 100 to ten...
                rates = [1000.0 / max(n, 1)]
                for rate in rates:
                    results["paced"].append(bench.paced(n, rate))
                print(json.dumps(results["saturation"][-1]),
                      json.dumps(results["paced"][-len(rates):]), file=sys.stderr, flush=True)
    finally:
        bench.children.kill_all()
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"machine: {results['environment']['cpu_model']}, load at start "
          f"{results['environment']['loadavg_at_start']}, chrt -r 10: {rt}, "
          f"synchronous={args.synchronous}\n")
    print(harness.markdown_table(
        [("backend", "l"), ("triggers", "r"), ("acked events/s", "r"), ("publish p50 ms", "r"),
         ("publish p99 ms", "r"), ("deliveries/s meanwhile", "r"), ("broker CPU", "r"),
         ("errors", "r")],
        [[r["backend"], str(r["triggers"]), f"{r['acked_per_s']:,.0f}",
          f"{r['publish_p50_ms']:.2f}",
          f"{r['publish_p99_ms']:.2f}", f"{r['deliveries_per_s']:,.0f}",
          f"{r['broker_cpu_cores']:.2f}", str(r["errors"])] for r in results["saturation"]],
    ))
    print()
    print(harness.markdown_table(
        [("backend", "l"), ("triggers", "r"), ("events/s", "r"), ("publish p50 ms", "r"),
         ("publish p99 ms", "r"),
         ("delivery p50 ms", "r"), ("delivery p99 ms", "r"), ("missing", "r"),
         ("broker CPU", "r"), ("errors", "r")],
        [[r["backend"], str(r["triggers"]), f"{r['rate']:,.0f}", f"{r['publish_p50_ms']:.2f}",
          f"{r['publish_p99_ms']:.2f}", f"{r['delivery_p50_ms']:.2f}",
          f"{r['delivery_p99_ms']:.2f}", str(r["missing"]), f"{r['broker_cpu_cores']:.2f}",
          str(r["errors"])] for r in results["paced"]],
    ))
    print(f"\nresults: {workdir / 'results.json'}")
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
