"""The KPA PodAutoscaler reconciler over FakeCluster: what it writes, and when.

The test plays Knative's controller and kubelet (PA, Deployment, Pods, the SKS status); the
reconciler, the engine and the KPA pass are the real ones; time is a fake clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from autoscaler.kpa import ActiveState
from autoscaler.resources import format_time
from shared.kube.resources import (
    DEPLOYMENTS,
    KPA_CLASS,
    METRICS,
    PODAUTOSCALERS,
    SERVERLESSSERVICES,
    Obj,
)
from shared.kube.workqueue import WorkQueue
from tests.autoscaler.kubeharness import (
    CONFIG,
    DEPLOYMENT,
    KEY,
    NS,
    REV,
    T0,
    UID,
    Rig,
    deployment,
    pa,
    pod,
    sks_status,
)

pytestmark = pytest.mark.timeout(20)


def conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}


def rig(config: dict[str, str] | None = None, pods: int = 1, **pa_args: Any) -> Rig:
    r = Rig(config)
    r.seed(pa(**pa_args))
    r.seed(deployment(1))
    for i in range(pods):
        r.seed(pod(i))
    return r


def owned_sks(mode: str = "Serve", activators: int = 5, owner_uid: str = UID) -> Obj:
    return {
        "apiVersion": SERVERLESSSERVICES.api_version,
        "kind": SERVERLESSSERVICES.kind,
        "metadata": {
            "name": REV,
            "namespace": NS,
            "ownerReferences": [{"apiVersion": PODAUTOSCALERS.api_version, "kind": "PodAutoscaler",
                                 "name": REV, "uid": owner_uid, "controller": True}],
        },
        "spec": {"mode": mode, "numActivators": activators, "protocolType": "http1",
                 "objectRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": DEPLOYMENT}},
    }  # fmt: skip


# -- SKS -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "verbs", "mode", "activators", "active_reason"),
    [
        pytest.param(None, ["create"], "Proxy", 2, None, id="missing-created-proxy-2"),
        pytest.param(owned_sks("Serve", 5), ["update"], "Proxy", 2, None,
                     id="differs-full-update"),
        pytest.param(owned_sks("Proxy", 2), [], "Proxy", 2, None, id="same-no-write"),
        pytest.param(owned_sks("Serve", 5, owner_uid="someone-else"), [], "Serve", 5, "NotOwned",
                     id="not-owned-left-alone"),
    ],
)  # fmt: skip
async def test_sks_before_private_service(
    existing: Obj | None, verbs: list[str], mode: str, activators: int, active_reason: str | None
) -> None:
    r = rig()
    if existing is not None:
        r.seed(existing)
    await r.reconcile()
    assert [w.verb for w in r.cluster.writes if w.resource == SERVERLESSSERVICES] == verbs
    sks = r.sks()
    assert sks is not None
    assert (sks["spec"]["mode"], sks["spec"]["numActivators"]) == (mode, activators)
    conds = conditions(r.pa())
    if active_reason is not None:
        assert (conds["Active"]["status"], conds["Active"]["reason"]) == ("False", active_reason)
        assert conds["Ready"]["status"] == "False"
        return
    assert (conds["SKSReady"]["status"], conds["SKSReady"]["reason"]) == ("Unknown", "NotReady")
    assert conds["Ready"]["status"] == "Unknown"
    # Knative's computeStatus with want -1: desired unknown, one ready pod makes it Active.
    status = r.pa()["status"]
    assert (status["desiredScale"], status["actualScale"]) == (-1, 1)
    assert conds["Active"]["status"] == "True"
    assert r.writes("create", METRICS) == []  # nothing more until the private service exists


async def test_created_sks_carries_labels_metric_annotation_and_owner() -> None:
    r = rig(annotations={"autoscaling.knative.dev/metric": "concurrency",
                         "autoscaling.knative.dev/target": "5"})  # fmt: skip
    await r.reconcile()
    sks = r.sks()
    assert sks is not None
    m = sks["metadata"]
    assert m["labels"] == r.pa()["metadata"]["labels"]
    assert m["annotations"] == {"autoscaling.knative.dev/metric": "concurrency"}
    (ref,) = m["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
        "PodAutoscaler", REV, UID, True)  # fmt: skip
    assert sks["spec"]["objectRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": DEPLOYMENT}  # fmt: skip
    assert sks["spec"]["protocolType"] == "http1"


# -- Metric ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "annotations", "stable_ns", "panic_ns", "target"),
    [
        pytest.param(CONFIG, {}, 6_000_000_000, 1_000_000_000, f"{REV}-private",
                     id="stable-6s-panic-10pct"),
        pytest.param(CONFIG, {"autoscaling.knative.dev/window": "10s",
                              "autoscaling.knative.dev/panic-window-percentage": "20"},
                     10_000_000_000, 2_000_000_000, f"{REV}-private", id="annotations"),
        pytest.param({**CONFIG, "target-burst-capacity": "-1"}, {}, 6_000_000_000,
                     1_000_000_000, "", id="tbc-minus-1-not-scraped"),
    ],
)  # fmt: skip
async def test_metric_spec(
    config: dict[str, str], annotations: dict[str, str], stable_ns: int, panic_ns: int,
    target: str,
) -> None:  # fmt: skip
    r = rig(config, annotations=annotations)
    await r.ready_sks()
    metric = r.cluster.peek(METRICS, NS, REV)
    assert metric is not None
    assert metric["spec"] == {"stableWindow": stable_ns, "panicWindow": panic_ns,
                              "scrapeTarget": target}  # fmt: skip
    assert metric["metadata"]["ownerReferences"][0]["uid"] == UID
    assert metric["metadata"]["labels"] == r.pa()["metadata"]["labels"]
    assert r.pa()["status"]["metricsServiceName"] == f"{REV}-private"


# -- scale -----------------------------------------------------------------------------------


async def test_scale_patch_body_and_target() -> None:
    """20 in flight at CC 10 (target 7 per pod): ceil(20 / 7) = 3 on the Deployment's /scale."""
    r = rig()
    await r.ready_sks()
    r.scrape.concurrency = 20.0
    await r.second(4)
    patches = r.writes("patch/scale")
    assert [(w.resource, w.namespace, w.name, w.body) for w in patches] == [
        (DEPLOYMENTS, NS, DEPLOYMENT, [{"op": "add", "path": "/spec/replicas", "value": 3}])
    ]
    assert r.replicas() == 3
    assert r.pa()["status"]["desiredScale"] == 3
    assert r.pa()["status"]["actualScale"] == 1


@pytest.mark.parametrize(
    ("forged", "patched_back"),
    [
        pytest.param(7, True, id="scaled-up-behind-our-back"),
        pytest.param(0, True, id="scaled-to-zero-behind-our-back"),
        pytest.param(3, False, id="unchanged-no-write"),
    ],
)
async def test_level_based_repatch(forged: int, patched_back: bool) -> None:
    """Every tick compares the target with the decision, not only when the decision changes."""
    r = rig()
    await r.ready_sks()
    r.scrape.concurrency = 20.0
    await r.second(4)
    assert r.replicas() == 3
    r.clear_writes()
    r.seed(deployment(forged))  # a crash or a forged write moves the replicas
    await r.second(2)
    assert r.replicas() == 3
    assert bool(r.writes("patch/scale")) is patched_back


async def test_nil_replicas_count_as_one() -> None:
    r = Rig()
    r.seed(pa())
    r.seed(deployment(None))
    r.seed(pod(0))
    await r.ready_sks()
    r.scrape.concurrency = 5.0  # one pod's worth: desired 1
    await r.second(4)
    assert r.pa()["status"]["desiredScale"] == 1
    assert r.writes("patch/scale") == []


@pytest.mark.parametrize(
    ("probe_ok_at", "proxy_since", "zero_at"),
    [
        # Proxying since T0, probe answers at once: zero at the first pass after Inactive.
        pytest.param(0, T0, 8, id="probe-ok-proxying-long"),
        # The activator answers the probe only from t=14: blocked until then.
        pytest.param(14, T0, 14, id="blocked-until-probe"),
        # Probe OK, but activator endpoints only since t=7 (ProxyFor 5 s at t=12): zero once
        # inactive for the grace instead (t=6 + 6 = 12), Knative's CanScaleToZero.
        pytest.param(0, T0 + 7, 12, id="proxy-too-short-waits-inactive-grace"),
        # No ActivatorEndpointsPopulated at all: the same.
        pytest.param(0, None, 12, id="no-activator-endpoints-waits-inactive-grace"),
    ],
)
async def test_scale_to_zero_waits_for_probe_and_grace(
    probe_ok_at: int, proxy_since: float | None, zero_at: int
) -> None:
    """Idle, stable 6 s, grace 6 s (TBC 211: proxied all along): Inactive at t=6."""
    r = rig()
    await r.ready_sks(proxy_since=proxy_since)
    first_zero = None
    for t in range(2, 22, 2):
        r.prober.ok = t >= probe_ok_at
        await r.second(2)
        if r.replicas() == 0 and first_zero is None:
            first_zero = t
            r.set_pods(0)
    assert first_zero == zero_at
    assert r.prober.probed, "the activator was probed before scaling to zero"
    assert r.prober.probed[-1]["metadata"]["name"] == REV  # the revision's public Endpoints
    conds = conditions(r.pa())
    assert (conds["Active"]["status"], conds["Active"]["reason"]) == ("False", "NoTraffic")
    assert r.pa()["status"]["desiredScale"] == 0


# -- status ----------------------------------------------------------------------------------


async def test_status_conditions_and_transition_times() -> None:
    r = rig()
    await r.ready_sks()
    r.scrape.concurrency = 5.0
    await r.second(2)
    first = conditions(r.pa())
    assert {k: v["status"] for k, v in first.items()} == {
        "Active": "True",
        "Ready": "True",
        "SKSReady": "True",
        "ScaleTargetInitialized": "True",
    }
    status = r.pa()["status"]
    assert (status["serviceName"], status["metricsServiceName"]) == (REV, f"{REV}-private")
    assert status["observedGeneration"] == 1
    writes_before = len(r.writes("update/status"))
    await r.second(4)  # nothing changes: no status write, no moved transition time
    assert conditions(r.pa()) == first
    assert len(r.writes("update/status")) == writes_before
    r.scrape.concurrency = 0.0
    await r.second(8)  # idle: Active turns False; only its transition time moves
    after = conditions(r.pa())
    assert after["Active"]["status"] == "False"
    assert after["Active"]["lastTransitionTime"] != first["Active"]["lastTransitionTime"]
    for kind in ("SKSReady", "ScaleTargetInitialized"):
        assert after[kind]["lastTransitionTime"] == first[kind]["lastTransitionTime"]


async def test_status_conflict_is_reread_and_retried() -> None:
    from shared.kube.client import Conflict

    r = rig()
    r.cluster.fail_next("update/status", Conflict(409, "Conflict", "modified"), PODAUTOSCALERS)
    await r.reconcile()
    assert [w.verb for w in r.writes("update/status")] == ["update/status"]
    assert conditions(r.pa())["SKSReady"]["reason"] == "NotReady"


@pytest.mark.parametrize(
    ("config", "concurrency", "pods", "mode", "activators"),
    [
        # 20 in flight (20 / 3 per pod): 3 pods hold 30 - 20 - 211 < 0, so keep the
        # activator; ceil((30 + 211) / 100) = 3.
        pytest.param(CONFIG, 20.0 / 3, 3, "Proxy", 3, id="tbc-211-proxy-3-activators"),
        # TBC 0: never in the path while pods are wanted; 2 activators.
        pytest.param({**CONFIG, "target-burst-capacity": "0"}, 20.0 / 3, 3, "Serve", 2,
                     id="tbc-0-serve"),
        # TBC -1: always in the path.
        pytest.param({**CONFIG, "target-burst-capacity": "-1"}, 20.0 / 3, 3, "Proxy", 2,
                     id="tbc-minus-1-proxy"),
    ],
)  # fmt: skip
async def test_mode_and_num_activators(
    config: dict[str, str], concurrency: float, pods: int, mode: str, activators: int
) -> None:
    r = rig(config, pods=pods)
    await r.ready_sks()
    r.scrape.concurrency = concurrency
    await r.second(4)
    sks = r.sks()
    assert sks is not None
    assert (sks["spec"]["mode"], sks["spec"]["numActivators"]) == (mode, activators)
    assert r.writes("create", SERVERLESSSERVICES) and all(
        w.verb == "update" for w in r.cluster.writes
        if w.resource == SERVERLESSSERVICES and w.verb != "create"
    )  # fmt: skip


@pytest.mark.parametrize(
    "cls",
    [
        pytest.param("hpa.autoscaling.knative.dev", id="hpa-class"),
        pytest.param(None, id="no-class-annotation"),
    ],
)
async def test_other_classes_are_ignored(cls: str | None) -> None:
    r = rig(cls=cls)
    await r.reconcile()
    r.scrape.concurrency = 20.0
    await r.second(4)
    assert r.cluster.writes == []
    assert KEY not in r.engine.multiscaler


async def test_new_leader_continues_and_never_doubles() -> None:
    """A replica new to a PA at 3 replicas, Active since long: it restores the status and
    asks nothing until its own decider has data, so the Deployment stays at 3."""
    r = Rig()
    live = pa()
    live["status"] = {
        "desiredScale": 3, "actualScale": 3,
        "conditions": [{"type": "Active", "status": "True",
                        "lastTransitionTime": format_time(T0 - 600)},
                       {"type": "ScaleTargetInitialized", "status": "True",
                        "lastTransitionTime": format_time(T0 - 600)}],
    }  # fmt: skip
    r.seed(live)
    r.seed(deployment(3))
    for i in range(3):
        r.seed(pod(i))
    r.seed(sks_status(owned_sks("Serve", 2), proxy_since=None))
    await r.reconcile()
    status = r.engine.multiscaler.status(KEY)
    assert status is not None
    assert (status.active, status.active_since) == (ActiveState.ACTIVE, T0 - 600)
    r.scrape.concurrency = 20.0 / 3  # per pod: 20 in all, still 3 pods' worth
    await r.second(4)
    assert r.replicas() == 3
    assert all(w.body[0]["value"] <= 3 for w in r.writes("patch/scale"))
    assert conditions(r.pa())["Active"]["lastTransitionTime"] == format_time(T0 - 600)


async def test_pa_without_revision_labels_is_not_decided(caplog: pytest.LogCaptureFixture) -> None:
    r = rig(labels={})
    await r.ready_sks()
    assert KEY not in r.engine.multiscaler
    assert "label serving.knative.dev/configuration is missing" in caplog.text


def test_kpa_class_constant() -> None:
    assert KPA_CLASS == "kpa.autoscaling.knative.dev"


@pytest.mark.parametrize(
    ("change", "enqueued"),
    [
        pytest.param("nothing", False, id="all-agrees-no-pass"),
        pytest.param("forged-replicas", True, id="target-moved"),
        pytest.param("new-decision", True, id="decision-moved"),
    ],
)
async def test_tick_enqueues_only_when_something_disagrees(change: str, enqueued: bool) -> None:
    r = rig()
    await r.ready_sks()
    r.scrape.concurrency = 20.0
    await r.second(4)  # decided and reconciled at 3
    assert r.replicas() == 3
    if change == "forged-replicas":
        r.seed(deployment(9))
    elif change == "new-decision":
        r.scrape.concurrency = 80.0  # 4x: the panic window sees it at the next tick
    r.clock.now += 2
    await r.engine.scrape_all()
    await r.engine.tick_all(r.clock.now)
    await r.cluster.settle()
    r.rec.queue = WorkQueue("test", r.rec.reconcile)  # only what the tick check adds
    r.rec.on_tick(KEY)
    assert len(r.rec.queue) == int(enqueued)
