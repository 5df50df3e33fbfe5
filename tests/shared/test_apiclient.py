"""The knpy commands' API client: documents, kubeconfigs, Status messages, kubectl's names."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from shared.apiclient import (
    ApiFailure,
    describe,
    load_kubeconfig,
    parse_documents,
    status_message,
)
from shared.kube.resources import CONFIGMAPS, KSERVICES


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
