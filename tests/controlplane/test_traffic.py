"""Traffic resolution, table-tested: splits, tags, latestRevision and target errors."""

from __future__ import annotations

import pytest

from controlplane.model import TrafficTarget
from controlplane.traffic import (
    ConfigurationState,
    MissingTargetError,
    RevisionNotOwnedError,
    RevisionState,
    RevisionTarget,
    TargetError,
    UnreadyConfigurationError,
    UnreadyRevisionError,
    host_name,
    resolve,
    service_route_traffic,
)

CONFIGS = {"hello": ConfigurationState("hello", "hello-00002", "True")}
REVISIONS = {
    "hello-00001": RevisionState("hello-00001", "hello", "hello", "True"),
    "hello-00002": RevisionState("hello-00002", "hello", "hello", "True"),
    "hello-00003": RevisionState("hello-00003", "hello", "hello", "Unknown"),
    "other-00001": RevisionState("other-00001", "other", "other", "True"),
}


def latest(percent: int, tag: str = "") -> TrafficTarget:
    return TrafficTarget(configuration_name="hello", latest_revision=True, percent=percent, tag=tag)


def pinned(name: str, percent: int, tag: str = "") -> TrafficTarget:
    return TrafficTarget(revision_name=name, latest_revision=False, percent=percent, tag=tag)


def rt(name: str, percent: int, tag: str = "", is_latest: bool = False) -> RevisionTarget:
    return RevisionTarget(name, percent, tag, is_latest, "hello")


@pytest.mark.parametrize(
    "traffic, routes",
    [
        pytest.param(
            [latest(100)],
            {"": (rt("hello-00002", 100, is_latest=True),)},
            id="latest-is-latest-ready",
        ),
        pytest.param(
            [latest(80), pinned("hello-00001", 20)],
            {"": (rt("hello-00002", 80, is_latest=True), rt("hello-00001", 20))},
            id="80-20",
        ),
        pytest.param(
            [latest(100), pinned("hello-00001", 0, "old")],
            {
                "": (rt("hello-00002", 100, is_latest=True), rt("hello-00001", 0, "old")),
                "old": (rt("hello-00001", 100, "old"),),
            },
            id="tag-at-zero-gets-its-own-route",
        ),
        pytest.param(
            [latest(50, "current"), pinned("hello-00001", 50, "old")],
            {
                "": (rt("hello-00002", 50, "current", True), rt("hello-00001", 50, "old")),
                "current": (rt("hello-00002", 100, "current", True),),
                "old": (rt("hello-00001", 100, "old"),),
            },
            id="two-tags",
        ),
        pytest.param(
            [latest(60), pinned("hello-00002", 40)],
            {"": (rt("hello-00002", 100, is_latest=True),)},
            id="same-revision-merges-to-100",
        ),
        pytest.param(
            [pinned("hello-00001", 30), pinned("hello-00002", 30), pinned("hello-00001", 40)],
            {"": (rt("hello-00001", 70), rt("hello-00002", 30))},
            id="pinned-twice-consolidates",
        ),
    ],
)
def test_resolve(
    traffic: list[TrafficTarget], routes: dict[str, tuple[RevisionTarget, ...]]
) -> None:
    resolved = resolve(traffic, configurations=CONFIGS, revisions=REVISIONS, service="hello")
    assert dict(resolved.targets) == routes


def test_status_traffic_and_hosts() -> None:
    resolved = resolve(
        [latest(80), pinned("hello-00001", 20, "old")],
        configurations=CONFIGS,
        revisions=REVISIONS,
        service="hello",
    )
    assert resolved.status_traffic("hello", "default") == (
        TrafficTarget(revision_name="hello-00002", latest_revision=True, percent=80),
        TrafficTarget(
            tag="old",
            revision_name="hello-00001",
            latest_revision=False,
            percent=20,
            url="http://old-hello.default.localhost",
        ),
    )
    assert resolved.hosts("hello", "default") == {
        "hello.default.localhost": (
            rt("hello-00002", 80, is_latest=True),
            rt("hello-00001", 20, "old"),
        ),
        "old-hello.default.localhost": (rt("hello-00001", 100, "old"),),
    }
    assert resolved.tags == ("old",)


def test_status_traffic_merges_equal_targets() -> None:
    resolved = resolve(
        [pinned("hello-00001", 50), pinned("hello-00001", 50)],
        configurations=CONFIGS,
        revisions=REVISIONS,
    )
    assert resolved.revision_targets == (rt("hello-00001", 100),)


@pytest.mark.parametrize(
    "traffic, configs, error, message",
    [
        pytest.param(
            [pinned("hello-00009", 100)],
            CONFIGS,
            MissingTargetError,
            'Revision "hello-00009" referenced in traffic not found',
            id="missing-revision",
        ),
        pytest.param(
            [TrafficTarget(configuration_name="nope", latest_revision=True, percent=100)],
            CONFIGS,
            MissingTargetError,
            'Configuration "nope" referenced in traffic not found',
            id="missing-configuration",
        ),
        pytest.param(
            [latest(100)],
            {"hello": ConfigurationState("hello", "", "Unknown")},
            UnreadyConfigurationError,
            'Configuration "hello" has no ready revision yet',
            id="no-ready-revision-yet",
        ),
        pytest.param(
            [pinned("hello-00003", 100)],
            CONFIGS,
            UnreadyRevisionError,
            'Revision "hello-00003" is not ready yet',
            id="pinned-not-ready",
        ),
        pytest.param(
            [pinned("other-00001", 100)],
            CONFIGS,
            RevisionNotOwnedError,
            'Revision "other-00001" belongs to Service "other", not Service "hello"',
            id="revision-of-another-service",
        ),
        pytest.param(
            [pinned("hello-00003", 50), pinned("hello-00009", 50)],
            CONFIGS,
            MissingTargetError,
            'Revision "hello-00009" referenced in traffic not found',
            id="failure-wins-over-not-ready",
        ),
    ],
)
def test_unresolvable(
    traffic: list[TrafficTarget],
    configs: dict[str, ConfigurationState],
    error: type[TargetError],
    message: str,
) -> None:
    with pytest.raises(error) as e:
        resolve(traffic, configurations=configs, revisions=REVISIONS, service="hello")
    assert str(e.value) == message


def test_service_route_traffic_follows_the_services_configuration() -> None:
    assert service_route_traffic(
        [TrafficTarget(latest_revision=True, percent=90), pinned("hello-00001", 10)], "hello"
    ) == (
        TrafficTarget(configuration_name="hello", latest_revision=True, percent=90),
        pinned("hello-00001", 10),
    )


@pytest.mark.parametrize(
    "tag, host",
    [
        pytest.param("", "hello.default.localhost", id="default"),
        pytest.param("old", "old-hello.default.localhost", id="tag"),
    ],
)
def test_host_name(tag: str, host: str) -> None:
    assert host_name("hello", "default", tag) == host
