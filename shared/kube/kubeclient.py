"""``KubeClient`` over kubernetes-asyncio's ``ApiClient``, speaking raw JSON.

Only the ApiClient's configuration, auth (bearer token, refreshed in a pod) and aiohttp session
are used: every call goes through ``call_api(..., _preload_content=False)`` with a REST path
built from ``Resource.path``, and the body is parsed with ``json.loads``. No model is built
(kubernetes-asyncio's models are slow on big lists), no generated method picks a content type
(a dict body sent to ``patch_namespaced_custom_object`` goes out as a JSON patch and is
rejected: kubernetes_asyncio#68), and a non-2xx status is checked here, since
``_preload_content=False`` does not raise in kubernetes-asyncio ≤ 35.

Errors: a ``Status`` body maps through ``error_for``; a timeout becomes ``ApiError(504,
"Timeout")`` and a connection failure ``ApiError(503, "ServiceUnavailable")``, so callers see one
vocabulary whatever failed.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Sequence
from typing import Any, Final

import aiohttp
from kubernetes_asyncio.client import ApiClient

from shared.kube.client import PATCH_CONTENT_TYPES, ApiError, PatchType, error_for
from shared.kube.resources import Obj, Resource

__all__ = ["DEFAULT_TIMEOUT_S", "ApiKubeClient", "ApiTransport", "status_error"]

# client-go has no default per-request timeout; Knative's reconcilers run under a context with
# none either, but a hung write must not stall a reconcile key forever.
DEFAULT_TIMEOUT_S: Final = 30.0
_JSON: Final = "application/json"


def status_error(status: int, body: bytes) -> ApiError:
    """The ApiError for a failed response, from its ``Status`` body when there is one."""
    reason, message = "", ""
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        reason = str(doc.get("reason") or "")
        message = str(doc.get("message") or "")
        code = doc.get("code")
        if isinstance(code, int) and code >= 400:
            status = code
    elif body:
        message = body[:200].decode("utf-8", "replace")
    return error_for(status, reason, message)


class ApiTransport:
    """Authenticated HTTP on an ``ApiClient``: the one place that talks to the API server."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def __repr__(self) -> str:
        return f"ApiTransport({self.api.configuration.host!r})"

    async def open(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = _JSON,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request and return the unread response (the caller releases it)."""
        response: aiohttp.ClientResponse = await self.api.call_api(
            path,
            method,
            query_params=builtins.list(query),
            header_params={"Content-Type": content_type, "Accept": _JSON},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        return response

    async def call(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = _JSON,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Any:
        """One request, its JSON answer parsed.

        Raises:
            ApiError: from the Status body; 504 on a timeout, 503 when the server is unreachable.
        """
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    response, data = await self._exchange(method, path, query, body, content_type)
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                    # A pooled keep-alive connection the server closed (it restarted): a GET
                    # is safe to send again on a fresh one; a write may have been applied.
                    if method != "GET":
                        raise
                    response, data = await self._exchange(method, path, query, body, content_type)
        except TimeoutError:
            raise ApiError(504, "Timeout", f"{method} {path}: no answer in {timeout_s}s") from None
        except aiohttp.ClientError as e:
            raise ApiError(503, "ServiceUnavailable", f"{method} {path}: {e}") from e
        if not 200 <= response.status < 300:
            raise status_error(response.status, data)
        return json.loads(data) if data else None

    async def _exchange(
        self, method: str, path: str, query: Sequence[tuple[str, str]], body: Any, ctype: str
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        response = await self.open(method, path, query, body, ctype)
        try:
            return response, await response.read()
        finally:
            response.release()


class ApiKubeClient:
    """``KubeClient`` on a kubernetes-asyncio ``ApiClient`` (raw JSON, no models)."""

    def __init__(self, api: ApiClient, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._t = ApiTransport(api)
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"ApiKubeClient({self._t.api.configuration.host!r}, timeout_s={self._timeout_s})"

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        return await self._t.call(method, path, timeout_s=self._timeout_s, **kw)

    async def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        try:
            obj: Obj = await self._call("GET", resource.path(namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return obj

    async def list(
        self, resource: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> Obj:
        query = [("labelSelector", label_selector)] if label_selector else []
        out: Obj = await self._call("GET", resource.path(namespace), query=query)
        return out

    async def create(self, resource: Resource, namespace: str, body: Obj) -> Obj:
        out: Obj = await self._call("POST", resource.path(namespace), body=body)
        return out

    async def replace(self, resource: Resource, namespace: str, name: str, body: Obj) -> Obj:
        out: Obj = await self._call("PUT", resource.path(namespace, name), body=body)
        return out

    async def replace_status(self, resource: Resource, namespace: str, name: str, body: Obj) -> Obj:
        out: Obj = await self._call("PUT", resource.path(namespace, name, "status"), body=body)
        return out

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: Obj | builtins.list[Obj],
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> Obj:
        if (patch_type == "json") != isinstance(patch, list):
            raise ApiError(400, "BadRequest", f"a {patch_type} patch cannot be a {type(patch)}")
        out: Obj = await self._call(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type=PATCH_CONTENT_TYPES[patch_type],
        )
        return out

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        try:
            await self._call("DELETE", resource.path(namespace, name))
        except ApiError as e:
            if e.status != 404:
                raise
