"""The demand signal: Knative's activator ConcurrencyReporter.

Theory of operation (pkg/activator/handler/concurrency_reporter.go):

- Every request the activator holds counts, from arrival to the end of its response, waiting
  in the throttler included: that queue *is* the demand of a revision at zero.
- Every ``period_s`` (1 s) one WireStatMessages goes to the autoscaler with, per revision
  seen, the time-averaged concurrency and the request count of the period, as the activator's
  own pod (Knative's RequestStats, shared with the queue-proxy).
- The first request for a revision the reporter does not track (it was idle for a whole
  period, or is new) sends a stat *at once*: concurrency 1, count 1. That is the cold-start
  wake-up; the autoscaler scales from zero on it instead of a second later. The next
  periodic report subtracts that 1 from both figures, so it is not counted twice.
- A revision with no activity for a whole period is forgotten (after its report), so the
  next request is a "first" again.
"""

from __future__ import annotations

import asyncio
import time

from activator.cluster import RevisionKey
from activator.statsink import StatSink
from shared.request_stats import RequestStats
from shared.stat_proto import StatData, WireStat, encode_wire_stats

__all__ = ["ConcurrencyReporter", "RevisionStats"]


class RevisionStats:
    """One revision's counters in this period; the handler holds it while it is current."""

    __slots__ = ("first_request", "key", "refs", "removed", "stats")

    def __init__(self, key: RevisionKey, now: float) -> None:
        self.key = key
        self.stats = RequestStats(now)
        self.first_request = 1.0
        self.refs = 0  # requests in, not out: an entry with any is never forgotten
        self.removed = False

    def req_in(self, now: float) -> None:
        self.refs += 1
        self.stats.req_in(now, False)

    def req_out(self, now: float) -> None:
        self.refs -= 1
        self.stats.req_out(now, False)

    def __repr__(self) -> str:
        return f"<RevisionStats {self.key} in={self.refs} removed={self.removed}>"


# A placeholder that is never current, so the first lookup goes to the reporter.
def removed_stats() -> RevisionStats:
    stats = RevisionStats(RevisionKey("", ""), 0.0)
    stats.removed = True
    return stats


class ConcurrencyReporter:
    """Per-revision request stats, sent to ``sink`` every period and at once on a cold start."""

    def __init__(self, pod_name: str, sink: StatSink, *, period_s: float = 1.0) -> None:
        self.pod_name = pod_name
        self.sink = sink
        self.period_s = period_s
        self.revisions: dict[RevisionKey, RevisionStats] = {}
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<ConcurrencyReporter {self.pod_name} revisions={len(self.revisions)}>"

    def entry(self, key: RevisionKey, now: float) -> RevisionStats:
        """The current stats of ``key``; creating them sends the cold-start stat at once."""
        stats = self.revisions.get(key)
        if stats is None:
            stats = self.revisions[key] = RevisionStats(key, now)
            first = StatData(
                pod_name=self.pod_name, average_concurrent_requests=1.0, request_count=1.0
            )
            self.sink.send(encode_wire_stats([(key.namespace, key.name, first)]))
        return stats

    def report(self, now: float) -> list[WireStat]:
        """Close the period: one message per revision; forget the idle ones."""
        messages: list[WireStat] = []
        for key, stats in list(self.revisions.items()):
            report = stats.stats.report(now)
            first = stats.first_request
            stats.first_request = 0.0
            if report.avg_concurrency == 0 and stats.refs == 0:
                stats.removed = True
                del self.revisions[key]
            messages.append(
                (
                    key.namespace,
                    key.name,
                    StatData(
                        pod_name=self.pod_name,
                        # The cold-start stat already counted one request (Knative's firstAdj).
                        average_concurrent_requests=max(report.avg_concurrency - first, 0.0),
                        request_count=report.request_count - first,
                    ),
                )
            )
        return messages

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        period = self.period_s
        next_at = time.monotonic() + period
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += period
            messages = self.report(time.monotonic())
            if messages:
                self.sink.send(encode_wire_stats(messages))
