"""Trigger filter micro-benchmark: evaluations per second, compiled once vs parsed per event.

What a broker's fan-out pays per (event, trigger) pair to decide a match, in one process on
one core, for the filters people write most:

exact        filters: [{exact: {type: ...}}]                    (the common case)
legacy       filter.attributes: {type: ..., source: ""}          (the pre-filters API)
cesql        filters: [{cesql: "type = '...' AND source LIKE 'http://%'"}]
any-of-4     filters: [{any: [4 exact filters]}], the last one matching

Each is timed on a matching and a non-matching event, compiled once (how the broker runs
them: ``compile_trigger_filter`` once per Trigger) and, for comparison, compiled for every
event (what "filters are compiled once per trigger" saves). The CESQL engine is also timed
alone: ``Expression.evaluate`` on a compiled expression vs ``cesql.evaluate`` that parses.
Rates are per CPU second of this process (``time.process_time``), which a busy machine
disturbs far less than the wall clock; the runs are short and side by side, so the ratios
hold even where the absolute numbers drift.

    .venv/bin/python benchmarks/eventing/filters.py               # ~10 s
    .venv/bin/python benchmarks/eventing/filters.py --seconds 0.5
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from eventing import cesql  # noqa: E402
from eventing.filters import compile_trigger_filter  # noqa: E402

EVENT: Mapping[str, object] = {
    "specversion": "1.0",
    "id": "5f6e0a3c-1d2b-4c59-9a4e-2f1b7a2c9d10",
    "type": "com.example.order.created",
    "source": "http://shop.example.com/orders",
    "subject": "order-1234",
    "time": "2026-12-01T04:00:00Z",
    "datacontenttype": "application/json",
    "knativearrivaltime": "2026-12-01T04:00:00.123Z",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
}
OTHER: Mapping[str, object] = {**EVENT, "type": "com.example.order.cancelled"}

EXPRESSION = "type = 'com.example.order.created' AND source LIKE 'http://%'"
SPECS: dict[str, Mapping[str, object]] = {
    "exact": {"filters": [{"exact": {"type": "com.example.order.created"}}]},
    "legacy": {"filter": {"attributes": {"type": "com.example.order.created", "source": ""}}},
    "cesql": {"filters": [{"cesql": EXPRESSION}]},
    "any-of-4": {
        "filters": [
            {
                "any": [
                    {"exact": {"type": "com.example.invoice.created"}},
                    {"exact": {"type": "com.example.invoice.paid"}},
                    {"exact": {"type": "com.example.order.shipped"}},
                    {"exact": {"type": "com.example.order.created"}},
                ]
            }
        ]
    },
}


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per CPU second of ``fn`` (this process's CPU time, not the wall clock, so that
    other processes on a shared machine count less), in batches of 1,000 calls."""
    batch = 1000
    calls = 0
    start = time.process_time()
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        used = time.process_time() - start
        if used >= seconds:
            return calls / used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.4, help="time per measurement")
    args = parser.parse_args()
    s = args.seconds

    print(f"{'filter':<10} {'event':<9} {'compiled/s':>12} {'per-event/s':>12} {'ratio':>6}")
    for name, spec in SPECS.items():
        compiled = compile_trigger_filter(spec)
        for label, event in (("match", EVENT), ("no-match", OTHER)):
            assert compiled(event) is (label == "match"), (name, label)
            once = rate(lambda c=compiled, e=event: c(e), s)
            each = rate(lambda sp=spec, e=event: compile_trigger_filter(sp)(e), s)
            print(f"{name:<10} {label:<9} {once:>12,.0f} {each:>12,.0f} {once / each:>5.0f}x")

    expression = cesql.compile(EXPRESSION)
    once = rate(lambda: expression.evaluate(EVENT), s)
    each = rate(lambda: cesql.evaluate(EXPRESSION, EVENT), s)
    print(f"\nCESQL engine alone: {EXPRESSION}")
    print(f"  Expression.evaluate (compiled once) {once:>12,.0f}/s")
    print(f"  cesql.evaluate (parses every time)  {each:>12,.0f}/s   {once / each:.0f}x")
    print(f"  per evaluation: {1e6 / once:.2f} us compiled, {1e6 / each:.1f} us parsing")


if __name__ == "__main__":
    main()
