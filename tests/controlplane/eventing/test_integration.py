"""The eventing controllers against a real ``KubeApiServer`` with the webhook as admission:
a Channel and a Subscription make a backing Broker and Trigger, whose stored (defaulted) specs
the controllers do not fight over."""

from __future__ import annotations

import asyncio

from shared.kube.resources import BROKERS, CHANNELS, SUBSCRIPTIONS, TRIGGERS
from tests.controlplane.controllers import test_integration as wiring
from tests.controlplane.controllers.test_integration import Cluster

cluster = wiring.cluster  # the same fixture: API server, webhook, controllers


async def test_channel_subscription_children_settle(cluster: Cluster) -> None:
    client = cluster.client
    await client.create(CHANNELS, "default", {
        "apiVersion": "messaging.knative.dev/v1", "kind": "Channel",
        "metadata": {"name": "orders", "namespace": "default"}})
    await client.create(SUBSCRIPTIONS, "default", {
        "apiVersion": "messaging.knative.dev/v1", "kind": "Subscription",
        "metadata": {"name": "audit", "namespace": "default"},
        "spec": {"channel": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel",
                             "name": "orders"},
                 "subscriber": {"ref": {"apiVersion": "eventing.knative.dev/v1",
                                        "kind": "Broker", "name": "orders-kn-channel"}}}})
    broker = await cluster.eventually(BROKERS, "orders-kn-channel",
                                      lambda o: bool(o.get("status", {}).get("address")))
    assert broker["spec"]["delivery"]["retry"] == 10  # the webhook's default, kept
    trigger = await cluster.eventually(
        TRIGGERS, "audit-kn-sub", lambda o: bool(o.get("status", {}).get("subscriberUri")))
    assert trigger["spec"]["subscriber"]["ref"]["namespace"] == "default"
    assert trigger["status"]["subscriberUri"] == (
        "http://broker-ingress.knative-eventing.localhost/default/orders-kn-channel")
    sub = await cluster.eventually(
        SUBSCRIPTIONS, "audit",
        lambda o: bool(o.get("status", {}).get("physicalSubscription")))
    assert sub["status"]["physicalSubscription"]["subscriberUri"] == (
        trigger["status"]["subscriberUri"])
    await asyncio.sleep(1.0)
    after_b = await client.get(BROKERS, "default", "orders-kn-channel")
    after_t = await client.get(TRIGGERS, "default", "audit-kn-sub")
    assert after_b is not None and after_t is not None
    assert after_b["spec"] == broker["spec"] and after_t["spec"] == trigger["spec"]
    assert (after_b["metadata"]["generation"], after_t["metadata"]["generation"]) == (1, 1)
