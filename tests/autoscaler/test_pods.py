"""A revision's ready pods from the filtered Pod informer: readiness, ports, order."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from autoscaler.pods import PodIndex, is_ready
from shared.kube.fake import FakeCluster
from shared.kube.resources import PODS, REVISION_LABEL, REVISION_UID_LABEL, Obj
from tests.autoscaler.kubeharness import KEY, NS, T0, pod

DELETED_AT = "2026-01-01T00:00:00Z"


def edited(change: Callable[[Obj], None]) -> Obj:
    obj = pod(0)
    change(obj)
    return obj


@pytest.mark.parametrize(
    ("obj", "ready"),
    [
        pytest.param(pod(0), True, id="running-ready"),
        pytest.param(pod(0, ready=False), False, id="ready-false"),
        pytest.param(edited(lambda p: p["status"].update(phase="Pending")), False, id="pending"),
        pytest.param(edited(lambda p: p["metadata"].update(deletionTimestamp=DELETED_AT)),
                     False, id="terminating"),
        pytest.param(edited(lambda p: p["status"].pop("podIP")), False, id="no-ip-yet"),
    ],
)  # fmt: skip
def test_is_ready(obj: Obj, ready: bool) -> None:
    assert is_ready(obj) is ready


async def test_index_follows_the_informer() -> None:
    cluster = FakeCluster()
    index = PodIndex(cluster.informer(PODS, label_selector=REVISION_UID_LABEL))
    cluster.put(pod(0, started=T0 - 10))  # young
    cluster.put(pod(1, started=T0 - 3600, metrics_port=19090))  # old, knpy's own port
    cluster.put(pod(2, ready=False))
    other = pod(3)
    other["metadata"]["labels"][REVISION_LABEL] = "other-00001"
    cluster.put(other)
    unlabelled = pod(4)
    del unlabelled["metadata"]["labels"][REVISION_UID_LABEL]  # not a revision pod: filtered
    cluster.put(unlabelled)
    await cluster.settle()
    eps = index.endpoints(KEY)
    assert [(e.pod_name, e.host, e.port, e.metrics_port) for e in eps] == [
        ("hello-00001-deployment-1", "10.0.0.2", 8012, 19090),  # older first
        ("hello-00001-deployment-0", "10.0.0.1", 8012, 9090),  # Knative's port when unnamed
    ]
    assert index.ready_count(KEY) == 2
    cluster.put(pod(0, ready=False))  # turned unready
    await cluster.delete(PODS, NS, "hello-00001-deployment-1")
    await cluster.settle()
    assert index.ready_count(KEY) == 0
