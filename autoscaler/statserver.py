"""The stat server: activators push their Stats to the autoscaler over a WebSocket.

Knative's pkg/autoscaler/statserver/server.go, on the same port (8080) and with the same
behaviour, so a Go activator can report to this autoscaler:

- Any path upgrades to a WebSocket (Go's mux serves "/" and everything under it).
- A handshake with an ``Origin`` header (a browser page) is refused 403 (issue 10).
- A kubelet probe (``K-Kubelet-Probe`` header or a ``kube-probe/`` user agent) is answered
  200 without an upgrade: once the server listens it is healthy.
- Each binary frame is one ``WireStatMessages``; every message with a Stat is handed on as
  (revision key, Stat). Messages without a Stat are skipped "to allow for future protobuf
  schema changes"; a frame that does not parse, or a text frame, is logged and dropped, and
  the connection stays open.
- A request whose Host is a bucket's Service (``autoscaler-bucket-...``) is refused without an
  upgrade unless this replica leads that bucket (``owns_bucket``), as Knative's server does, so
  a Go replica forwarding by the bucket's name retries until it reaches the leader.
- A connection on ``FORWARD_PATH`` comes from another autoscaler replica forwarding Stats of a
  bucket this one leads (forwarder.py); its Stats go to ``on_forwarded``, which records them
  and never forwards again, so two replicas with briefly different views cannot bounce a Stat.
- On shutdown every client gets close code 1012 ("service restart"), which tells Knative's
  activator to reconnect at once (to the next autoscaler replica).

The server knows nothing of what a Stat means: ``on_stat`` decides (the service records it
and pokes the decider of a revision at zero).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

from aiohttp import WSCloseCode, WSMsgType, web

from shared.seams import RevisionKey
from shared.stat_proto import StatData, decode_wire_stats

__all__ = ["CLOSE_CODE_SERVICE_RESTART", "FORWARD_PATH", "OnStat", "StatServer"]

log = logging.getLogger(__name__)

# IANA's "Service Restart"; Knative's closeCodeServiceRestart.
CLOSE_CODE_SERVICE_RESTART = WSCloseCode.SERVICE_RESTART
# Frames larger than this are not stat batches: 4 MiB holds ~40,000 messages.
MAX_FRAME_BYTES = 4 * 1024 * 1024

OnStat = Callable[[RevisionKey, StatData], None]
BUCKET_PREFIX = "autoscaler-bucket"  # Knative's AutoscalerBucketNamePrefix
# Where replicas send each other forwarded Stats (any path is a WebSocket; this one is marked).
FORWARD_PATH = "/forwarded"


def is_kubelet_probe(request: web.BaseRequest) -> bool:
    """Knative's header.IsKubeletProbe."""
    agent = request.headers.get("User-Agent", "")
    return "K-Kubelet-Probe" in request.headers or agent.startswith("kube-probe/")


class StatServer:
    """Receives ``WireStatMessages`` from activators and passes each Stat to ``on_stat``."""

    def __init__(
        self,
        on_stat: OnStat,
        on_forwarded: OnStat | None = None,
        owns_bucket: Callable[[str], bool] | None = None,
    ) -> None:
        self._on_stat = on_stat
        self._on_forwarded = on_forwarded or on_stat
        self._owns_bucket = owns_bucket
        self._clients: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self.messages_received = 0
        self.frames_dropped = 0
        self.app = web.Application(client_max_size=MAX_FRAME_BYTES)
        self.app.router.add_route("GET", "/{tail:.*}", self.handle)
        self.app.on_shutdown.append(self._close_clients)

    def __repr__(self) -> str:
        return (
            f"<StatServer clients={len(self._clients)} messages={self.messages_received} "
            f"dropped_frames={self.frames_dropped}>"
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if is_kubelet_probe(request):
            return web.Response(status=200)
        host = request.host
        if host.startswith(BUCKET_PREFIX) and self._owns_bucket is not None:
            bucket = host.split(".", 1)[0].split(":", 1)[0]
            if not self._owns_bucket(bucket):
                log.warning("closing websocket: not the owner of bucket %s", bucket)
                return web.Response(status=200)  # Knative returns without an upgrade
        if "Origin" in request.headers:
            # Only browsers send Origin on a WebSocket handshake; activators (Go's gorilla
            # Dialer, aiohttp) and forwarding replicas never do. Gorilla's default upgrader
            # refuses a cross-origin one (403); any Origin is refused here, because a page on a
            # rebound name would pass a same-origin check and could feed made-up Stats.
            return web.Response(status=403, text="Forbidden: browser origin\n")
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, autoping=True)
        if not ws.can_prepare(request).ok:
            # Gorilla's upgrader answers a plain HTTP request with 400 Bad Request.
            return web.Response(status=400, text="Bad Request\n")
        await ws.prepare(request)
        self._clients.add(ws)
        on_stat = self._on_forwarded if request.path == FORWARD_PATH else self._on_stat
        try:
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    self._receive(msg.data, on_stat)
                elif msg.type is WSMsgType.ERROR:
                    log.warning("stat websocket error: %r", ws.exception())
                else:
                    self.frames_dropped += 1
                    log.error("dropping unknown message type %s", msg.type.name)
        finally:
            self._clients.discard(ws)
        return ws

    def _receive(self, data: bytes, on_stat: OnStat) -> None:
        try:
            stats = decode_wire_stats(data)
        except ValueError as err:
            self.frames_dropped += 1
            log.error("failed to unmarshal WireStatMessages: %s", err)
            return
        for namespace, name, stat in stats:
            self.messages_received += 1
            on_stat(RevisionKey(namespace, name), stat)

    async def _close_clients(self, _app: web.Application) -> None:
        for ws in list(self._clients):
            await ws.close(code=CLOSE_CODE_SERVICE_RESTART, message=b"Restarting")
