"""Waiting for a Knative object to be Ready, as ``kn service create`` waits.

Theory of operation (kn's pkg/wait, matched in behaviour): every Knative object carries a
``Ready`` condition that its controller keeps. A watch on the one object sends each new state.
A state whose ``status.observedGeneration`` is behind ``metadata.generation`` describes the spec
before the change and is skipped. Then:

- Ready True: done; the object's URL (``status.url``, or ``status.address.url`` for addressables
  such as a Broker) is the answer.
- Ready False: a failure, but not at once. A controller may still turn it True (a container that
  restarts, a route that catches up), so the failure stands only when no Ready True came within
  ERROR_WINDOW_S (kn's 2 s) of the first False. Its ``reason: message`` is the answer.
- Ready Unknown: still working; its message, when it changes, is a progress line.

A progress line carries the seconds since the wait began (kn's ``  1.234s message``); a
sub-condition that turns True reads "<name> OK" ("Configuration OK", "Route OK" for a Service).

``ReadyWait`` decides and does no I/O (``now`` is passed in, so tables of cases test it);
``wait_ready`` is the thin loop that feeds it from ``Api.watch``.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from shared.apiclient import Api, WatchExpired
from shared.kube.resources import Obj, Resource

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ERROR_WINDOW_S",
    "Outcome",
    "ReadyWait",
    "wait_ready",
    "waited_for",
]

# kn's --wait-timeout default: ten minutes.
DEFAULT_TIMEOUT_S: Final = 600.0
# kn's wait window: a Ready False must outlast 2 s to be a failure (a restart may still succeed).
ERROR_WINDOW_S: Final = 2.0
SERVING_GROUP: Final = "serving.knative.dev"
# Names a person knows for a Service's sub-conditions (the kn output speaks of them so).
_LABELS: Final = {"ConfigurationsReady": "Configuration", "RoutesReady": "Route"}


class Outcome(enum.Enum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    TIMED_OUT = "timed out"
    DELETED = "deleted"


def waited_for(resource: Resource) -> bool:
    """Whether ``knpy apply`` waits for objects of this resource to be Ready.

    Serving's kinds (Service, Configuration, Route), as kn: ``kn service create`` waits, while
    ``kn broker create``, ``kn trigger create`` and the source commands return once the object
    is written (an eventing object's readiness also hangs on parts, such as a subscriber, that
    may come later). ConfigMaps and the other core kinds have no Ready condition at all."""
    return resource.group == SERVING_GROUP


@dataclass(slots=True)
class ReadyWait:
    """What one object's states, seen in order, say: still working, ready, or failed."""

    kind: str  # "service", "route": the word a person uses, for the messages
    name: str
    started: float
    error_window_s: float = ERROR_WINDOW_S
    outcome: Outcome = Outcome.PENDING
    url: str = ""
    failure: str = ""  # "Reason: message" of the Ready False that stood
    latest: Obj = field(default_factory=dict)  # the last state in sync with its spec
    failing_since: float | None = None
    _ready_message: str = ""
    _true: set[str] = field(default_factory=set)

    def observe(self, obj: Obj, now: float) -> list[str]:
        """One state of the object; the progress lines it gives."""
        if self.outcome is not Outcome.PENDING or not _in_sync(obj):
            return []
        self.latest = obj
        status = obj.get("status") or {}
        conditions = {str(c.get("type")): c for c in status.get("conditions") or []}
        texts: list[str] = []
        ready = conditions.get("Ready") or {}
        message = str(ready.get("message") or "")
        if message and message != self._ready_message:
            texts.append(message)
        self._ready_message = message
        for kind, cond in sorted(conditions.items()):
            if kind == "Ready":
                continue
            if cond.get("status") == "True" and kind not in self._true:
                self._true.add(kind)
                texts.append(f"{_LABELS.get(kind, kind)} OK")
            elif cond.get("status") != "True":
                self._true.discard(kind)
        if ready.get("status") == "True":
            self.outcome = Outcome.READY
            self.url = str(status.get("url") or (status.get("address") or {}).get("url") or "")
            texts.append("Ready")
        elif ready.get("status") == "False" and self.failing_since is None:
            # kn starts one timer at the first False and does not restart it.
            self.failing_since = now
            reason = str(ready.get("reason") or "NotReady")
            self.failure = f"{reason}: {message}" if message else reason
        self.check(now)
        return [f"{now - self.started:7.3f}s {t}" for t in texts]

    def check(self, now: float) -> None:
        """Decide a failure whose window has passed with no Ready True."""
        wake = self.wake_at()
        if wake is not None and now >= wake:
            self.outcome = Outcome.FAILED

    def wake_at(self) -> float | None:
        """When a pending failure stands unless a Ready True comes first (None: none pending)."""
        if self.outcome is not Outcome.PENDING or self.failing_since is None:
            return None
        return self.failing_since + self.error_window_s

    def time_out(self) -> None:
        if self.outcome is Outcome.PENDING:
            self.outcome = Outcome.TIMED_OUT

    def deleted(self) -> None:
        if self.outcome is Outcome.PENDING:
            self.outcome = Outcome.DELETED


def _in_sync(obj: Obj) -> bool:
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return observed is not None and observed == generation


# -- the loop ------------------------------------------------------------------------------------
def wait_ready(
    api: Api,
    resource: Resource,
    namespace: str | None,
    name: str,
    *,
    deadline: float,
    progress: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> ReadyWait:
    """Watch one object until ``ReadyWait`` decides or ``deadline`` (on ``clock``) passes.

    Each watch asks the server to end it at the next moment that matters (the deadline, or a
    pending failure's window), so a quiet object never blocks past it; a watch that ends early
    resumes from the last resourceVersion, one whose version was compacted (410) starts over.
    """
    wait = ReadyWait(resource.kind.lower(), name, started=clock())
    version = ""
    while True:
        now = clock()
        wait.check(now)
        if wait.outcome is not Outcome.PENDING:
            return wait
        if now >= deadline:
            wait.time_out()
            return wait
        until = min(deadline, wait.wake_at() or deadline)
        stream = api.watch(
            resource, namespace, name=name, resource_version=version,
            timeout_s=max(1, math.ceil(until - now)),
        )  # fmt: skip
        try:
            for kind, obj in stream:
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    wait.deleted()
                    return wait
                for line in wait.observe(obj, clock()):
                    progress(line)
                wake = wait.wake_at()
                if wait.outcome is not Outcome.PENDING or (wake is not None and wake < until):
                    break  # decided, or a failure's window ends before this watch would
        except WatchExpired:
            version = ""
        finally:
            stream.close()
