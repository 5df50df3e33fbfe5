"""The broker's storage seam: what the ingress and the dispatcher need of a backend.

The seam (``EventLog`` and ``Subscription``) is what the ingress and the dispatcher use, and
all a backend provides:

- ``append(broker, records)`` stores events durably and resolves only then: the ingress
  answers 202 after it, never before. A batch is stored whole or not at all.
- ``subscribe(trigger, broker)`` is one trigger's queue: it resumes where the trigger left off
  (a trigger the log has not seen starts at the log's end: Knative's triggers see only events
  that arrive after them), hands out records in order with ``next_batch`` and takes ``ack``
  once a record is finished with (delivered, dead-lettered or dropped). A record not acked
  before a crash is handed out again: delivery is at least once.
- ``forget(trigger)`` drops a deleted trigger's queue.
- ``depths()`` says how much each subscribed trigger has left to do (the metrics' queue depth).

A RabbitMQ backend maps them onto an exchange per broker (``append`` publishes with
confirms), a queue per trigger bound to it (``subscribe`` consumes it, ``ack`` is basic.ack).

The process wiring is ``eventing.broker.app.BrokerApp``: ``Ingress(log, ...)`` and
``Dispatcher(log, ingest)``, where ``ingest`` stores replies (``Ingress.ingest`` in one process;
a separate dispatcher process passes its own publisher). The default backend is
``eventing.broker.store.SqliteEventLog``. A backend's errors reach the
ingress as ``StoreError`` (it answers 500, the producer retries) and the dispatcher (a reply
that cannot be stored fails its delivery, which is retried).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.cloudevent import Event

__all__ = ["EventLog", "Headers", "Record", "StoreError", "Subscription"]

Headers = list[tuple[bytes, bytes]]


class StoreError(Exception):
    """The log could not store or read; the ingress answers 500 and the producer retries."""


@dataclass(slots=True)
class Record:
    """One stored event: its place in the log, the event, and the allow-listed HTTP headers
    that came with it (they go on to the subscriber)."""

    seq: int
    event: Event
    headers: Headers


class Subscription(Protocol):
    """One trigger's queue (see the module doc)."""

    async def next_batch(self, limit: int) -> list[Record]:
        """At least one record, at most ``limit``: waits until there is one."""
        ...

    def ack(self, seq: int) -> None:
        """The record is finished with; it will not be handed out again."""
        ...


class EventLog(Protocol):
    """A broker backend's storage (see the module doc)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def append(self, broker: str, records: Sequence[tuple[Event, Headers]]) -> Awaitable[None]:
        """Store ``records`` for ``broker`` (``namespace/name``); resolves once durable.

        Raises (when awaited):
            StoreError: nothing was stored.
        """
        ...

    def subscribe(self, trigger: str, broker: str) -> Subscription:
        """``trigger`` (its uid) reads ``broker``'s records from where it left off."""
        ...

    def forget(self, trigger: str) -> None:
        """The trigger is gone: drop its queue (its subscription must no longer be used)."""
        ...

    def triggers(self) -> set[str]:
        """Every trigger the log keeps a queue for (to forget those deleted meanwhile)."""
        ...

    async def depths(self) -> dict[str, int]:
        """The queue depth of every trigger subscribed here (uid -> events stored and not
        finished with), for the metrics; read at scrape, never on the hot path."""
        ...
