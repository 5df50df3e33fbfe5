"""The knpy commands' API client: documents, kubeconfigs, Status messages, kubectl's names."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.apiclient import (
    Api,
    ApiFailure,
    WatchExpired,
    describe,
    load_kubeconfig,
    parse_documents,
    status_message,
)
from shared.kube.resources import CONFIGMAPS, KSERVICES
from shared.ports import free_port


@pytest.mark.parametrize(
    ("text", "names"),
    [
        pytest.param("kind: A\nmetadata: {name: a}\n---\nkind: B\nmetadata: {name: b}\n",
                     ["a", "b"], id="multi-document"),
        pytest.param('{"kind": "List", "items": [{"metadata": {"name": "a"}}]}', ["a"],
                     id="kind-List"),
        pytest.param('[{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]', ["a", "b"],
                     id="json-array"),
        pytest.param("---\n---\nmetadata: {name: a}\n", ["a"], id="empty-documents-skipped"),
    ],
)  # fmt: skip
def test_parse_documents(text: str, names: list[str]) -> None:
    assert [d["metadata"]["name"] for d in parse_documents(text)] == names


def test_dates_stay_strings_and_bad_yaml_says_where() -> None:
    (doc,) = parse_documents("metadata: {name: a}\ndata: {day: 2026-01-01}\n")
    assert doc["data"]["day"] == "2026-01-01"
    with pytest.raises(ApiFailure, match=r"(?s)not YAML or JSON.*line"):
        parse_documents("kind: Service\nmetadata: {name: x\n")


def test_status_message_adds_causes_it_does_not_say() -> None:
    body = (
        b'{"kind": "Status", "message": "Service default/x: bad", "details": {"causes": ['
        b'{"field": "spec.traffic", "message": "sum to 101"}, {"message": "bad"}]}}'
    )
    assert status_message(body) == "Service default/x: bad\nsum to 101: spec.traffic"
    assert status_message(b"plain text\n") == "plain text"


def test_describe_as_kubectl() -> None:
    assert describe(KSERVICES, "hello") == "service.serving.knative.dev/hello"
    assert describe(CONFIGMAPS, "config-autoscaler") == "configmap/config-autoscaler"


def test_load_kubeconfig_reads_the_current_context(tmp_path: Path) -> None:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: knpy\n"
        "clusters: [{name: knpy, cluster: {server: 'https://127.0.0.1:1',"
        f" certificate-authority-data: {ca}}}}}]\n"
        "users: [{name: knpy, user: {token: s3cret}}]\n"
        "contexts: [{name: knpy, context: {cluster: knpy, user: knpy}}]\n"
    )
    api = load_kubeconfig(path)
    assert (api.server, api.token) == ("https://127.0.0.1:1", "s3cret")
    assert api.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    with pytest.raises(ApiFailure, match="is `knpy serve` running"):
        load_kubeconfig(tmp_path / "absent")
    path.write_text("current-context: nope\n")
    with pytest.raises(ApiFailure, match="no usable current context"):
        load_kubeconfig(path)


# -- Api.watch over real HTTP on 127.0.0.1 -------------------------------------------------------
class _WatchHandler(http.server.BaseHTTPRequestHandler):
    """Answers a watch with the lines its test put in ``server.lines`` (HTTP/1.0: the body
    ends when the connection closes, as a watch does at timeoutSeconds)."""

    def do_GET(self) -> None:
        server: Any = self.server
        server.queries.append(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))
        server.auth.append(self.headers.get("Authorization"))
        self.send_response(server.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        for line in server.lines:
            self.wfile.write(json.dumps(line).encode() + b"\n")

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def watch_server() -> Iterator[Any]:
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WatchHandler)
    server.lines, server.queries, server.auth, server.status = [], [], [], 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _event(kind: str, rv: str) -> dict[str, Any]:
    return {"type": kind, "object": {"metadata": {"name": "hello", "resourceVersion": rv}}}


def test_watch_yields_the_events_of_one_object(watch_server: Any) -> None:
    watch_server.lines = [_event("ADDED", "5"), _event("BOOKMARK", "7"), _event("MODIFIED", "9")]
    api = Api(f"http://127.0.0.1:{watch_server.server_port}", token="t0k")
    events = list(api.watch(KSERVICES, "default", name="hello", resource_version="4", timeout_s=3))
    assert [(kind, obj["metadata"]["resourceVersion"]) for kind, obj in events] == [
        ("ADDED", "5"), ("BOOKMARK", "7"), ("MODIFIED", "9"),
    ]  # fmt: skip
    assert watch_server.queries == [
        {"watch": ["1"], "allowWatchBookmarks": ["true"], "timeoutSeconds": ["3"],
         "fieldSelector": ["metadata.name=hello"], "resourceVersion": ["4"]},
    ]  # fmt: skip
    assert watch_server.auth == ["Bearer t0k"]


@pytest.mark.parametrize(
    ("status", "lines", "error", "message"),
    [
        pytest.param(200, [{"type": "ERROR", "object": {"code": 410, "message": "too old"}}],
                     WatchExpired, "too old", id="410-expired"),
        pytest.param(200, [{"type": "ERROR", "object": {"code": 500, "message": "broke"}}],
                     ApiFailure, "broke", id="other-error-event"),
        pytest.param(403, [{"kind": "Status", "message": "forbidden: watch services"}],
                     ApiFailure, "forbidden: watch services", id="refused"),
    ],
)  # fmt: skip
def test_watch_errors(
    watch_server: Any, status: int, lines: list[Any], error: type[Exception], message: str
) -> None:
    watch_server.status, watch_server.lines = status, lines
    api = Api(f"http://127.0.0.1:{watch_server.server_port}")
    with pytest.raises(error, match=message):
        list(api.watch(KSERVICES, "default"))


def test_watch_of_an_unreachable_api_says_so() -> None:
    api = Api(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ApiFailure, match=r"cannot reach the .* is `knpy serve` running"):
        list(api.watch(KSERVICES, "default", timeout_s=1))
