"""The knpy commands' way to the Kubernetes API: a kubeconfig, synchronous REST calls, apply.

``knpy apply/get/delete/logs`` are short-lived processes: the standard library's HTTP client
starts fast and needs no event loop, and they read a kubeconfig (``<state dir>/kubeconfig``, which
``knpy serve`` writes with its bearer token) exactly as ``kubectl --kubeconfig`` does. ``knpy
serve -f`` uses the same ``apply`` (from a worker thread) so both print the same lines.

Apply keeps "nothing of a bad file is applied": every document is first sent with
``dryRun=All`` (the server admits it through Knative's webhook but stores nothing), and only if
all of them pass is each created, or merge-patched when it exists. A patch whose dry run
returns the object as it is stored changes nothing and is reported ``unchanged``, as kubectl
reports it.

``Api.watch`` reads a watch stream line by line (``apply``'s wait for Ready, ``get -w``); the
server ends each watch after ``timeoutSeconds`` and the caller resumes from the last version.

A file may name one object twice, as steps (examples/traffic-split: v1, then v2 with a traffic
block that keeps 20 % on v1). Each step must be seen by Knative's controllers before the next
replaces it, or v1 would never be made: so after writing an object that a later document names
again, apply waits (up to STEP_WAIT_S) until its ``status.observedGeneration`` caught up, and for
a named revision template until ``status.latestCreatedRevisionName`` is that name.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from shared.documents import load_documents
from shared.kube import resources as kr
from shared.kube.resources import Obj, Resource

__all__ = [
    "Api",
    "ApiFailure",
    "Planned",
    "WatchExpired",
    "apply_text",
    "execute",
    "load_kubeconfig",
    "parse_documents",
    "plan_text",
]

TIMEOUT_S: Final = 30.0
# A watch is ended by the server after this long (kubectl's informers use minutes too) and
# resumed from its last resourceVersion; the socket allows WATCH_GRACE_S more before it gives up.
WATCH_TIMEOUT_S: Final = 300
WATCH_GRACE_S: Final = 15.0
STEP_WAIT_S: Final = 30.0
_STEP_POLL_S: Final = 0.05
DEFAULT_NAMESPACE: Final = "default"
# Every resource knpy's API serves, by (apiVersion, kind).
RESOURCES: Final[dict[tuple[str, str], Resource]] = kr.known_resources()
# Fields the server owns: two objects that differ only there are the same to a person.
_SERVER_FIELDS: Final = ("resourceVersion", "generation", "managedFields", "creationTimestamp")


class ApiFailure(Exception):
    """The API refused a request or could not be reached; the message is for a person."""


class WatchExpired(ApiFailure):
    """A watch's resourceVersion is older than the server keeps (410 Gone): start over."""


class _NotFound(Exception):
    """A GET's 404, which ``Api.call`` answers with None."""


@dataclass(frozen=True, slots=True)
class Api:
    """Where the API is and the token to show it."""

    server: str
    token: str = ""
    ca_pem: str = ""  # the server's CA (certificate-authority-data), for an https server

    def _context(self) -> ssl.SSLContext | None:
        if not self.server.startswith("https:"):
            return None
        return ssl.create_default_context(cadata=self.ca_pem or None)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
    ) -> Obj | None:
        """One request; the JSON answer, None for a 404 on GET, ApiFailure otherwise."""
        try:
            with self._open(method, path, body, query, TIMEOUT_S, content_type) as resp:
                answer: Obj = json.loads(resp.read() or b"{}")
                return answer
        except _NotFound:
            return None

    @contextlib.contextmanager
    def _open(
        self,
        method: str,
        path: str,
        body: Any,
        query: dict[str, str] | None,
        timeout_s: float,
        content_type: str = "application/json",
    ) -> Iterator[http.client.HTTPResponse]:
        """The open response of one request (its errors as ApiFailure, a GET's 404 as
        _NotFound); the body is the caller's to read, whole or line by line."""
        url = self.server.rstrip("/") + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        request.add_header("Accept", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            resp = urllib.request.urlopen(request, timeout=timeout_s, context=self._context())
        except urllib.error.HTTPError as err:
            if err.code == 404 and method == "GET":
                raise _NotFound from None
            raise ApiFailure(status_message(err.read()) or f"{err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError) as err:
            raise self._unreachable(err) from None
        with resp:
            try:
                yield resp
            except (OSError, http.client.HTTPException) as err:  # the connection broke mid-body
                raise self._unreachable(err) from None

    def _unreachable(self, err: Exception) -> ApiFailure:
        reason = getattr(err, "reason", err)
        return ApiFailure(
            f"cannot reach the Kubernetes API at {self.server} ({reason}); is `knpy serve` running?"
        )

    def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        name: str = "",
        resource_version: str = "",
        timeout_s: int = WATCH_TIMEOUT_S,
    ) -> Generator[tuple[str, Obj], None, None]:
        """The events of a watch, ``(type, object)``, until the server ends it (``timeout_s``).

        Without ``resource_version`` the server first sends every matching object as ADDED.
        Bookmarks are asked for, so a long quiet watch still learns a current version.

        Raises:
            WatchExpired: the version is too old (410); list or watch again from "".
            ApiFailure: the request was refused or the API could not be reached.
        """
        query = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_s)}
        if name:
            query["fieldSelector"] = f"metadata.name={name}"
        if resource_version:
            query["resourceVersion"] = resource_version
        ns = namespace if resource.namespaced else None
        # The socket waits longer than the server should take to end the watch.
        with self._open("GET", resource.path(ns), None, query, timeout_s + WATCH_GRACE_S) as resp:
            for line in resp:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = str(event.get("type", "")), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired(str(obj.get("message", "")))
                    raise ApiFailure(str(obj.get("message", "the watch failed")))
                yield kind, obj

    def get(self, resource: Resource, namespace: str | None, name: str) -> Obj | None:
        return self.call("GET", resource.path(namespace if resource.namespaced else None, name))

    def list(
        self, resource: Resource, namespace: str | None = None, selector: str = ""
    ) -> list[Obj]:
        query = {"labelSelector": selector} if selector else None
        answer = self.call("GET", resource.path(namespace), query=query) or {}
        items: list[Obj] = answer.get("items") or []
        return items


def status_message(body: bytes) -> str:
    """A Status object's message, with any cause it does not already say."""
    try:
        status = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()
    if not isinstance(status, dict):
        return ""
    message = str(status.get("message", ""))
    for cause in (status.get("details") or {}).get("causes") or []:
        text = str(cause.get("message", ""))
        where = str(cause.get("field", ""))
        if text and text not in message:
            message += f"\n{text}: {where}" if where else f"\n{text}"
    return message


def load_kubeconfig(path: Path) -> Api:
    """The server and token of a kubeconfig's current context (what ``knpy serve`` writes)."""
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ApiFailure(
            f"cannot read the kubeconfig {path} ({err.strerror}); is `knpy serve` running"
            " with that state dir? (--kubeconfig names another)"
        ) from None
    except yaml.YAMLError as err:
        raise ApiFailure(f"the kubeconfig {path} is not YAML: {err}") from None
    try:
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
        context = contexts[config["current-context"]]
        clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
        users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
        server = str(clusters[context["cluster"]]["server"])
        cluster = clusters[context["cluster"]]
        token = str(users.get(context.get("user", ""), {}).get("token", ""))
        ca = cluster.get("certificate-authority-data")
        ca_pem = base64.b64decode(ca).decode() if ca else ""
        if not ca_pem and cluster.get("certificate-authority"):
            ca_pem = Path(cluster["certificate-authority"]).read_text()
    except (KeyError, TypeError, AttributeError, ValueError, OSError) as err:
        raise ApiFailure(f"the kubeconfig {path} has no usable current context ({err})") from None
    return Api(server, token, ca_pem)


# -- documents -----------------------------------------------------------------------------------
def parse_documents(text: str) -> list[Obj]:
    """Every object of a multi-document YAML or JSON text, in order (shared/documents.py)."""
    try:
        loaded = load_documents(text)
    except yaml.YAMLError as err:
        raise ApiFailure(f"not YAML or JSON: {err}") from None
    for doc in loaded:
        if not isinstance(doc, dict):
            raise ApiFailure(f"not a Kubernetes object: {doc!r}")
    return loaded


def describe(resource: Resource, name: str) -> str:
    """kubectl's name of an object: ``service.serving.knative.dev/hello``, ``configmap/x``."""
    kind = resource.kind.lower()
    return f"{kind}.{resource.group}/{name}" if resource.group else f"{kind}/{name}"


@dataclass(slots=True)
class Planned:
    resource: Resource
    namespace: str | None
    name: str
    body: Obj
    current: Obj | None
    dry: Obj | None


def apply_text(api: Api, text: str, *, namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    """Apply every document of ``text``, all or nothing; kubectl's line for each.

    Raises:
        ApiFailure: the text, or any document, is refused (every refusal, one per line);
            then nothing was written.
    """
    return execute(api, plan_text(api, text, namespace=namespace))


def plan_text(api: Api, text: str, *, namespace: str = DEFAULT_NAMESPACE) -> list[Planned]:
    """The dry run of every document of ``text``; raises ApiFailure with every refusal."""
    planned: list[Planned] = []
    problems: list[str] = []
    for i, doc in enumerate(parse_documents(text)):
        try:
            planned.append(_dry_run(api, doc, namespace))
        except ApiFailure as err:
            problems.append(f"document {i + 1}: {err}")
    if problems:
        raise ApiFailure("\n".join(problems))
    return planned


def execute(api: Api, planned: Sequence[Planned]) -> list[str]:
    """Write what ``plan_text`` checked, in order; kubectl's line for each."""
    lines = []
    for i, p in enumerate(planned):
        lines.append(_apply(api, p))
        later = {(q.resource, q.namespace, q.name) for q in planned[i + 1 :]}
        if (p.resource, p.namespace, p.name) in later:
            _wait_observed(api, p)
    return lines


def _wait_observed(api: Api, p: Planned) -> None:
    """Until the controllers have acted on this step (see the module doc)."""
    template = ((p.body.get("spec") or {}).get("template") or {}).get("metadata") or {}
    revision = template.get("name")
    deadline = time.monotonic() + STEP_WAIT_S
    while time.monotonic() < deadline:
        obj = api.get(p.resource, p.namespace, p.name) or {}
        status = obj.get("status") or {}
        generation = (obj.get("metadata") or {}).get("generation", 0)
        observed = status.get("observedGeneration", 0) >= generation
        if observed and (not revision or status.get("latestCreatedRevisionName") == revision):
            return
        time.sleep(_STEP_POLL_S)


def _dry_run(api: Api, doc: Obj, default_ns: str) -> Planned:
    resource = RESOURCES.get((str(doc.get("apiVersion")), str(doc.get("kind"))))
    if resource is None:
        known = ", ".join(sorted(f"{a} {k}" for a, k in RESOURCES))
        raise ApiFailure(
            f"apiVersion {doc.get('apiVersion')!r} kind {doc.get('kind')!r} is not served"
            f" (knpy serves {known})"
        )
    meta = doc.setdefault("metadata", {})
    if not isinstance(meta, dict) or not meta.get("name"):
        raise ApiFailure(f"{resource.kind}: metadata.name is required")
    name = str(meta["name"])
    ns: str | None = None
    if resource.namespaced:
        ns = str(meta.get("namespace") or default_ns)
        meta["namespace"] = ns
    current = api.get(resource, ns, name)
    dry_run = {"dryRun": "All"}
    if current is None:
        dry = api.call("POST", resource.path(ns), doc, query=dry_run)
    else:
        dry = api.call(
            "PATCH",
            resource.path(ns, name),
            doc,
            content_type="application/merge-patch+json",
            query=dry_run,
        )
    return Planned(resource, ns, name, doc, current, dry)


def _apply(api: Api, p: Planned) -> str:
    if p.current is None and api.get(p.resource, p.namespace, p.name) is not None:
        p.current, p.dry = {}, None  # made by an earlier document of this file: a patch
    if p.current is None:
        api.call("POST", p.resource.path(p.namespace), p.body)
        return f"{describe(p.resource, p.name)} created"
    if _comparable(p.dry) == _comparable(p.current):
        return f"{describe(p.resource, p.name)} unchanged"
    api.call(
        "PATCH",
        p.resource.path(p.namespace, p.name),
        p.body,
        content_type="application/merge-patch+json",
    )
    return f"{describe(p.resource, p.name)} configured"


def _comparable(obj: Obj | None) -> Obj:
    if obj is None:
        return {}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}
