"""A Revision per generation, named as Knative names it, and the latest ready revision."""

from __future__ import annotations

import pytest

from controlplane.controllers.configuration import configuration_status, revision_name
from shared.kube.resources import CONFIGURATIONS, REVISIONS, Obj

from .harness import NOW_TEXT, running


def config(name: str = "hello", generation: int = 1, fixed: str = "", **status: str) -> Obj:
    template: Obj = {"spec": {"containers": [{"image": "x", "command": ["run"]}]}}
    if fixed:
        template["metadata"] = {"name": fixed}
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Configuration",
        "metadata": {"name": name, "namespace": "default", "generation": generation},
        "spec": {"template": template},
        "status": dict(status),
    }


@pytest.mark.parametrize(
    ("obj", "want"),
    [
        pytest.param(config(), "hello-00001", id="first-generation"),
        pytest.param(config(generation=12), "hello-00012", id="twelfth"),
        pytest.param(config(fixed="hello-blue"), "hello-blue", id="template-name"),
        pytest.param(
            config(name="a" * 60),
            "a" * 25
            + "cc7ed669cf88f201c3297c6a91e1d18d"
            + "-00001",  # kmeta.ChildName: MD5 of the whole name
            id="long-name-hashed",
        ),
    ],
)
def test_revision_name(obj: Obj, want: str) -> None:
    assert revision_name(obj) == want
    assert len(revision_name(obj)) <= 63


def rev(name: str, generation: int, ready: str, message: str = "") -> Obj:
    condition: Obj = {"type": "Ready", "status": ready}
    if message:
        condition["message"] = message
    return {
        "metadata": {
            "name": name,
            "labels": {"serving.knative.dev/configurationGeneration": str(generation)},
        },
        "status": {"conditions": [condition]},
    }


@pytest.mark.parametrize(
    ("latest", "revisions", "old_ready", "want_ready", "want_condition"),
    [
        pytest.param(
            rev("h-2", 2, "True"),
            [rev("h-1", 1, "True"), rev("h-2", 2, "True")],
            "h-1",
            "h-2",
            ("True", "", ""),
            id="latest-ready",
        ),
        pytest.param(
            rev("h-2", 2, "Unknown"),
            [rev("h-1", 1, "True"), rev("h-2", 2, "Unknown")],
            "h-1",
            "h-1",
            ("Unknown", "", ""),
            id="latest-deploying-keeps-the-previous",
        ),
        pytest.param(
            rev("h-3", 3, "False", "boom"),
            [rev("h-1", 1, "True"), rev("h-2", 2, "True"), rev("h-3", 3, "False", "boom")],
            "h-1",
            "h-2",
            ("False", "RevisionFailed", 'Revision "h-3" failed with message: boom.'),
            id="latest-failed-newest-ready-before-it",
        ),
        pytest.param(
            rev("h-2", 2, "Unknown"),
            [rev("h-2", 2, "Unknown")],
            "h-1",
            "",
            ("Unknown", "", ""),
            id="previous-ready-deleted",
        ),
    ],
)
def test_configuration_status(
    latest: Obj,
    revisions: list[Obj],
    old_ready: str,
    want_ready: str,
    want_condition: tuple[str, str, str],
) -> None:
    obj = config(latestReadyRevisionName=old_ready)
    status = configuration_status(obj, latest, revisions, NOW_TEXT)
    assert status.get("latestReadyRevisionName", "") == want_ready
    assert status["latestCreatedRevisionName"] == latest["metadata"]["name"]
    (c,) = status["conditions"]
    assert (c["status"], c.get("reason", ""), c.get("message", "")) == want_condition


async def test_a_taken_revision_name_is_refused_as_knative_does() -> None:
    async with running() as env:
        env.cluster.put(
            {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Revision",
                "metadata": {"name": "hello-blue", "namespace": "default"},
                "spec": {"containers": [{"image": "other"}]},
            },
            REVISIONS,
        )
        body = config(fixed="hello-blue")
        del body["status"]
        await env.cluster.create(CONFIGURATIONS, "default", body)
        await env.cluster.settle()
        assert env.get(REVISIONS, "hello-blue")["spec"] == {"containers": [{"image": "other"}]}
        (c,) = env.get(CONFIGURATIONS, "hello")["status"]["conditions"]
        assert (c["status"], c["reason"], c["message"]) == (
            "False",
            "RevisionFailed",
            'Revision creation failed with message: revisions.serving.knative.dev "hello-blue" '
            "already exists.",
        )


async def test_a_standalone_configuration_gets_its_revision() -> None:
    async with running() as env:
        body = config()
        del body["status"]
        await env.cluster.create(CONFIGURATIONS, "default", body)
        await env.cluster.settle()
        rev = env.get(REVISIONS, "hello-00001")
        labels = rev["metadata"]["labels"]
        assert "serving.knative.dev/service" not in labels
        assert labels["serving.knative.dev/routingState"] == "pending"  # no route holds it
        assert rev["metadata"]["annotations"] == {
            "serving.knative.dev/routingStateModified": NOW_TEXT
        }
        status = env.get(CONFIGURATIONS, "hello")["status"]
        assert status["latestCreatedRevisionName"] == "hello-00001"
        assert status["observedGeneration"] == 1
