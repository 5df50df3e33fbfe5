"""Knative's RequestStats: time-weighted request concurrency over a reporting window.

Port of knative/networking pkg/http/stats/request.go. Concurrency is integrated over time:
each change first adds ``concurrency * seconds since the last change`` to a running sum,
and report() divides that sum by the seconds covered. E.g. two requests of 0.5 s each in a
1 s window average a concurrency of 1; one request in flight for 0.25 s of it, 0.25.

A proxied request (one that came through the activator) counts in the totals *and* in the
proxied figures, as Knative's ProxiedIn falls through to ReqIn: the autoscaler subtracts
the proxied part to avoid counting the activator's load twice.

Time is passed in (seconds, monotonic) and the object is not locked: the queue-proxy's event
loop is its only caller. As in Knative, a timestamp older than the last change (events
observed out of order) adds no time rather than a negative amount.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RequestStats", "StatReport"]


@dataclass(frozen=True, slots=True)
class StatReport:
    """One window's figures (Knative's RequestStatsReport)."""

    avg_concurrency: float
    avg_proxied_concurrency: float
    request_count: float  # requests that arrived in the window, proxied ones included
    proxied_request_count: float


class RequestStats:
    """Collects request arrivals and departures; report() closes a window and opens the next."""

    __slots__ = (
        "_computed_concurrency",
        "_computed_proxied_concurrency",
        "_concurrency",
        "_last_change",
        "_proxied_concurrency",
        "_proxied_count",
        "_request_count",
        "_seconds_in_use",
    )

    def __init__(self, now: float) -> None:
        # State that carries across windows.
        self._concurrency = 0.0
        self._proxied_concurrency = 0.0
        self._last_change = now
        # The current window's sums, reset by report().
        self._request_count = 0.0
        self._proxied_count = 0.0
        self._computed_concurrency = 0.0
        self._computed_proxied_concurrency = 0.0
        self._seconds_in_use = 0.0

    def _compute(self, now: float) -> None:
        # Knative's compute: integrate the concurrency held since the last change.
        seconds = now - self._last_change
        if seconds > 0:
            self._seconds_in_use += seconds
            self._computed_concurrency += self._concurrency * seconds
            self._computed_proxied_concurrency += self._proxied_concurrency * seconds
            self._last_change = now

    # req_in and req_out run once per request each: Knative's compute is inlined in both (a
    # call costs about as much as the integration itself).
    def req_in(self, now: float, proxied: bool) -> None:
        """A request arrived (Knative's ReqIn, or ProxiedIn when ``proxied``)."""
        seconds = now - self._last_change
        if seconds > 0:
            self._seconds_in_use += seconds
            self._computed_concurrency += self._concurrency * seconds
            self._computed_proxied_concurrency += self._proxied_concurrency * seconds
            self._last_change = now
        if proxied:
            self._proxied_concurrency += 1
            self._proxied_count += 1
        self._request_count += 1
        self._concurrency += 1

    def req_out(self, now: float, proxied: bool) -> None:
        """A request finished (Knative's ReqOut, or ProxiedOut when ``proxied``)."""
        seconds = now - self._last_change
        if seconds > 0:
            self._seconds_in_use += seconds
            self._computed_concurrency += self._concurrency * seconds
            self._computed_proxied_concurrency += self._proxied_concurrency * seconds
            self._last_change = now
        if proxied:
            self._proxied_concurrency -= 1
        self._concurrency -= 1

    @property
    def concurrency(self) -> float:
        """Requests in flight now (arrived, not finished), proxied ones included."""
        return self._concurrency

    def report(self, now: float) -> StatReport:
        """Close the window at ``now``: return its figures and start a new one.

        Requests still in flight carry over and count in the next window too.
        """
        self._compute(now)
        seconds = self._seconds_in_use
        if seconds > 0:
            avg = self._computed_concurrency / seconds
            avg_proxied = self._computed_proxied_concurrency / seconds
        else:
            avg = avg_proxied = 0.0
        report = StatReport(avg, avg_proxied, self._request_count, self._proxied_count)
        self._request_count = self._proxied_count = 0.0
        self._computed_concurrency = self._computed_proxied_concurrency = 0.0
        self._seconds_in_use = 0.0
        return report

    def __repr__(self) -> str:
        return (
            f"<RequestStats concurrency={self._concurrency:g} "
            f"proxied={self._proxied_concurrency:g} window={self._seconds_in_use:g}s "
            f"requests={self._request_count:g}>"
        )
