"""kn's wait, decided without I/O: states of a Service fed in order with the time they came."""

from __future__ import annotations

from typing import Any

import pytest

from shared.kube.resources import CONFIGMAPS, CONFIGURATIONS, KSERVICES, PODS, ROUTES, Resource
from shared.readiness import ERROR_WINDOW_S, Outcome, ReadyWait, waited_for

URL = "http://hello.default.localhost"


def state(
    ready: str,
    message: str = "",
    *,
    generation: int = 1,
    observed: int | None = 1,
    reason: str = "",
    url: str = "",
    **others: str,
) -> dict[str, Any]:
    """A Service as the API sends it: ``others`` are sub-conditions, by type and status."""
    conditions = [{"type": t, "status": s} for t, s in others.items()]
    conditions.append({"type": "Ready", "status": ready, "message": message, "reason": reason})
    status: dict[str, Any] = {"conditions": conditions, "url": url}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"name": "hello", "generation": generation}, "status": status}


WORKING = "The Configuration is still working to reflect the latest desired specification."
FAILED = 'Revision "hello-00001" failed with message: Container failed with: exec: "/x"'


@pytest.mark.parametrize(
    ("states", "outcome", "lines"),
    [
        pytest.param(
            [(0.1, state("Unknown", WORKING)),
             (1.0, state("Unknown", WORKING, ConfigurationsReady="True")),
             (1.2, state("True", url=URL, ConfigurationsReady="True", RoutesReady="True"))],
            Outcome.READY,
            [f"  0.100s {WORKING}", "  1.000s Configuration OK", "  1.200s Route OK",
             "  1.200s Ready"],
            id="ready-with-progress"),
        pytest.param(
            [(0.1, state("True", url=URL, generation=2, observed=1)),
             (0.2, state("True", url=URL, generation=2, observed=None)),
             (0.5, state("Unknown", WORKING, generation=2, observed=2))],
            Outcome.PENDING,
            [f"  0.500s {WORKING}"],
            id="a-state-behind-the-spec-is-skipped"),
        pytest.param(
            [(0.5, state("False", FAILED, reason="RevisionFailed")),
             (0.5 + ERROR_WINDOW_S, state("False", FAILED, reason="RevisionFailed"))],
            Outcome.FAILED,
            [f"  0.500s {FAILED}"],
            id="false-for-the-window-fails"),
        pytest.param(
            [(0.5, state("False", FAILED, reason="RevisionFailed")),
             (1.5, state("True", url=URL))],
            Outcome.READY,
            [f"  0.500s {FAILED}", "  1.500s Ready"],
            id="true-within-the-window-recovers"),
        pytest.param(
            [(0.5, state("False", FAILED, reason="RevisionFailed")),
             (1.0, state("Unknown", WORKING)),
             (0.5 + ERROR_WINDOW_S, state("Unknown", WORKING))],
            Outcome.FAILED,
            [f"  0.500s {FAILED}", f"  1.000s {WORKING}"],
            id="unknown-does-not-stop-the-window-as-in-kn"),
    ],
)  # fmt: skip
def test_ready_wait(
    states: list[tuple[float, dict[str, Any]]], outcome: Outcome, lines: list[str]
) -> None:
    wait = ReadyWait("service", "hello", started=0.0)
    seen = [line for now, obj in states for line in wait.observe(obj, now)]
    assert (wait.outcome, seen) == (outcome, lines)
    if outcome is Outcome.READY:
        assert wait.url == URL
    if outcome is Outcome.FAILED:
        assert wait.failure == f"RevisionFailed: {FAILED}"


def test_a_failure_stands_when_its_window_passes_without_an_event() -> None:
    wait = ReadyWait("service", "hello", started=0.0)
    wait.observe(state("False", "no", reason="RevisionFailed"), 1.0)
    assert wait.wake_at() == 1.0 + ERROR_WINDOW_S
    wait.check(1.0 + ERROR_WINDOW_S - 0.01)
    assert wait.outcome is Outcome.PENDING
    wait.check(1.0 + ERROR_WINDOW_S)
    assert (wait.outcome, wait.failure, wait.wake_at()) == (
        Outcome.FAILED, "RevisionFailed: no", None,
    )  # fmt: skip


def test_an_addressable_url_and_a_decided_wait_ignores_later_states() -> None:
    wait = ReadyWait("broker", "default", started=0.0)
    broker = state("True")
    broker["status"]["address"] = {"url": "http://broker.example/default/default"}
    del broker["status"]["url"]
    wait.observe(broker, 0.3)
    assert (wait.outcome, wait.url) == (Outcome.READY, "http://broker.example/default/default")
    assert wait.observe(state("False", "later"), 5.0) == []
    wait.time_out()
    wait.deleted()
    assert wait.outcome is Outcome.READY


@pytest.mark.parametrize(
    ("resource", "waited"),
    [
        pytest.param(KSERVICES, True, id="ksvc"),
        pytest.param(CONFIGURATIONS, True, id="configuration"),
        pytest.param(ROUTES, True, id="route"),
        pytest.param(Resource("eventing.knative.dev", "v1", "brokers", "Broker"), False,
                     id="broker-as-kn"),
        pytest.param(CONFIGMAPS, False, id="configmap"),
        pytest.param(PODS, False, id="pod"),
        pytest.param(Resource("notserving.knative.dev", "v1", "things", "Thing"), False,
                     id="look-alike-group"),
    ],
)  # fmt: skip
def test_which_kinds_are_waited_for(resource: Resource, waited: bool) -> None:
    assert waited_for(resource) is waited
