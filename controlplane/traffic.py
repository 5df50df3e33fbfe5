"""Knative's traffic resolution: a Route's traffic block to concrete revisions and hosts.

Theory of operation (pkg/reconciler/route/traffic/traffic.go)
------------------------------------------------------------
A traffic target names a revision (``revisionName``, pinned) or a configuration
(``configurationName``, following its latest *ready* revision). A Service's route is its
traffic block with ``configurationName`` set to the Service's own name wherever no revision is
pinned (``service_route_traffic``, Knative's MakeRoute).

``resolve`` turns each target into a ``RevisionTarget`` and files it under two keys: the
default route ``""`` gets every target, and a tagged target also gets its tag's route. Within
one route, targets of the same revision merge (their percents add up), and a route left with a
single revision gets 100 % of it: a tag route whose target has ``percent: 0`` still reaches its
revision at ``<tag>-<name>.<namespace>.localhost``. E.g. ``[{latestRevision, 80},
{revisionName: hello-00001, 20, tag: old}]`` with hello-00002 ready resolves to the default
route ``hello-00002 80 / hello-00001 20`` and the route ``old`` = ``hello-00001 100``.

A target that cannot be resolved (a missing configuration or revision, no ready revision yet,
a revision of another Service) does not stop the walk: every target is looked at, and the error
kept is the last true failure, else the first not-ready one, as Knative's deferred target error.
Then nothing is resolved at all, and the caller keeps routing as before.

Pure: the caller passes in what it knows of configurations and revisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final, Literal

from .model import TrafficTarget

__all__ = [
    "DEFAULT_TARGET",
    "LOCAL_DOMAIN",
    "ConditionStatus",
    "ConfigurationState",
    "MissingTargetError",
    "RevisionNotOwnedError",
    "RevisionState",
    "RevisionTarget",
    "TargetError",
    "TrafficConfig",
    "UnreadyConfigurationError",
    "UnreadyRevisionError",
    "host_name",
    "resolve",
    "route_url",
    "service_route_traffic",
]

DEFAULT_TARGET: Final = ""  # the key of the default route among the tag routes
LOCAL_DOMAIN: Final = "localhost"

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True, slots=True)
class RevisionState:
    """What resolution needs of a Revision: its owners' labels and its Ready condition."""

    name: str
    configuration: str = ""  # label serving.knative.dev/configuration
    service: str = ""  # label serving.knative.dev/service
    ready: ConditionStatus = "Unknown"


@dataclass(frozen=True, slots=True)
class ConfigurationState:
    name: str
    latest_ready_revision_name: str = ""
    ready: ConditionStatus = "Unknown"


@dataclass(frozen=True, slots=True)
class RevisionTarget:
    """A traffic target resolved to a revision (Knative's RevisionTarget)."""

    revision_name: str
    percent: int
    tag: str = ""
    latest_revision: bool = False
    configuration_name: str = ""


class TargetError(Exception):
    """A traffic target that cannot be served; ``is_failure`` if it will not heal by waiting."""

    is_failure: bool = True


class MissingTargetError(TargetError):
    def __init__(self, kind: Literal["Configuration", "Revision"], name: str) -> None:
        super().__init__(f'{kind} "{name}" referenced in traffic not found')
        self.kind = kind
        self.name = name


class UnreadyConfigurationError(TargetError):
    def __init__(self, name: str, is_failure: bool) -> None:
        state = "failed" if is_failure else "has no ready revision yet"
        super().__init__(f'Configuration "{name}" {state}')
        self.name = name
        self.is_failure = is_failure


class UnreadyRevisionError(TargetError):
    def __init__(self, name: str, is_failure: bool) -> None:
        super().__init__(f'Revision "{name}" {"failed" if is_failure else "is not ready yet"}')
        self.name = name
        self.is_failure = is_failure


class RevisionNotOwnedError(TargetError):
    def __init__(self, revision: str, service: str, owner: str) -> None:
        if owner:
            text = f'Revision "{revision}" belongs to Service "{owner}", not Service "{service}"'
        else:
            text = f'Revision "{revision}" does not belong to Service "{service}"'
        super().__init__(text)
        self.revision = revision


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    """A resolved route: ``targets`` by route key (``""`` and each tag), in spec order."""

    targets: Mapping[str, tuple[RevisionTarget, ...]]
    # The spec's targets resolved one for one (equal ones merged): a Route's status.traffic.
    revision_targets: tuple[RevisionTarget, ...]

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(k for k in self.targets if k != DEFAULT_TARGET)

    def hosts(
        self, name: str, namespace: str, domain: str = LOCAL_DOMAIN
    ) -> dict[str, tuple[RevisionTarget, ...]]:
        """Each host of the route and the revisions it splits over (percent > 0 only)."""
        return {
            host_name(name, namespace, tag, domain): tuple(t for t in targets if t.percent > 0)
            for tag, targets in self.targets.items()
        }

    def status_traffic(
        self, name: str, namespace: str, domain: str = LOCAL_DOMAIN
    ) -> tuple[TrafficTarget, ...]:
        """status.traffic: revision, percent, latestRevision, and a tag's URL."""
        return tuple(
            TrafficTarget(
                tag=t.tag,
                revision_name=t.revision_name,
                latest_revision=t.latest_revision,
                percent=t.percent,
                url=route_url(name, namespace, t.tag, domain) if t.tag else "",
            )
            for t in self.revision_targets
        )


def host_name(name: str, namespace: str, tag: str = "", domain: str = LOCAL_DOMAIN) -> str:
    """Knative's default domain and tag templates: ``[<tag>-]<name>.<namespace>.<domain>``."""
    return f"{f'{tag}-' if tag else ''}{name}.{namespace}.{domain}"


def route_url(name: str, namespace: str, tag: str = "", domain: str = LOCAL_DOMAIN) -> str:
    return f"http://{host_name(name, namespace, tag, domain)}"


def service_route_traffic(
    traffic: Sequence[TrafficTarget], service: str
) -> tuple[TrafficTarget, ...]:
    """A Service's traffic as its Route's: unpinned targets follow the Service's configuration."""
    return tuple(t if t.revision_name else replace(t, configuration_name=service) for t in traffic)


def resolve(
    traffic: Sequence[TrafficTarget],
    *,
    configurations: Mapping[str, ConfigurationState],
    revisions: Mapping[str, RevisionState],
    service: str = "",
) -> TrafficConfig:
    """Resolve a (defaulted, valid) route traffic block; ``service`` owns the route, if any.

    Raises:
        TargetError: some target cannot be served; see the module docstring for which one.
    """
    by_route: dict[str, list[RevisionTarget]] = {DEFAULT_TARGET: []}
    merged: list[RevisionTarget] = []
    deferred: TargetError | None = None
    for t in traffic:
        try:
            target = _resolve_one(t, configurations, revisions, service)
        except TargetError as e:
            if deferred is None or e.is_failure:
                deferred = e
            continue
        merged = _merge_if_necessary(merged, target)
        by_route[DEFAULT_TARGET].append(target)
        if target.tag:
            by_route.setdefault(target.tag, []).append(target)
    if deferred is not None:
        raise deferred
    targets = {key: _consolidate(ts) for key, ts in by_route.items()}
    return TrafficConfig(MappingProxyType(targets), tuple(merged))


def _resolve_one(
    t: TrafficTarget,
    configurations: Mapping[str, ConfigurationState],
    revisions: Mapping[str, RevisionState],
    service: str,
) -> RevisionTarget:
    latest = bool(t.latest_revision)
    percent = t.percent or 0
    if t.revision_name:
        rev = revisions.get(t.revision_name)
        if rev is None:
            raise MissingTargetError("Revision", t.revision_name)
        if service and rev.service != service:
            raise RevisionNotOwnedError(rev.name, service, rev.service)
        if rev.ready != "True":
            raise UnreadyRevisionError(rev.name, rev.ready == "False")
        if rev.configuration and rev.configuration not in configurations:
            raise MissingTargetError("Configuration", rev.configuration)
        return RevisionTarget(rev.name, percent, t.tag, latest, rev.configuration)
    config = configurations.get(t.configuration_name)
    if config is None:
        raise MissingTargetError("Configuration", t.configuration_name)
    if not config.latest_ready_revision_name:
        raise UnreadyConfigurationError(config.name, config.ready == "False")
    rev = revisions.get(config.latest_ready_revision_name)
    if rev is None:
        raise MissingTargetError("Revision", config.latest_ready_revision_name)
    if rev.ready != "True":
        raise UnreadyRevisionError(rev.name, rev.ready == "False")
    return RevisionTarget(rev.name, percent, t.tag, latest, config.name)


def _merge_if_necessary(targets: list[RevisionTarget], new: RevisionTarget) -> list[RevisionTarget]:
    # Two spec targets with the same tag, revision and latestRevision are one status target.
    for i, t in enumerate(targets):
        if (t.tag, t.revision_name, t.latest_revision) == (
            new.tag,
            new.revision_name,
            new.latest_revision,
        ):
            targets[i] = replace(t, percent=t.percent + new.percent)
            return targets
    targets.append(new)
    return targets


def _consolidate(targets: Sequence[RevisionTarget]) -> tuple[RevisionTarget, ...]:
    by_revision: dict[str, RevisionTarget] = {}
    for t in targets:
        seen = by_revision.get(t.revision_name)
        by_revision[t.revision_name] = (
            t if seen is None else replace(seen, percent=seen.percent + t.percent)
        )
    out = tuple(by_revision.values())
    if len(out) == 1:
        # One revision takes the whole route, whatever its percent in the default route.
        return (replace(out[0], percent=100),)
    return out
