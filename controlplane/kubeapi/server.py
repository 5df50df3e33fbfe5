"""``KubeApiServer``: a generic Kubernetes API server on loopback, inside ``knpy serve``.

The aiohttp shell over ``Rest`` (rest.py: the verbs), ``Store`` (store.py: objects,
revisions, history), ``WatchHub`` (watch.py: fan-out) and ``WatchStreams`` (stream.py: watch
responses). One catch-all route parses Kubernetes' REST paths
(``/api/v1/namespaces/<ns>/<plural>/<name>/<subresource>``, ``/apis/<g>/<v>/...`` and the
legacy ``/watch/`` prefix), checks access, decodes the body, calls one verb and encodes the
answer. It knows no Knative semantics: Knative's webhook plugs in as ``admission`` hooks.

Two listeners serve the same routes: plain HTTP on ``url`` (``port``), for in-process clients
and knpy's children, and HTTPS on ``tls_url``, which the kubeconfig names, because kubectl
sends a token only over TLS (tls.py).

Access, because a browser on the same machine can reach loopback (issue 10): every request but
the health probes needs ``Authorization: Bearer <token>`` (401); a ``Host`` that is not a
loopback name is refused (403) against DNS rebinding; bodies are accepted only as JSON, YAML or
the patch media types (415), so a cross-site ``text/plain`` form post never acts; bodies over
3 MiB are 413, and bodies over 256 KiB are parsed on one of two bulk threads of low priority, so
that watches keep flowing and, when CPUs are short, requests everywhere go first. ``knpy
serve`` runs this server in a process of its own (controlplane/control.py), away from the
ingress.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import ipaddress
import json
import logging
import os
import secrets
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from aiohttp import web

from controlplane.kubeapi import discovery, openapi, protobuf, tls
from controlplane.kubeapi.admission import AdmissionHook, ObjectReader
from controlplane.kubeapi.errors import StatusError
from controlplane.kubeapi.registry import Kind, Registry
from controlplane.kubeapi.rest import PatchKind, Propagation, Rest
from controlplane.kubeapi.selectors import FieldSelectorError, parse_field_selector
from controlplane.kubeapi.store import DEFAULT_HISTORY_EVENTS, Store
from controlplane.kubeapi.stream import WatchStreams, dumps, flag
from controlplane.kubeapi.tables import table, wants_table
from controlplane.kubeapi.watch import WatchHub
from shared.documents import JsonYamlLoader
from shared.kube.labels import SelectorError, parse_selector
from shared.kube.resources import Obj, Resource

__all__ = ["KubeApiServer"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_BODY_BYTES = 3 * 1024 * 1024  # kube-apiserver's limit is 3 MiB too
THREAD_PARSE_BYTES = 256 * 1024  # above this, parse off the event loop
# Bulk work (big bodies parsed, long lists encoded) at once: a body takes up to 3 MiB and
# seconds of CPU (PyYAML's pure-Python loader: ~2 s a megabyte); the rest wait for a turn
# rather than pile up threads and memory.
BULK_WORKERS = 2
# The bulk threads' nice value: when the CPUs are contended they yield to everything on a
# request path (the ingress, the activator, the pods, this server's own event loop). Linux
# keeps a nice value per thread.
BULK_NICE = 10
# Lists this long are encoded in a worker thread (stored objects are never mutated in place).
_THREAD_ENCODE_ITEMS = 500

_JSON = "application/json"
_YAML = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})
# What create and update accept: JSON, YAML, and protobuf for the kinds kubectl's typed
# commands send that way (controlplane/kubeapi/protobuf.py).
_OBJECT_TYPES = frozenset({_JSON, *_YAML, protobuf.PROTOBUF})
_PATCH_TYPES: dict[str, PatchKind] = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
}
_OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
PathHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _parse(raw: bytes, media: str) -> Any:
    """Decode a body; StatusError 400 names the problem."""
    if media == protobuf.PROTOBUF:
        try:
            return protobuf.decode(raw)
        except protobuf.UnsupportedKind as e:
            raise StatusError(415, str(e), "UnsupportedMediaType") from None
        except (protobuf.ProtobufError, UnicodeDecodeError) as e:
            raise StatusError.bad_request(f"the protobuf body is malformed: {e}") from None
    try:
        if media in _YAML:
            docs = [d for d in yaml.load_all(raw.decode(), Loader=JsonYamlLoader) if d is not None]
            if len(docs) != 1:
                raise StatusError.bad_request(
                    f"the body must hold exactly one YAML document, found {len(docs)}"
                )
            return docs[0]
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise StatusError.bad_request(
            f"the object provided is unrecognized: couldn't decode the body as "
            f"{'YAML' if media in _YAML else 'JSON'}: {e}"
        ) from None


@functools.lru_cache(maxsize=64)
def _is_loopback_host(host: str) -> bool:
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip().lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class KubeApiServer:
    """The API server: ``start()`` loads the state, binds and writes the kubeconfig."""

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        admission: Mapping[Resource, AdmissionHook] | None = None,
        bookmark_interval_s: float = 60.0,
        history_events: int = DEFAULT_HISTORY_EVENTS,
        tls_port: int = 0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self._host = host
        self._port = port
        self._tls_port = tls_port
        self._bookmark_interval_s = bookmark_interval_s
        self.registry = Registry()
        self.store = Store(None, history_events)  # replaced by the persistent one in start()
        self._history_events = history_events
        self._admission = admission
        self.rest = Rest(self.store, self.registry, admission)
        self.hub = WatchHub()
        self._streams = WatchStreams(self.store, self.rest, self.hub, bookmark_interval_s)
        self.token = secrets.token_urlsafe(32)
        self.kubeconfig_path = self.state_dir / "kubeconfig"
        self.url = ""
        # The HTTPS listener kubectl uses (clientcmd sends tokens only over TLS); the
        # kubeconfig points here. "" when no certificate could be made (no openssl).
        self.tls_url = ""
        self._tls: tls.TlsFiles | None = None
        self._runner: web.AppRunner | None = None
        self._bulk: ThreadPoolExecutor | None = None
        # Non-resource paths others serve here, behind the same token (as kube-apiserver
        # serves /metrics): exact path -> handler. controlplane/discovery.py adds two.
        self._paths: dict[str, PathHandler] = {}

    def add_path(self, path: str, handler: PathHandler) -> None:
        """Serve ``path`` (an exact path outside /api and /apis) with ``handler``."""
        self._paths[path] = handler

    @property
    def reader(self) -> ObjectReader:
        return self.rest.reader

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.state_dir / "kube.sqlite3", self._history_events)
        self.rest = Rest(self.store, self.registry, self._admission)
        self.rest.ensure_namespaces()
        self.store.listeners.append(self.hub.publish)
        self._streams = WatchStreams(self.store, self.rest, self.hub, self._bookmark_interval_s)
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._port = _bound_port(site)
        self.url = f"http://{_url_host(self._host)}:{self._port}"
        self._tls = await asyncio.to_thread(tls.ensure_certificate, self.state_dir)
        if self._tls is not None:
            tls_site = web.TCPSite(
                self._runner, self._host, self._tls_port, ssl_context=tls.server_context(self._tls)
            )
            await tls_site.start()
            self.tls_url = f"https://{_url_host(self._host)}:{_bound_port(tls_site)}"
        else:
            log.warning(
                "no openssl: the kubeconfig points at plain HTTP, where kubectl sends no token"
            )
        self._write_kubeconfig()
        log.info("kube API server listening on %s", self.url)

    async def stop(self) -> None:
        self._streams.stopping = True
        self.hub.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._bulk is not None:
            self._bulk.shutdown(wait=False, cancel_futures=True)
            self._bulk = None
        self.store.close()

    async def _in_bulk(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on a low-priority bulk thread (BULK_WORKERS at once)."""
        if self._bulk is None:
            self._bulk = ThreadPoolExecutor(
                BULK_WORKERS, thread_name_prefix="kubeapi-bulk", initializer=_lower_priority
            )
        return await asyncio.get_running_loop().run_in_executor(self._bulk, fn, *args)

    def _write_kubeconfig(self) -> None:
        cluster: dict[str, str] = {"server": self.url}
        if self._tls is not None:
            cluster = {
                "server": self.tls_url,
                "certificate-authority-data": base64.b64encode(
                    self._tls.cert.read_bytes()
                ).decode(),
            }
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "knpy", "cluster": cluster}],
            "users": [{"name": "knpy", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "knpy",
                    "context": {"cluster": "knpy", "user": "knpy", "namespace": "default"},
                }
            ],
            "current-context": "knpy",
            "preferences": {},
        }
        tmp = self.kubeconfig_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.kubeconfig_path)

    # -- HTTP ---------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_access(request)
            return await self._dispatch(request)
        except StatusError as e:
            return web.Response(body=dumps(e.body), status=e.code, content_type=_JSON)
        except web.HTTPException:
            raise
        except Exception as e:  # a bug here or in an admission hook: a Status, not a hang-up
            log.exception("kube API request %s %s failed", request.method, request.path)
            err = StatusError(
                500, f"Internal error occurred: {type(e).__name__}: {e}", "InternalError"
            )
            return web.Response(body=dumps(err.body), status=500, content_type=_JSON)

    def _check_access(self, request: web.Request) -> None:
        host = request.headers.get("Host")
        if host is not None and not _is_loopback_host(host):
            raise StatusError(403, f"forbidden: host {host!r} is not a loopback name", "Forbidden")
        if request.path in _OPEN_PATHS:
            return
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.token.encode()
        ):
            raise StatusError(401, "Unauthorized", "Unauthorized")

    def _json(self, obj: Any, status: int = 200) -> web.Response:
        return web.Response(body=dumps(obj), status=status, content_type=_JSON)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        extra = self._paths.get(request.path)
        if extra is not None:
            return await extra(request)
        segs = [s for s in request.path.split("/") if s]
        if not segs:
            return self._json(
                {
                    "paths": sorted(
                        [
                            "/api",
                            "/api/v1",
                            "/apis",
                            "/healthz",
                            "/livez",
                            "/openapi/v2",
                            "/openapi/v3",
                            "/readyz",
                            "/version",
                            *self._paths,
                        ]
                    )
                }
            )
        head = segs[0]
        if head in ("healthz", "livez", "readyz") and len(segs) == 1:
            return web.Response(text="ok")
        if head == "version" and len(segs) == 1:
            return self._json(discovery.version())
        if head == "openapi":
            return self._openapi(request, segs[1:])
        if head == "api":
            if len(segs) == 1:
                return self._json(discovery.api_versions(f"{self._host}:{self._port}"))
            return await self._group_version(request, "", segs[1], segs[2:])
        if head == "apis":
            if len(segs) == 1:
                return self._json(discovery.api_groups(self.registry))
            if len(segs) == 2:
                doc = discovery.group(self.registry, segs[1])
                if doc is None:
                    raise StatusError(
                        404, "the server could not find the requested resource", "NotFound"
                    )
                return self._json(doc)
            return await self._group_version(request, segs[1], segs[2], segs[3:])
        raise StatusError(404, "the server could not find the requested resource", "NotFound")

    def _openapi(self, request: web.Request, segs: list[str]) -> web.Response:
        doc = openapi.document(self.registry, segs, request.headers.get("Accept", ""))
        if doc is None:
            raise StatusError(404, "the server could not find the requested resource", "NotFound")
        body, ctype = doc
        return web.Response(body=body, content_type=ctype)

    async def _group_version(
        self, request: web.Request, group: str, version: str, rest: list[str]
    ) -> web.StreamResponse:
        if not rest:
            doc = discovery.resource_list(self.registry, group, version)
            if doc is None:
                raise StatusError(
                    404, "the server could not find the requested resource", "NotFound"
                )
            return self._json(doc)
        watch_path = False
        if rest[0] == "watch":
            watch_path, rest = True, rest[1:]
        namespace: str | None = None
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and (k := self.registry.lookup(group, version, rest[2])) is not None
            and k.resource.namespaced
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise StatusError(404, "the server could not find the requested resource", "NotFound")
        kind = self.registry.lookup(group, version, rest[0])
        if kind is None:
            raise StatusError(404, "the server could not find the requested resource", "NotFound")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and not (
            (sub == "status" and kind.status) or (sub == "scale" and kind.scale)
        ):
            raise StatusError(404, "the server could not find the requested resource", "NotFound")
        if kind.resource.namespaced and namespace is None and name is not None:
            raise StatusError(404, "the server could not find the requested resource", "NotFound")
        return await self._resource(request, kind, namespace, name, sub, watch_path)

    async def _resource(
        self,
        request: web.Request,
        kind: Kind,
        namespace: str | None,
        name: str | None,
        sub: str | None,
        watch_path: bool,
    ) -> web.StreamResponse:
        q = request.query
        method = request.method
        dry_run = q.get("dryRun") == "All"
        rest = self.rest
        if name is None:
            if method == "GET":
                if watch_path or flag(q.get("watch")):
                    return await self._watch(request, kind, namespace)
                return await self._list(request, kind, namespace)
            if method == "POST":
                body = await self._body(request, _OBJECT_TYPES)
                return self._json(rest.create(kind, namespace, body, dry_run), 201)
            if method == "DELETE":
                return await self._delete_collection(request, kind, namespace)
            raise _method_not_allowed(method)
        if watch_path:
            return await self._watch(request, kind, namespace, name)
        if method == "GET":
            if sub == "scale":
                return self._json(rest.get_scale(kind, namespace, name))
            obj = rest.get(kind, namespace, name)
            if wants_table(request.headers.get("Accept", "")):
                return self._json(
                    table(
                        kind,
                        [obj],
                        obj["metadata"]["resourceVersion"],
                        q.get("includeObject", "Metadata"),
                    )
                )
            return self._json(obj)
        if method == "PUT":
            body = await self._body(request, _OBJECT_TYPES)
            return self._json(rest.update(kind, namespace, name, body, sub, dry_run))
        if method == "PATCH":
            media = request.content_type.lower()
            if media == "application/apply-patch+yaml":
                raise StatusError(
                    415,
                    "server-side apply is not supported by knpy; use client-side kubectl apply",
                    "UnsupportedMediaType",
                )
            patch_type = _PATCH_TYPES.get(media)
            body = await self._body(request, set(_PATCH_TYPES))
            assert patch_type is not None
            return self._json(rest.patch(kind, namespace, name, patch_type, body, sub, dry_run))
        if method == "DELETE" and sub is None:
            opts = await self._delete_options(request)
            propagation = cast(
                Propagation,
                opts.get("propagationPolicy") or q.get("propagationPolicy") or "Background",
            )
            if propagation not in ("Background", "Foreground", "Orphan"):
                raise StatusError.bad_request(f"unknown propagationPolicy {propagation!r}")
            if opts.get("orphanDependents") is True:
                propagation = "Orphan"
            dry = dry_run or opts.get("dryRun") == ["All"]
            return self._json(
                rest.delete(kind, namespace, name, propagation, opts.get("preconditions"), dry)
            )
        raise _method_not_allowed(method)

    async def _body(self, request: web.Request, allowed: set[str] | frozenset[str]) -> Any:
        # No Content-Type at all is JSON, as kube-apiserver reads it (kubectl 1.20 sends its
        # typed creates so). A browser cannot send a body without one to another origin
        # together with the bearer token, so this opens nothing.
        media = request.content_type.lower() if "Content-Type" in request.headers else _JSON
        if media not in allowed:
            raise StatusError(
                415,
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(sorted(allowed))}",
                "UnsupportedMediaType",
            )
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise _too_large()
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large() from None
        if len(raw) > THREAD_PARSE_BYTES:
            return await self._in_bulk(_parse, raw, media)
        return _parse(raw, media)

    async def _delete_options(self, request: web.Request) -> Obj:
        if not request.can_read_body:
            return {}
        body = await self._body(request, {_JSON, *_YAML})
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise StatusError.bad_request("DeleteOptions must be an object")
        return body

    # -- list and watch -----------------------------------------------------------------------
    def _selectors(self, request: web.Request) -> tuple[Any, Any]:
        q = request.query
        try:
            labels = parse_selector(q.get("labelSelector"))
        except SelectorError as e:
            raise StatusError.bad_request(f"unable to parse requirement: {e}") from None
        try:
            fields = parse_field_selector(q.get("fieldSelector"))
        except FieldSelectorError as e:
            raise StatusError.bad_request(str(e)) from None
        return labels, fields

    async def _list(self, request: web.Request, kind: Kind, namespace: str | None) -> web.Response:
        labels, fields = self._selectors(request)
        result = self.rest.list(kind, namespace, labels, fields)
        if wants_table(request.headers.get("Accept", "")):
            result = table(
                kind,
                result["items"],
                result["metadata"]["resourceVersion"],
                request.query.get("includeObject", "Metadata"),
            )
            n = len(result["rows"])
        else:
            n = len(result["items"])
        if n > _THREAD_ENCODE_ITEMS:
            body = await self._in_bulk(dumps, result)
        else:
            body = dumps(result)
        return web.Response(body=body, content_type=_JSON)

    async def _delete_collection(
        self, request: web.Request, kind: Kind, namespace: str | None
    ) -> web.Response:
        labels, fields = self._selectors(request)
        opts = await self._delete_options(request)
        propagation = cast(Propagation, opts.get("propagationPolicy") or "Background")
        items = self.rest.list(kind, namespace, labels, fields)["items"]
        deleted = []
        for o in items:
            m = o["metadata"]
            with contextlib.suppress(StatusError):
                deleted.append(self.rest.delete(kind, m.get("namespace"), m["name"], propagation))
        return self._json(
            {
                "kind": f"{kind.resource.kind}List",
                "apiVersion": kind.resource.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": deleted,
            }
        )

    async def _watch(
        self,
        request: web.Request,
        kind: Kind,
        namespace: str | None,
        name: str | None = None,
    ) -> web.StreamResponse:
        labels, fields = self._selectors(request)
        return await self._streams.serve(request, kind, namespace, labels, fields, name)


def _lower_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: as it is
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICE)


def _bound_port(site: web.TCPSite) -> int:
    server = cast(Any, site)._server
    return int(server.sockets[0].getsockname()[1])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _method_not_allowed(method: str) -> StatusError:
    return StatusError(
        405,
        f"the server does not allow this method on the requested resource ({method})",
        "MethodNotAllowed",
    )


def _too_large() -> StatusError:
    return StatusError(
        413, f"the request body is larger than {MAX_BODY_BYTES} bytes", "RequestEntityTooLarge"
    )
