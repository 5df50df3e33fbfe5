"""When a draining queue-proxy may stop: Knative's Drainer, as a pure core.

Knative (knative.dev/pkg network/handlers/drain.go, used by pkg/queue/sharedmain) starts a quiet
period timer when draining begins and restarts it on every request that is not a probe; the
drain is over when the timer fires. Kubelet probes fail from the moment draining begins, so the
pod leaves the endpoints while it still serves whatever arrives meanwhile. Then the server
shuts down, waiting for the requests still in flight.

E.g. quiet period 30 s, SIGTERM at t=0, requests at t=10 and t=25: the drain ends at t=55 if
no request is in flight then, else when the last one finishes, and at the latest at t=55 plus
the revision timeout, after which nothing in flight can still be within its time.
"""

from __future__ import annotations

import enum


class DrainState(enum.Enum):
    SERVING = "serving"
    DRAINING = "draining"  # probes fail; requests are still served
    QUIET = "quiet"  # the quiet period passed; waiting for the requests in flight
    DONE = "done"


class Drainer:
    """Knative's drainer; ``last_request`` is when the latest request that is not a probe
    arrived (the handler stores it, once per request: a method call would cost more)."""

    __slots__ = ("_started", "last_request", "quiet_period_s", "request_timeout_s")

    def __init__(self, quiet_period_s: float, request_timeout_s: float) -> None:
        if quiet_period_s < 0:
            raise ValueError(f"quiet period must be >= 0, got {quiet_period_s}")
        if request_timeout_s <= 0:
            raise ValueError(f"request timeout must be > 0, got {request_timeout_s}")
        self.quiet_period_s = quiet_period_s
        self.request_timeout_s = request_timeout_s
        self._started: float | None = None
        self.last_request = 0.0

    def __repr__(self) -> str:
        return f"<Drainer quiet={self.quiet_period_s}s started={self._started}>"

    @property
    def draining(self) -> bool:
        return self._started is not None

    def start(self, now: float) -> None:
        if self._started is None:
            self._started = now
            self.last_request = now

    def reset(self) -> None:
        """Stop draining (Knative's Reset: a drain asked for without a SIGTERM)."""
        self._started = None

    def state(self, now: float, in_flight: int) -> DrainState:
        if self._started is None:
            return DrainState.SERVING
        quiet_since = max(self._started, self.last_request)
        if now - quiet_since < self.quiet_period_s:
            return DrainState.DRAINING
        if in_flight == 0 or now - quiet_since >= self.quiet_period_s + self.request_timeout_s:
            return DrainState.DONE
        return DrainState.QUIET
