"""Knative Eventing's kinds through knpy's API server: kubectl apply/get with Knative's
columns and short names, discovery, the webhook's defaults and refusals with field paths, and a
bad file that applies nothing."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from controlplane.webhook import admission_hooks
from shared.apiclient import Api as ApiClient
from shared.apiclient import ApiFailure, apply_text
from shared.kube.resources import BROKERS, PINGSOURCES, SINKBINDINGS, TRIGGERS
from tests.controlplane.kubeapi.conftest import Api, start_api, stop_api
from tests.controlplane.kubeapi.test_kubectl import Kubectl

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

BROKER = """
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: %s}
"""
TRIGGER = """
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: %s}
spec:
  broker: default
  filter: {attributes: {type: dev.example.order}}
  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: orders}}
"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    a = await start_api(tmp_path_factory.mktemp("eventing-state"), admission=admission_hooks())
    try:
        yield a
    finally:
        await stop_api(a)


@pytest.fixture(scope="module")
def kubectl(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(api.server.kubeconfig_path, tmp_path_factory.mktemp("kube-cache"))


@pytest.fixture(scope="module")
def client(api: Api) -> ApiClient:
    return ApiClient(api.server.url, api.server.token)


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


async def _apply(client: ApiClient, text: str) -> list[str]:
    return await asyncio.to_thread(apply_text, client, text)


async def _refused(client: ApiClient, text: str) -> str:
    with pytest.raises(ApiFailure) as info:
        await _apply(client, text)
    return str(info.value)


async def test_kubectl_apply_and_get_brokers_and_triggers(kubectl: Kubectl, api: Api) -> None:
    out = await kubectl.ok("apply", "-f", "-",
                           stdin=(BROKER % "default" + "---" + TRIGGER % "orders").encode())
    assert out.split("\n")[:2] == ["broker.eventing.knative.dev/default created",
                                   "trigger.eventing.knative.dev/orders created"]
    rows = _rows(await kubectl.ok("get", "brokers"))
    assert rows[0] == ["NAME", "URL", "AGE", "READY", "REASON"]
    assert rows[1][0] == "default"
    wide = _rows(await kubectl.ok("get", "broker", "default", "-o", "wide"))
    assert wide[0][-1] == "CLASS" and wide[1][-1] == "MTChannelBasedBroker"
    rows = _rows(await kubectl.ok("get", "triggers"))
    assert rows[0] == ["NAME", "BROKER", "SUBSCRIBER_URI", "AGE", "READY", "REASON"]
    assert rows[1][:2] == ["orders", "default"]
    # Defaults as Knative's webhook writes them.
    broker = await api.ok("GET", BROKERS.path("default", "default"))
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == (
        "MTChannelBasedBroker")
    assert broker["spec"]["delivery"] == {
        "retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}
    trigger = await api.ok("GET", TRIGGERS.path("default", "orders"))
    assert trigger["metadata"]["labels"] == {"eventing.knative.dev/broker": "default"}
    assert trigger["spec"]["subscriber"]["ref"]["namespace"] == "default"


async def test_discovery_short_names_and_categories(kubectl: Kubectl) -> None:
    out = await kubectl.ok("api-resources", "--api-group=messaging.knative.dev", "-o", "wide")
    rows = {r[0]: r for r in _rows(out)[1:]}
    assert rows["channels"][1] == "ch" and rows["subscriptions"][1] == "sub"
    out = await kubectl.ok("api-resources", "--api-group=sources.knative.dev")
    assert {r[0] for r in _rows(out)[1:]} == {"containersources", "pingsources", "sinkbindings"}
    await kubectl.ok("get", "ch")  # the short name resolves
    out = await kubectl.ok("get", "eventing")  # the category
    assert "broker.eventing.knative.dev/default" in out


async def test_kubectl_shows_the_webhooks_refusal_with_paths(kubectl: Kubectl) -> None:
    bad = TRIGGER.replace("broker: default", "broker: ''").replace("type:", "Type:")
    rc, _, err = await kubectl.run("apply", "-f", "-", stdin=(bad % "bad").encode())
    assert rc == 1
    assert 'admission webhook "validation.webhook.eventing.knative.dev" denied' in err
    assert "missing field(s): spec.broker" in err
    line = next(x for x in err.splitlines() if 'invalid key name "Type"' in x)
    assert line.endswith(": spec.filter.attributes[Type]"), line


async def test_a_bad_file_applies_nothing(client: ApiClient) -> None:
    text = (BROKER % "untouched") + "---" + """
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: bad}
spec:
  broker: default
  subscriber: {uri: /relative}
  delivery: {retry: -1, backoffPolicy: fast, timeout: PT0S}
"""
    message = await _refused(client, text)
    for line in (
        "Relative URI is not allowed when Ref and [apiVersion, kind, name] is absent: "
        "spec.subscriber.uri",
        "invalid value: -1: spec.delivery.retry",
        "invalid value: fast: spec.delivery.backoffPolicy",
        "invalid value: PT0S: spec.delivery.timeout",
    ):
        assert line in message, message
    assert message.startswith("document 2:")
    assert await asyncio.to_thread(client.get, BROKERS, "default", "untouched") is None


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("""
kind: Trigger
metadata: {name: both}
spec:
  broker: default
  brokerRef: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}
  subscriber: {uri: "http://x"}
""", ["expected exactly one, got both: spec.broker, spec.brokerRef"]),
        ("""
kind: Trigger
metadata: {name: nosub}
spec: {broker: default}
""", ["expected at least one, got none: spec.subscriber.ref, spec.subscriber.uri"]),
        ("""
kind: Trigger
metadata: {name: twodialects}
spec:
  broker: default
  subscriber: {uri: "http://x"}
  filters: [{exact: {type: a}, prefix: {source: b}}]
""", ["multiple dialects found, filters can have only one dialect set: spec.filters[0]"]),
        ("""
kind: Trigger
metadata: {name: absref}
spec:
  broker: default
  subscriber:
    ref: {apiVersion: v1, kind: Service, name: x}
    uri: "http://x/y"
""", ["Absolute URI is not allowed when Ref or [apiVersion, kind, name] is present: "
      "spec.subscriber.ref, spec.subscriber.uri"]),
        ("""
kind: Trigger
metadata: {name: refmissing}
spec:
  broker: default
  subscriber: {ref: {kind: Service, namespace: elsewhere}}
""", ["missing field(s): spec.subscriber.ref.apiVersion, spec.subscriber.ref.name",
      "mismatched namespaces: spec.subscriber.ref.namespace"]),
    ],
)
async def test_trigger_refusals(client: ApiClient, doc: str, expected: list[str]) -> None:
    message = await _refused(client, "apiVersion: eventing.knative.dev/v1\n" + doc)
    for line in expected:
        assert line in message, message


async def test_immutable_fields(client: ApiClient) -> None:
    await _apply(client, BROKER % "imm" + "---" + TRIGGER.replace("default", "imm") % "imm-t")
    moved = TRIGGER.replace("broker: default", "broker: other") % "imm-t"
    assert "Immutable fields changed (-old +new): spec.broker" in await _refused(client, moved)
    reclassed = (BROKER % "imm").replace(
        "metadata: {name: imm}",
        "metadata: {name: imm, annotations: {eventing.knative.dev/broker.class: RabbitMQBroker}}",
    )
    message = await _refused(client, reclassed)
    assert "Immutable annotations changed (-old +new): metadata.annotations[" in message
    # delivery may change
    changed = (BROKER % "imm") + "spec: {delivery: {retry: 2}}\n"
    assert await _apply(client, changed) == ["broker.eventing.knative.dev/imm configured"]


async def test_pingsource_defaults_and_refusals(client: ApiClient) -> None:
    ok = """
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: ping}
spec:
  data: '{"hello": "world"}'
  contentType: application/json
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
"""
    await _apply(client, ok)
    stored: Any = await asyncio.to_thread(client.get, PINGSOURCES, "default", "ping")
    assert stored["spec"]["schedule"] == "* * * * *"
    bad = ok.replace("name: ping}", "name: ping2}") + """
  schedule: "@every 5m"
  timezone: Nowhere/Town
  dataBase64: "!!"
  ceOverrides: {extensions: {"bad-key": x}}
"""
    message = await _refused(client, bad)
    for line in (
        "expected exactly one, got both: spec.data, spec.dataBase64",
        "invalid value: unsupported descriptor @every: spec.schedule",
        'invalid key name "bad-key": spec.ceOverrides.extensions[bad-key]',
    ):
        assert line in message, message
    tz = ok.replace("name: ping}", "name: ping3}") + "  timezone: Nowhere/Town\n"
    assert "unknown time zone Nowhere/Town: spec.timezone" in await _refused(client, tz)
    notjson = ok.replace("name: ping}", "name: ping4}").replace('{"hello": "world"}', "[1")
    assert ": spec.data" in await _refused(client, notjson)


async def test_sources_and_messaging_refusals(client: ApiClient) -> None:
    message = await _refused(client, """
apiVersion: sources.knative.dev/v1
kind: SinkBinding
metadata: {name: sb}
spec:
  subject: {apiVersion: apps/v1, kind: Deployment}
  sink: {uri: "http://x"}
""")
    assert "expected exactly one, got neither: spec.subject.name, spec.subject.selector" in message
    await _apply(client, """
apiVersion: sources.knative.dev/v1
kind: SinkBinding
metadata: {name: sb}
spec:
  subject: {apiVersion: apps/v1, kind: Deployment, name: app}
  sink: {uri: "http://x"}
""")
    stored: Any = await asyncio.to_thread(client.get, SINKBINDINGS, "default", "sb")
    assert stored["spec"]["subject"]["namespace"] == "default"
    message = await _refused(client, """
apiVersion: sources.knative.dev/v1
kind: ContainerSource
metadata: {name: cs}
spec:
  template: {spec: {containers: [{name: c}]}}
""")
    assert "missing field(s): spec.template.spec.containers[0].image" in message
    assert "expected at least one, got none: spec.sink.ref, spec.sink.uri" in message
    message = await _refused(client, """
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: s}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: ch}
  delivery: {backoffDelay: soon}
""")
    assert "missing field(s): spec.subscriber" in message
    assert "invalid value: soon: spec.delivery.backoffDelay" in message
    message = await _refused(client, """
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: ch}
spec: {channelTemplate: {spec: {}}}
""")
    assert "missing field(s): spec.channelTemplate.apiVersion, spec.channelTemplate.kind" in message


async def test_knpy_get_eventing_kinds(api: Api) -> None:
    """``knpy get brokers|triggers|pingsources`` with kn's columns, and -o json."""
    kubeconfig = str(api.server.kubeconfig_path)

    async def knpy(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli", "get", *args, "--kubeconfig", kubeconfig,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        return out.decode()

    rows = _rows(await knpy("brokers", "-n", "default"))
    assert rows[0] == ["NAMESPACE", "NAME", "URL", "READY", "REASON"]
    assert rows[1] == ["default", "default", "Unknown"]
    rows = _rows(await knpy("trigger"))
    assert rows[0] == ["NAMESPACE", "NAME", "BROKER", "SINK", "READY", "REASON"]
    assert ["default", "orders", "default", "Unknown"] in rows
    rows = _rows(await knpy("pingsources"))
    assert rows[0] == ["NAMESPACE", "NAME", "SCHEDULE", "SINK", "READY", "REASON"]
    doc = json.loads(await knpy("broker", "default", "-o", "json"))
    assert doc["kind"] == "Broker"
    assert (await knpy("containersources")).strip() == "No containersources found."
