"""The eventing reconcilers over FakeCluster: Broker address and conditions, Trigger
resolution, SinkBinding and ContainerSource injection, PingSource jobs."""

from __future__ import annotations

import asyncio
from typing import Any

from controlplane.controllers.broker import probe_rabbitmq
from shared.kube.resources import (
    BROKERS,
    CHANNELS,
    CONTAINERSOURCES,
    DEPLOYMENTS,
    ENDPOINTS,
    KSERVICES,
    PINGSOURCES,
    SINKBINDINGS,
    SUBSCRIPTIONS,
    TRIGGERS,
    Obj,
)
from shared.ports import free_port
from tests.controlplane.controllers.harness import Env, hello, running

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"  # the machine's, for every test run

PORT = 8080


def broker(name: str = "default", **spec: Any) -> Obj:
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def trigger(name: str, subscriber: Obj, broker_name: str = "default", **spec: Any) -> Obj:
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"broker": broker_name, "subscriber": subscriber, **spec}}


def conditions(obj: Obj) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("reason", ""))
            for c in obj.get("status", {}).get("conditions", [])}


async def ingress_endpoints(env: Env, ready: bool) -> None:
    subsets = [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 41234}]}] if ready else []
    env.cluster.put({"apiVersion": "v1", "kind": "Endpoints",
                     "metadata": {"name": "broker-ingress", "namespace": "knative-eventing"},
                     "subsets": subsets}, ENDPOINTS)
    await env.cluster.settle()


KSVC_REF = {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "hello"}}


async def test_broker_address_and_readiness_follow_the_data_plane() -> None:
    async with running(ingress_port=PORT) as env:
        await env.apply(BROKERS, broker())
        b = env.get(BROKERS, "default")
        url = "http://broker-ingress.knative-eventing.localhost:8080/default/default"
        assert b["status"]["address"] == {"name": "http", "url": url}
        conds = conditions(b)
        assert conds["IngressReady"] == ("False", "EndpointsUnavailable")
        assert conds["Ready"] == ("False", "EndpointsUnavailable")
        assert conds["DeadLetterSinkResolved"] == ("True", "DeadLetterSinkNotConfigured")
        await ingress_endpoints(env, ready=True)
        assert conditions(env.get(BROKERS, "default"))["Ready"] == ("True", "")
        # A broker of a class knpy does not serve is left alone.
        other = broker("kafka")
        other["metadata"]["annotations"] = {"eventing.knative.dev/broker.class": "Kafka"}
        await env.apply(BROKERS, other)
        assert "status" not in env.get(BROKERS, "kafka") or not env.get(BROKERS, "kafka")[
            "status"].get("address")


async def test_trigger_resolves_a_knative_service_and_the_brokers_dead_letter_sink() -> None:
    async with running(ingress_port=PORT) as env:
        dls = {"uri": "http://dls.example:9999/dead"}
        await env.apply(BROKERS, broker(delivery={"deadLetterSink": dls, "retry": 1}))
        await ingress_endpoints(env, ready=True)
        await env.apply(TRIGGERS, trigger("t", {**KSVC_REF}))
        t = env.get(TRIGGERS, "t")
        conds = conditions(t)
        assert conds["SubscriberResolved"] == ("False", "Unable to get the Subscriber's URI")
        assert conds["Ready"][0] == "False"
        assert t["status"]["deadLetterSinkUri"] == "http://dls.example:9999/dead"
        await hello(env)
        ksvc = env.get(KSERVICES, "hello")
        assert ksvc["status"]["url"] == "http://hello.default.localhost"
        t = env.get(TRIGGERS, "t")
        assert t["status"]["subscriberUri"] == "http://hello.default.localhost:8080"
        assert conditions(t)["Ready"] == ("True", "")
        # A uri beside the ref is relative to it.
        await env.apply(TRIGGERS, trigger("t2", {**KSVC_REF, "uri": "/orders"}))
        assert env.get(TRIGGERS, "t2")["status"]["subscriberUri"] == (
            "http://hello.default.localhost:8080/orders")
        # A trigger's own delivery replaces the broker's wholesale: no dead-letter sink.
        t3 = trigger("t3", {"uri": "http://x.example/"}, delivery={"retry": 0})
        await env.apply(TRIGGERS, t3)
        t3 = env.get(TRIGGERS, "t3")
        assert "deadLetterSinkUri" not in t3["status"]
        assert conditions(t3)["DeadLetterSinkResolved"] == ("True", "DeadLetterSinkNotConfigured")


async def test_trigger_of_a_missing_broker() -> None:
    async with running(ingress_port=PORT) as env:
        await env.apply(TRIGGERS, trigger("t", {"uri": "http://x.example/"}, "nope"))
        t = env.get(TRIGGERS, "t")
        assert conditions(t)["BrokerReady"] == ("False", "BrokerDoesNotExist")
        assert t["status"]["subscriberUri"] == "http://x.example/"
        await env.apply(BROKERS, broker("nope"))
        ready = conditions(env.get(TRIGGERS, "t"))["BrokerReady"]
        assert ready == ("False", "EndpointsUnavailable")


def app_deployment(name: str = "app") -> Obj:
    container = {"name": "c", "image": "x", "env": [{"name": "A", "value": "1"}]}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [container]}}}}


def env_of(env: Env, name: str) -> list[Obj]:
    d = env.get(DEPLOYMENTS, name)
    return list(d["spec"]["template"]["spec"]["containers"][0].get("env", []))


async def test_sinkbinding_injects_and_removes_k_sink() -> None:
    async with running(ingress_port=PORT) as env:
        env.cluster.put(app_deployment(), DEPLOYMENTS)
        await env.cluster.settle()
        await env.apply(BROKERS, broker())
        sb = {"apiVersion": "sources.knative.dev/v1", "kind": "SinkBinding",
              "metadata": {"name": "bind", "namespace": "default"},
              "spec": {"subject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                       "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                                        "name": "default"}},
                       "ceOverrides": {"extensions": {"team": "a"}}}}
        await env.apply(SINKBINDINGS, sb)
        url = "http://broker-ingress.knative-eventing.localhost:8080/default/default"
        assert env_of(env, "app") == [
            {"name": "A", "value": "1"}, {"name": "K_SINK", "value": url},
            {"name": "K_CE_OVERRIDES", "value": '{"extensions":{"team":"a"}}'}]
        status = env.get(SINKBINDINGS, "bind")["status"]
        assert status["sinkUri"] == url
        assert conditions(env.get(SINKBINDINGS, "bind"))["Ready"] == ("True", "")
        await env.cluster.delete(SINKBINDINGS, "default", "bind")
        await env.cluster.settle()
        assert env_of(env, "app") == [{"name": "A", "value": "1"}]
        assert "sources.knative.dev/sinkbinding" not in (
            env.get(DEPLOYMENTS, "app")["metadata"].get("annotations") or {})
        missing = {**sb, "metadata": {"name": "m", "namespace": "default"},
                   "spec": {**sb["spec"], "subject": {"apiVersion": "apps/v1",
                                                      "kind": "Deployment", "name": "none"}}}
        await env.apply(SINKBINDINGS, missing)
        assert conditions(env.get(SINKBINDINGS, "m"))["Available"] == ("False", "SubjectMissing")


async def test_containersource_runs_a_deployment_with_the_sink() -> None:
    async with running(ingress_port=PORT) as env:
        cs = {"apiVersion": "sources.knative.dev/v1", "kind": "ContainerSource",
              "metadata": {"name": "heartbeat", "namespace": "default"},
              "spec": {"template": {"spec": {"containers": [
                  {"name": "beat", "image": "x", "command": ["python", "beat.py"]}]}},
                  "sink": {"uri": "http://sink.example/"}}}
        await env.apply(CONTAINERSOURCES, cs)
        d = env.get(DEPLOYMENTS, "heartbeat-deployment")
        assert d["metadata"]["ownerReferences"][0]["kind"] == "ContainerSource"
        assert d["spec"]["template"]["spec"]["containers"][0]["env"] == [
            {"name": "K_SINK", "value": "http://sink.example/"},
            {"name": "K_CE_OVERRIDES", "value": ""}]
        conds = conditions(env.get(CONTAINERSOURCES, "heartbeat"))
        assert conds["SinkBindingReady"] == ("True", "")
        assert conds["ReceiveAdapterReady"] == ("Unknown", "DeploymentUnavailable")
        d["status"] = {"availableReplicas": 1, "replicas": 1}
        await env.cluster.replace_status(DEPLOYMENTS, "default", "heartbeat-deployment", d)
        await env.cluster.settle()
        assert conditions(env.get(CONTAINERSOURCES, "heartbeat"))["Ready"] == ("True", "")
        assert env.get(CONTAINERSOURCES, "heartbeat")["status"]["sinkUri"] == (
            "http://sink.example/")


async def test_pingsource_hands_its_schedule_to_the_adapter() -> None:
    async with running(ingress_port=PORT) as env:
        ps = {"apiVersion": "sources.knative.dev/v1", "kind": "PingSource",
              "metadata": {"name": "ping", "namespace": "default"},
              "spec": {"schedule": "*/5 * * * *", "timezone": "Europe/Paris",
                       "dataBase64": "aGk=", "contentType": "text/plain",
                       "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1",
                                        "kind": "Broker", "name": "default"}}}}
        await env.apply(PINGSOURCES, ps)
        assert conditions(env.get(PINGSOURCES, "ping"))["SinkProvided"][0] == "False"
        assert env.controllers.ping_adapter.jobs() == {}
        await env.apply(BROKERS, broker())
        job = env.controllers.ping_adapter.jobs()[("default", "ping")]
        assert (job.schedule, job.timezone, job.data, job.content_type) == (
            "*/5 * * * *", "Europe/Paris", b"hi", "text/plain")
        assert job.source == "/apis/v1/namespaces/default/pingsources/ping"
        assert job.sink.endswith(":8080/default/default")
        status = env.get(PINGSOURCES, "ping")["status"]
        assert conditions(env.get(PINGSOURCES, "ping"))["Ready"] == ("True", "")
        assert status["sinkUri"] == job.sink
        await env.cluster.delete(PINGSOURCES, "default", "ping")
        await env.cluster.settle()
        assert env.controllers.ping_adapter.jobs() == {}


async def test_channel_and_subscription_are_a_backing_broker_and_trigger() -> None:
    async with running(ingress_port=PORT) as env:
        await ingress_endpoints(env, ready=True)
        ch = {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel",
              "metadata": {"name": "orders", "namespace": "default"},
              "spec": {"delivery": {"retry": 3}}}
        await env.apply(CHANNELS, ch)
        b = env.get(BROKERS, "orders-kn-channel")
        assert b["metadata"]["ownerReferences"][0]["kind"] == "Channel"
        assert b["spec"]["delivery"] == {"retry": 3}
        c = env.get(CHANNELS, "orders")
        assert c["status"]["address"]["url"] == (
            "http://broker-ingress.knative-eventing.localhost:8080/default/orders-kn-channel")
        assert conditions(c)["Ready"] == ("True", "")
        sub = {"apiVersion": "messaging.knative.dev/v1", "kind": "Subscription",
               "metadata": {"name": "audit", "namespace": "default"},
               "spec": {"channel": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel",
                                    "name": "orders"},
                        "subscriber": {"uri": "http://audit.example/"}}}
        await env.apply(SUBSCRIPTIONS, sub)
        t = env.get(TRIGGERS, "audit-kn-sub")
        assert t["spec"]["broker"] == "orders-kn-channel"
        assert t["spec"]["subscriber"] == {"uri": "http://audit.example/"}
        s = env.get(SUBSCRIPTIONS, "audit")
        assert s["status"]["physicalSubscription"] == {"subscriberUri": "http://audit.example/"}
        assert conditions(s)["Ready"] == ("True", "")
        # The controllers compare with the webhook's defaults applied: no update loop.
        children = [w for w in env.cluster.writes if w.verb == "update"
                    and w.resource in (BROKERS, TRIGGERS)]
        assert children == []
        replying = {**sub, "metadata": {"name": "r", "namespace": "default"},
                    "spec": {**sub["spec"], "reply": {"uri": "http://reply.example/"}}}
        await env.apply(SUBSCRIPTIONS, replying)
        assert conditions(env.get(SUBSCRIPTIONS, "r"))["Ready"] == ("True", "")
        assert env.get(SUBSCRIPTIONS, "r")["status"]["physicalSubscription"]["replyUri"] == (
            "http://reply.example/")
        t = env.get(TRIGGERS, "r-kn-sub")
        assert t["metadata"]["annotations"]["knpy.dev/subscription-reply"] == (
            "http://reply.example/")
        assert t["metadata"]["labels"]["messaging.knative.dev/subscription"] == "r"
        # A reply to a Broker resolves to its address once it has one; until then the
        # Subscription is not Ready and its Trigger keeps the reply it had.
        to_broker = {**replying, "spec": {**replying["spec"], "reply": {"ref": {
            "apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "later"}}}}
        await env.apply(SUBSCRIPTIONS, to_broker)
        assert conditions(env.get(SUBSCRIPTIONS, "r"))["ReferencesResolved"] == (
            "False", "NotFound")
        assert env.get(TRIGGERS, "r-kn-sub")["metadata"]["annotations"][
            "knpy.dev/subscription-reply"] == "http://reply.example/"
        await env.apply(BROKERS, broker("later"))
        later = "http://broker-ingress.knative-eventing.localhost:8080/default/later"
        assert env.get(TRIGGERS, "r-kn-sub")["metadata"]["annotations"][
            "knpy.dev/subscription-reply"] == later
        assert conditions(env.get(SUBSCRIPTIONS, "r"))["Ready"] == ("True", "")
        # The reply removed: so is the annotation (replies are then dropped).
        await env.apply(SUBSCRIPTIONS, {**sub, "metadata": {"name": "r", "namespace": "default"}})
        annotations = env.get(TRIGGERS, "r-kn-sub")["metadata"].get("annotations") or {}
        assert "knpy.dev/subscription-reply" not in annotations
        assert "replyUri" not in env.get(SUBSCRIPTIONS, "r")["status"]["physicalSubscription"]
        missing = {**sub, "metadata": {"name": "m", "namespace": "default"},
                   "spec": {**sub["spec"], "channel": {**sub["spec"]["channel"], "name": "no"}}}
        await env.apply(SUBSCRIPTIONS, missing)
        assert conditions(env.get(SUBSCRIPTIONS, "m"))["ChannelReady"] == (
            "False", "ChannelNotFound")


async def test_sinkbinding_by_selector_binds_every_match() -> None:
    async with running(ingress_port=PORT) as env:
        for name in ("a", "b", "c"):
            d = app_deployment(name)
            d["metadata"]["labels"]["tier"] = "web" if name != "c" else "db"
            env.cluster.put(d, DEPLOYMENTS)
        await env.cluster.settle()
        sb = {"apiVersion": "sources.knative.dev/v1", "kind": "SinkBinding",
              "metadata": {"name": "web", "namespace": "default"},
              "spec": {"subject": {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "selector": {"matchLabels": {"tier": "web"}}},
                       "sink": {"uri": "http://sink.example/"}}}
        await env.apply(SINKBINDINGS, sb)
        sinks = {n: [e["value"] for e in env_of(env, n) if e["name"] == "K_SINK"]
                 for n in ("a", "b", "c")}
        assert sinks == {"a": ["http://sink.example/"], "b": ["http://sink.example/"], "c": []}


async def test_a_trigger_with_broker_ref_says_it_is_not_served() -> None:
    async with running(ingress_port=PORT) as env:
        await env.apply(BROKERS, broker())
        t = trigger("r", {"uri": "http://x.example/"})
        del t["spec"]["broker"]
        t["spec"]["brokerRef"] = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                                  "name": "default"}
        await env.apply(TRIGGERS, t)
        assert conditions(env.get(TRIGGERS, "r"))["BrokerReady"] == (
            "False", "BrokerRefNotSupported")


def rabbitmq_broker(name: str) -> Obj:
    b = broker(name)
    b["metadata"]["annotations"] = {"eventing.knative.dev/broker.class": "RabbitMQBroker"}
    return b


async def reconciled(env: Env, name: str, condition: str, status: str) -> Obj:
    """The broker once its condition has ``status``: the RabbitMQ probe is real I/O, which
    ``settle`` does not wait for (bounded: 5 s)."""
    for _ in range(500):
        await env.cluster.settle()
        b = env.get(BROKERS, name)
        if conditions(b).get(condition, ("", ""))[0] == status:
            return b
        await asyncio.sleep(0.01)
    raise AssertionError(f"broker {name}: {condition} never {status}: {b.get('status')}")


async def rabbitmq_endpoints(env: Env) -> None:
    env.cluster.put({"apiVersion": "v1", "kind": "Endpoints",
                     "metadata": {"name": "rabbitmq-broker-ingress",
                                  "namespace": "knative-eventing"},
                     "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                                  "ports": [{"port": 41235}]}]}, ENDPOINTS)
    await env.cluster.settle()


async def test_a_rabbitmq_broker_without_rabbitmq_says_how_to_configure_it() -> None:
    async with running(ingress_port=PORT) as env:
        await env.apply(BROKERS, rabbitmq_broker("r"))
        b = env.get(BROKERS, "r")
        conds = conditions(b)
        assert conds["ExchangeReady"] == ("False", "RabbitMQNotConfigured")
        assert conds["Ready"] == ("False", "RabbitMQNotConfigured")
        assert "--rabbitmq amqp://" in next(
            c["message"] for c in b["status"]["conditions"] if c["type"] == "Ready")
        assert "address" not in b["status"]
        # Its trigger is reconciled (by knpy, not left to another controller) and not Ready.
        await env.apply(TRIGGERS, trigger("t", {"uri": "http://x.example/"}, "r"))
        assert conditions(env.get(TRIGGERS, "t"))["BrokerReady"] == (
            "False", "RabbitMQNotConfigured")


async def test_a_rabbitmq_broker_whose_server_does_not_answer() -> None:
    url = f"amqp://guest:secret@127.0.0.1:{free_port()}/"  # nothing listens there
    async with running(ingress_port=PORT, rabbitmq_url=url) as env:
        await env.apply(BROKERS, rabbitmq_broker("r"))
        b = await reconciled(env, "r", "ExchangeReady", "False")
        ready = next(c for c in b["status"]["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "RabbitMQUnreachable")
        assert "cannot reach RabbitMQ at 127.0.0.1:" in ready["message"]
        assert "secret" not in ready["message"]


async def test_a_rabbitmq_broker_on_the_machines_rabbitmq() -> None:
    async with running(ingress_port=PORT, rabbitmq_url=RABBITMQ_URL) as env:
        await env.apply(BROKERS, rabbitmq_broker("r"))
        b = await reconciled(env, "r", "ExchangeReady", "True")
        url = "http://rabbitmq-broker-ingress.knative-eventing.localhost:8080/default/r"
        assert b["status"]["address"] == {"name": "http", "url": url}
        conds = conditions(b)
        assert conds["ExchangeReady"] == ("True", "")
        assert conds["IngressReady"] == ("False", "EndpointsUnavailable")
        await rabbitmq_endpoints(env)
        assert conditions(await reconciled(env, "r", "IngressReady", "True"))["Ready"] == (
            "True", "")
        # The default class's data plane being ready says nothing of this one, and back.
        await env.apply(BROKERS, broker("d"))
        assert conditions(env.get(BROKERS, "d"))["IngressReady"] == (
            "False", "EndpointsUnavailable")


async def test_probe_rabbitmq_logs_in_as_the_data_plane_will() -> None:
    """Another server, a refused password or vhost: each said, never the password."""
    assert await probe_rabbitmq(RABBITMQ_URL) is None
    server = await asyncio.start_server(_http_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        why = await probe_rabbitmq(f"amqp://u:s3cret@127.0.0.1:{port}/")
    finally:
        server.close()
        await server.wait_closed()
    assert why is not None and f"cannot reach RabbitMQ at 127.0.0.1:{port}: " in why
    assert "s3cret" not in why
    assert "not valid" in str(await probe_rabbitmq("amqp://127.0.0.1:notaport/"))
    refused = await probe_rabbitmq("amqp://guest:s3cret@127.0.0.1:5672/")
    assert refused is not None and "s3cret" not in refused
    assert "RabbitMQ at 127.0.0.1:5672 refused the URL's user and password" in refused
    assert await probe_rabbitmq("amqp://guest:guest@127.0.0.1:5672/no-such-vhost") == (
        "RabbitMQ at 127.0.0.1:5672 refused the URL's vhost 'no-such-vhost'")


async def _http_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(8)
    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    await writer.drain()
    writer.close()
