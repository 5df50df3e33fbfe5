"""The PingSource adapter of ``knpy serve``: one asyncio task per PingSource, in-process.

Knative runs one shared ``pingsource-mt-adapter`` Deployment that holds every PingSource's cron
entry (pkg/adapter/mtping). ``knpy serve`` has one machine and its controllers already hold the
informers, so the adapter is a task per source inside the controllers' loop: no process to
start, no extra API watch. On each tick of the schedule (controlplane/cron.py) it sends one
CloudEvent in binary mode to the resolved sink:

- ``specversion`` 1.0, a fresh ``id``, ``type`` ``dev.knative.sources.ping``, ``source``
  ``/apis/v1/namespaces/<ns>/pingsources/<name>``, ``time`` the tick's time (RFC 3339, UTC);
- ``datacontenttype`` the source's ``contentType`` when set; the body ``data`` (or the bytes of
  ``dataBase64``);
- the ``ceOverrides`` extensions as ``ce-<name>`` headers.

A send that fails (no answer, or not a 2xx) is logged and not retried, as mtping sends once;
the next tick sends the next event. A changed source replaces its task; the clock and the sleep
are injected, so tests drive the schedule with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from .controllers.meta import Key
from .controllers.sources import PING_EVENT_TYPE, PingJob
from .cron import CronError, parse_schedule

__all__ = ["PingAdapter", "Send", "ping_headers"]

_log = logging.getLogger(__name__)

# send(url, headers, body) -> the HTTP status (None: no answer)
Send = Callable[[str, Mapping[str, str], bytes], Awaitable[int | None]]
_SEND_TIMEOUT_S = 10.0


def ping_headers(job: PingJob, at: float, event_id: str) -> dict[str, str]:
    """The binary-mode headers of one tick's event."""
    stamp = dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": PING_EVENT_TYPE,
        "ce-source": job.source,
        "ce-time": stamp.replace("+00:00", "Z"),
    }
    if job.content_type:
        headers["Content-Type"] = job.content_type
    for name, value in job.extensions:
        headers[f"ce-{name}"] = value
    return headers


class PingAdapter:
    """Runs each PingSource's schedule; ``set`` replaces a source's job, ``close`` ends all."""

    def __init__(
        self,
        send: Send | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._send = send
        self._clock = clock
        self._sleep = sleep
        self._jobs: dict[Key, tuple[PingJob, asyncio.Task[None]]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0  # events answered with a 2xx, for tests and logs

    def __repr__(self) -> str:
        return f"<PingAdapter {len(self._jobs)} sources, {self.sent} sent>"

    def set(self, key: Key, job: PingJob | None) -> None:
        current = self._jobs.get(key)
        if current is not None and current[0] == job:
            return
        if current is not None:
            current[1].cancel()
            del self._jobs[key]
        if job is not None:
            task = asyncio.get_running_loop().create_task(self._run(key, job))
            self._jobs[key] = (job, task)

    def jobs(self) -> dict[Key, PingJob]:
        return {k: j for k, (j, _) in self._jobs.items()}

    async def close(self) -> None:
        tasks = [t for _, t in self._jobs.values()]
        self._jobs.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self, key: Key, job: PingJob) -> None:
        try:
            schedule = parse_schedule(job.schedule, job.timezone)
        except CronError as e:  # the webhook refuses these; an old object may have one
            _log.error("pingsource %s/%s: %s", *key, e)
            return
        while True:
            now = self._clock()
            at = schedule.next_after(now)
            if at is None:
                _log.warning("pingsource %s/%s: the schedule never fires again", *key)
                return
            await self._sleep(max(0.0, at - now))
            await self._tick(key, job, at)

    async def _tick(self, key: Key, job: PingJob, at: float) -> None:
        headers = ping_headers(job, at, str(uuid.uuid4()))
        try:
            status = await (self._send or self._post)(job.sink, headers, job.data)
        except Exception as e:  # one failed send must not end the schedule
            _log.warning("pingsource %s/%s: sending to %s failed: %s", *key, job.sink, e)
            return
        if status is not None and 200 <= status < 300:
            self.sent += 1
        else:
            _log.warning("pingsource %s/%s: %s answered %s", *key, job.sink, status)

    async def _post(self, url: str, headers: Mapping[str, str], body: bytes) -> int | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=_SEND_TIMEOUT_S)
            )
        # *.localhost is 127.0.0.1 (RFC 6761), whatever the system resolver says: a sink is
        # often a Knative Service's URL here, with the Host the ingress routes by.
        parts = urlsplit(url)
        host = parts.hostname or ""
        sent = dict(headers)
        if host == "localhost" or host.endswith(".localhost"):
            sent["Host"] = parts.netloc
            netloc = f"127.0.0.1:{parts.port}" if parts.port else "127.0.0.1"
            url = urlunsplit(parts._replace(netloc=netloc))
        try:
            async with self._session.post(url, data=body, headers=sent) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return None
