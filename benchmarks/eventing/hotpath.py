"""The broker's Python cost per event without sockets, with its metrics on and off: what the
observability costs on the hot path.

Why: on the shared 2-core machine a run of ``run.py`` moves by 10-30 % between runs of the same
code, so a cost of a few per cent is invisible there. This drives the real ``Ingress.handle``
(parse, stamp, store, answer) over an event log that stores at once, and the real
``Dispatcher.deliver`` (headers, binary encoding, one attempt, the answer) over an HTTP client
that answers 200 at once: what is left out is the event loop's I/O, the kernel and SQLite,
which the metrics do not touch. Rounds alternate off and on; the best of ``--repeat`` rounds is
reported (a preempted round is only slower), in nanoseconds per event. Run it under
``chrt -r 10``. A third case adds tracing with every trace sampled (an ingress span, a delivery
span, the ``traceparent`` written into the event and sent), exported to nowhere: the cost of
turning it on, before the exporter's own.

Run: .venv/bin/python benchmarks/eventing/hotpath.py [--events 20000] [--repeat 11]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from eventing.broker.backend import Headers, Record  # noqa: E402
from eventing.broker.client import Answer  # noqa: E402
from eventing.broker.dispatcher import Dispatcher, TriggerTarget  # noqa: E402
from eventing.broker.ingress import Ingress  # noqa: E402
from eventing.broker.metrics import BrokerMetrics, delivery_names  # noqa: E402
from eventing.delivery import CLUSTER_DEFAULT  # noqa: E402
from shared.cloudevent import Event, parse_message  # noqa: E402
from shared.observability import ObservabilityConfig  # noqa: E402
from shared.tracing import setup_tracing  # noqa: E402

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, Tracer

# The benchmark's event (run.py): 1 KB of JSON in binary mode.
HEADERS = [
    (b"ce-specversion", b"1.0"), (b"ce-id", b"w1"), (b"ce-source", b"/bench"),
    (b"ce-type", b"bench.event"), (b"content-type", b"application/json"),
    (b"host", b"127.0.0.1"),
]
BODY = b'{"data": "' + b"x" * 1000 + b'"}'


class StoredAtOnce:
    """An event log whose append has resolved already."""

    def append(self, broker: str, records: Sequence[tuple[Event, Headers]]) -> Awaitable[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Answers200:
    """An HTTP client that answers every POST 200, empty."""

    def __init__(self) -> None:
        self.answer = Answer(200, [], b"")

    async def post(
        self, url: str, headers: Headers, body: bytes, *, timeout_s: float, max_body: int
    ) -> Answer:
        return self.answer

    async def close(self) -> None:
        return None


class Discard:
    """A span exporter that drops what it gets."""

    def export(self, spans: Sequence[ReadableSpan]) -> object:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def tracer() -> Tracer:
    cfg = ObservabilityConfig(tracing_protocol="http/protobuf",
                              tracing_endpoint="http://127.0.0.1:4318/v1/traces",
                              tracing_sampling_rate=1.0)
    made = setup_tracing("eventing-broker", cfg, exporter=Discard())  # type: ignore[arg-type]
    assert made is not None
    return made


async def ingress(events: int, metrics: BrokerMetrics | None, traced: bool = False) -> float:
    ing = Ingress(StoredAtOnce(), lambda _ns, _name: True, metrics=metrics)  # type: ignore[arg-type]
    if traced:
        ing.tracer = tracer()
    answered = 0

    def respond(_data: bytes, _close: bool) -> None:
        nonlocal answered
        answered += 1

    start = time.perf_counter()
    for i in range(events):
        # a fresh header list each time: a traced request's event gets a traceparent
        ing.handle(b"POST", b"/demo/default", list(HEADERS), BODY, respond)
        if i % 64 == 63:
            await asyncio.sleep(0)  # the stores' callbacks run, as between reads
    while answered < events:
        await asyncio.sleep(0)
    return (time.perf_counter() - start) / events * 1e9


async def deliver(events: int, metrics: BrokerMetrics | None, traced: bool = False) -> float:
    dispatcher = Dispatcher(None, None, metrics=metrics)  # type: ignore[arg-type]
    if traced:
        dispatcher.tracer = tracer()
    dispatcher._client = Answers200()  # type: ignore[assignment]
    target = TriggerTarget(
        "uid", "demo", "t", "demo/default", "http://127.0.0.1:8081/", None, CLUSTER_DEFAULT,
        lambda _attrs: True, "http://broker-ingress/demo/default",
    )
    (event,) = parse_message(HEADERS, BODY)
    rec = Record(1, event, [])
    series = None
    if metrics is not None:
        series = metrics.trigger("demo/default", *delivery_names("demo", "t"))
    start = time.perf_counter()
    for _ in range(events):
        await dispatcher.deliver(target, rec, event, 255, series=series, picked=start)
    return (time.perf_counter() - start) / events * 1e9


async def main(events: int, repeat: int) -> None:
    Run = Callable[[int, BrokerMetrics | None, bool], Awaitable[float]]
    modes = ("off", "metrics", "traced")
    best: dict[tuple[str, str], float] = {}
    for _ in range(repeat):
        for name, run in (("ingress", ingress), ("deliver", deliver)):
            for mode in modes:
                go: Run = run
                ns = await go(events, None if mode == "off" else BrokerMetrics(), mode == "traced")
                best[(name, mode)] = min(best.get((name, mode), float("inf")), ns)
    for name in ("ingress", "deliver"):
        off = best[(name, "off")]
        cells = [f"off {off:6.0f}"]
        for mode in modes[1:]:
            ns = best[(name, mode)]
            cells.append(f"{mode} {ns:6.0f} (+{ns - off:5.0f}, {(ns - off) / off:+.1%})")
        print(f"{name:8} ns/event: " + "   ".join(cells))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=11)
    args = p.parse_args()
    import uvloop

    uvloop.run(main(args.events, args.repeat))
