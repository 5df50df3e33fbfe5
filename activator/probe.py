"""Probing a pod's queue-proxy, as Knative's revisionWatcher does before sending it requests.

The probe is ``GET /healthz`` with ``K-Network-Probe: queue`` and the activator's user agent; the
queue-proxy answers it itself, 200 with body ``queue`` once its app is ready (Knative's
pkg/activator/net/revision_backends.go probe: status 200 and body == queue.Name). It is one
raw request on a fresh connection: a probe happens a few times per new pod, and an HTTP client
library would cost the activator its memory and start-up time for that.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["probe_queue"]

# Knative's netheader.ActivatorUserAgent.
ACTIVATOR_USER_AGENT = b"Knative-Activator-Probe"
_OK_PREFIXES = (b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")
_EXPECTED_BODY = b"queue"
# A probe answer is a status line, a few headers and "queue": far below this.
_MAX_ANSWER_BYTES = 16 * 1024


async def probe_queue(host: str, port: int, timeout_s: float) -> bool:
    """Whether the queue-proxy at host:port says its pod can take requests now.

    Never raises for network trouble: refused, reset, slow (past ``timeout_s``) or an
    unexpected answer are all "not yet".
    """
    request = (
        b"GET /healthz HTTP/1.1\r\nHost: %b:%d\r\nK-Network-Probe: queue\r\nUser-Agent: %b\r\n"
        b"Connection: close\r\n\r\n" % (host.encode(), port, ACTIVATOR_USER_AGENT)
    )
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            data = await reader.read(_MAX_ANSWER_BYTES)
            while data and len(data) < _MAX_ANSWER_BYTES:
                more = await reader.read(_MAX_ANSWER_BYTES - len(data))
                if not more:
                    break
                data += more
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.startswith(_OK_PREFIXES) and body == _EXPECTED_BODY
