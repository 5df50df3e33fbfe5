"""The local platform's state: Knative resources in one SQLite file under the state dir.

Theory of operation
-------------------
The store plays Knative's API server, webhook and the reconcilers that only write objects
(service, configuration), synchronously, inside ``apply``:

- ``apply(resources)`` opens one transaction and takes the documents in order. Each is
  defaulted, validated (``validation.field_errors``, plus the update checks against what is
  stored) and, when good, written at once, so that a later document sees an earlier one (a
  config-defaults ConfigMap changes the limits for the Services after it). Every bad document
  is reported, and if there is any, the transaction is rolled back: nothing of the file is
  applied.
- A Service owns a Configuration and a Route of its name (Knative's MakeConfiguration and
  MakeRoute). A Configuration whose template changes (compared canonically, after defaults)
  takes the next generation and makes a Revision named ``<config>-<generation:05d>``
  (``hello-00001``), or the name the user fixed in ``template.metadata.name``. Revisions are
  immutable: a fixed name that already names another template is refused, as Knative's
  "already exists".
- Status is derived when read, from the revisions' Ready conditions (set by the platform with
  ``set_revision_status``): a configuration's latest ready revision is its newest ready one,
  and a route's traffic is resolved by ``traffic.resolve``.

Everything is read from SQLite on each call, so a reopened store is the same store. Objects
are kept as their Knative JSON (``model.to_dict``), one row each, with the owner and a
revision's generation beside them for cascading deletes and history.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from shared.seams import RevisionKey

from . import traffic as tr
from .defaults import DefaultsConfig, set_defaults
from .model import (
    CONFIG_AUTOSCALER,
    CONFIG_DEFAULTS,
    CONFIGMAP_NAMESPACE,
    CONFIGURATION_GENERATION_LABEL,
    CONFIGURATION_LABEL,
    SERVICE_LABEL,
    Condition,
    ConfigMap,
    Configuration,
    ConfigurationSpec,
    ConfigurationStatus,
    FieldError,
    ObjectMeta,
    Problem,
    Resource,
    Revision,
    RevisionStatus,
    Route,
    RouteSpec,
    RouteStatus,
    Service,
    ServiceStatus,
    ValidationError,
    canonical,
    describe,
    from_dict,
    parse_documents,
    to_dict,
)
from .validation import (
    AnnotationCheck,
    ConfigMapCheck,
    ValidationContext,
    check_autoscaler_config,
    check_autoscaling_annotations,
    field_errors,
    update_errors,
)

__all__ = ["Applied", "ApplyResult", "Outcome", "Store", "child_name"]

DB_FILE: Final = "knpy.sqlite3"
_SCHEMA_VERSION: Final = 1
_MAX_NAME: Final = 63  # a Kubernetes name that is also a DNS label
_MD5_HEX: Final = 32

R = TypeVar("R", bound=Resource)


class Outcome(enum.Enum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Applied:
    kind: str
    namespace: str
    name: str
    outcome: Outcome

    def __str__(self) -> str:
        group = "" if self.kind == "ConfigMap" else ".serving.knative.dev"
        return f"{self.kind.lower()}{group}/{self.name} {self.outcome.value}"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What ``apply`` did, one ``Applied`` per document, and the revisions it made."""

    applied: tuple[Applied, ...]
    revisions_created: tuple[RevisionKey, ...]

    def lines(self) -> list[str]:
        """kubectl's lines: ``service.serving.knative.dev/hello created``."""
        return [str(a) for a in self.applied]


def child_name(parent: str, suffix: str) -> str:
    """Knative's kmeta.ChildName: ``parent + suffix``, hashed down to 63 characters.

    E.g. a 60-character Service's first revision keeps 25 characters of its name, then the
    MD5 of the whole name (32 hex digits), then ``-00001``.
    """
    if len(parent) + len(suffix) <= _MAX_NAME:
        return parent + suffix
    digest = hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest()
    return parent[: _MAX_NAME - _MD5_HEX - len(suffix)] + digest + suffix


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _condition(
    type_: str, status: tr.ConditionStatus, reason: str = "", message: str = ""
) -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=message)


def _with_condition(
    conditions: tuple[Condition, ...],
    type_: str,
    true: bool,
    reason: str,
    message: str,
    now: str,
) -> tuple[Condition, ...]:
    """``conditions`` with ``type_`` set; its transition time moves only if its status does.

    A condition keeps its place; a new Ready goes first, any other new one last.
    """
    new: tr.ConditionStatus = "True" if true else "False"
    old = next((c for c in conditions if c.type == type_), None)
    if old is not None and (old.status, old.reason, old.message) == (new, reason, message):
        return conditions
    since = now if old is None or old.status != new else old.last_transition_time
    condition = Condition(type_, new, reason, message, since)
    if old is not None:
        return tuple(condition if c is old else c for c in conditions)
    return (condition, *conditions) if type_ == "Ready" else (*conditions, condition)


def _ready_of(conditions: Sequence[Condition]) -> tr.ConditionStatus:
    for c in conditions:
        if c.type == "Ready" and c.status in ("True", "False"):
            return "True" if c.status == "True" else "False"
    return "Unknown"


class Store:
    """Services, Configurations, Routes, Revisions and ConfigMaps in ``<state_dir>/knpy.sqlite3``.

    Args:
        state_dir: created if missing.
        clock: Unix time for creation timestamps and condition transitions.
        check_autoscaling_annotations, check_autoscaler_config: the validation of
            ``autoscaling.knative.dev/*`` annotations and of config-autoscaler; the
            autoscaler's own by default, None to skip it.
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        check_autoscaling_annotations: AnnotationCheck | None = check_autoscaling_annotations,
        check_autoscaler_config: ConfigMapCheck | None = check_autoscaler_config,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / DB_FILE
        self._clock = clock
        self._checks = (check_autoscaling_annotations, check_autoscaler_config)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA_VERSION):
            raise RuntimeError(
                f"{self.path}: schema version {version}, knpy knows {_SCHEMA_VERSION}"
            )
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS objects (
                kind TEXT NOT NULL,
                namespace TEXT NOT NULL,
                name TEXT NOT NULL,
                owner TEXT NOT NULL DEFAULT '',      -- the owning Service or Configuration
                generation INTEGER NOT NULL DEFAULT 0, -- a revision's configuration generation
                body TEXT NOT NULL,                  -- the Knative JSON (model.to_dict)
                PRIMARY KEY (kind, namespace, name)
            );
            CREATE INDEX IF NOT EXISTS objects_owner ON objects (kind, namespace, owner);
            """
        )
        self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def __repr__(self) -> str:
        counts = dict(
            self._db.execute("SELECT kind, COUNT(*) FROM objects GROUP BY kind").fetchall()
        )
        parts = [str(self.path), *(f"{k.lower()}s={n}" for k, n in sorted(counts.items()))]
        return f"<Store {' '.join(parts)}>"

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rows ------------------------------------------------------------------------------

    def _get(self, cls: type[R], namespace: str, name: str) -> R | None:
        row = self._db.execute(
            "SELECT body FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
            (cls.KIND, namespace, name),
        ).fetchone()
        return None if row is None else self._load(cls, row[0])

    def _owner(self, kind: str, namespace: str, name: str) -> str | None:
        row = self._db.execute(
            "SELECT owner FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
            (kind, namespace, name),
        ).fetchone()
        return None if row is None else str(row[0])

    def _list(
        self, cls: type[R], namespace: str | None = None, owner: str | None = None
    ) -> list[R]:
        query = "SELECT body FROM objects WHERE kind = ?"
        args: list[object] = [cls.KIND]
        if namespace is not None:
            query += " AND namespace = ?"
            args.append(namespace)
        if owner is not None:
            query += " AND owner = ?"
            args.append(owner)
        query += " ORDER BY namespace, owner, generation, name"
        return [self._load(cls, body) for (body,) in self._db.execute(query, args)]

    @staticmethod
    def _load(cls: type[R], body: str) -> R:
        resource = from_dict(json.loads(body))
        assert isinstance(resource, cls)
        return resource

    def _put(self, resource: Resource, owner: str = "", generation: int = 0) -> None:
        meta = resource.metadata
        self._db.execute(
            "INSERT OR REPLACE INTO objects (kind, namespace, name, owner, generation, body)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                resource.KIND,
                meta.namespace,
                meta.name,
                owner,
                generation,
                json.dumps(to_dict(resource)),
            ),
        )

    def _delete_rows(self, kind: str, namespace: str, name: str) -> bool:
        cur = self._db.execute(
            "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
            (kind, namespace, name),
        )
        return cur.rowcount > 0

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- settings --------------------------------------------------------------------------

    def configmap(self, name: str) -> ConfigMap | None:
        """``config-defaults`` or ``config-autoscaler`` as applied, if it was."""
        return self._get(ConfigMap, CONFIGMAP_NAMESPACE, name)

    def defaults_config(self) -> DefaultsConfig:
        cm = self.configmap(CONFIG_DEFAULTS)
        return DefaultsConfig() if cm is None else DefaultsConfig.from_configmap(cm.data)

    def _context(self) -> ValidationContext:
        autoscaler = self.configmap(CONFIG_AUTOSCALER)
        return ValidationContext(
            defaults=self.defaults_config(),
            autoscaler_data=autoscaler.data if autoscaler else ValidationContext().autoscaler_data,
            check_autoscaling_annotations=self._checks[0],
            check_autoscaler_config=self._checks[1],
        )

    # -- apply -----------------------------------------------------------------------------

    def apply_text(self, text: str) -> ApplyResult:
        """``apply`` of every document of a YAML or JSON text (``knpy apply -f``).

        Raises:
            ValidationError: a document does not parse, or is refused; nothing applied.
        """
        return self.apply(parse_documents(text))

    def apply(self, resources: Sequence[Resource]) -> ApplyResult:
        """Create or update every resource, or none of them.

        Raises:
            ValidationError: every bad document, each with its field paths; nothing applied.
        """
        with self._transaction():
            applied: list[Applied] = []
            created: list[RevisionKey] = []
            problems: list[Problem] = []
            for resource in resources:
                ctx = self._context()  # an earlier config-defaults in this batch counts
                r = _without_status(set_defaults(resource, ctx.defaults))
                errors = field_errors(r, ctx)
                if not errors:
                    errors, outcome = self._apply_one(r, ctx, created)
                if errors:
                    problems.append(Problem(describe(r), tuple(errors)))
                else:
                    meta = r.metadata
                    applied.append(Applied(r.KIND, meta.namespace, meta.name, outcome))
            if problems:
                raise ValidationError(problems)
        return ApplyResult(tuple(applied), tuple(created))

    def _apply_one(
        self, r: Resource, ctx: ValidationContext, created: list[RevisionKey]
    ) -> tuple[list[FieldError], Outcome]:
        if isinstance(r, ConfigMap):
            return [], self._write(r, self._get(ConfigMap, r.metadata.namespace, r.metadata.name))
        if isinstance(r, Service):
            return self._apply_service(r, ctx, created)
        if isinstance(r, Configuration):
            return self._apply_configuration(r, ctx, created)
        if isinstance(r, Route):
            old_route = self._get(Route, r.metadata.namespace, r.metadata.name)
            errors = self._not_owned(r, old_route)
            return errors, Outcome.UNCHANGED if errors else self._write(r, old_route)
        old_rev = self._get(Revision, r.metadata.namespace, r.metadata.name)
        if old_rev is None:
            self._create_revision(r, owner="", generation=0, created=created)
            return [], Outcome.CREATED
        return update_errors(r, old_rev, ctx), Outcome.UNCHANGED

    def _not_owned(self, r: Configuration | Route, old: Resource | None) -> list[FieldError]:
        owner = self._owner(r.KIND, r.metadata.namespace, r.metadata.name) if old else None
        if not owner:
            return []
        message = f'{r.KIND} "{r.metadata.name}" is owned by Service "{owner}"; change the Service'
        return [FieldError(message, ("metadata.name",))]

    def _stamp(self, r: R, old: R | None, spec_changed: bool = True) -> R:
        """``r`` with the server's metadata: uid, generation, creation time (kept from old)."""
        meta = r.metadata
        if old is None:
            meta = dataclasses.replace(
                meta,
                uid=str(uuid.uuid4()),
                generation=1,
                creation_timestamp=_rfc3339(self._clock()),
            )
        else:
            om = old.metadata
            generation = om.generation + (1 if spec_changed else 0)
            meta = dataclasses.replace(
                meta, uid=om.uid, generation=generation, creation_timestamp=om.creation_timestamp
            )
        return dataclasses.replace(r, metadata=meta)

    def _write(self, r: R, old: R | None, owner: str = "") -> Outcome:
        """Write ``r`` over ``old``, bumping the generation when its spec (or data) changed."""
        outcome = _outcome(r, old)
        if outcome is not Outcome.UNCHANGED:
            self._put(self._stamp(r, old, _body(r) != _body(old) if old else True), owner)
        return outcome

    def _apply_service(
        self, s: Service, ctx: ValidationContext, created: list[RevisionKey]
    ) -> tuple[list[FieldError], Outcome]:
        ns, name = s.metadata.namespace, s.metadata.name
        old = self._get(Service, ns, name)
        errors = update_errors(s, old, ctx) if old else []
        for kind in ("Configuration", "Route"):
            owner = self._owner(kind, ns, name)
            if owner is not None and owner != name:
                message = f'{kind} "{name}" already exists and is not owned by this Service'
                errors.append(FieldError(message, ("metadata.name",)))
        if errors:
            return errors, Outcome.UNCHANGED
        labels = {**s.metadata.labels, SERVICE_LABEL: name}
        child_meta = ObjectMeta(
            name=name, namespace=ns, labels=labels, annotations=s.metadata.annotations
        )
        config = Configuration(
            metadata=child_meta, spec=ConfigurationSpec(template=s.spec.template)
        )
        config_errors = self._reconcile_configuration(config, name, created)
        if config_errors:
            return config_errors, Outcome.UNCHANGED
        route_spec = RouteSpec(traffic=tr.service_route_traffic(s.spec.traffic, name))
        route = Route(metadata=child_meta, spec=route_spec)
        self._write(route, self._get(Route, ns, name), owner=name)
        return [], self._write(s, old)

    def _apply_configuration(
        self, c: Configuration, ctx: ValidationContext, created: list[RevisionKey]
    ) -> tuple[list[FieldError], Outcome]:
        old = self._get(Configuration, c.metadata.namespace, c.metadata.name)
        errors = self._not_owned(c, old) or (update_errors(c, old, ctx) if old else [])
        if not errors:
            errors = self._reconcile_configuration(c, "", created)
        return errors, _outcome(c, old)

    def _reconcile_configuration(
        self, c: Configuration, owner: str, created: list[RevisionKey]
    ) -> list[FieldError]:
        """Write ``c``; a changed template makes the next revision (Knative's reconciler)."""
        ns, name = c.metadata.namespace, c.metadata.name
        old = self._get(Configuration, ns, name)
        if old is not None and _body(old) == _body(c):
            self._write(dataclasses.replace(c, status=old.status), old, owner)
            return []
        generation = 1 if old is None else old.metadata.generation + 1
        template = c.spec.template
        rev_name = template.metadata.name or child_name(name, f"-{generation:05d}")
        existing = self._get(Revision, ns, rev_name)
        if existing is not None:
            same = canonical(existing.spec) == canonical(template.spec)
            if self._owner("Revision", ns, rev_name) != name or not same:
                message = f'revisions.serving.knative.dev "{rev_name}" already exists'
                details = "a revision never changes: name the changed template anew"
                return [FieldError(message, ("spec.template.metadata.name",), details)]
        else:
            labels = {
                **template.metadata.labels,
                CONFIGURATION_LABEL: name,
                CONFIGURATION_GENERATION_LABEL: str(generation),
            }
            if service := c.metadata.labels.get(SERVICE_LABEL):
                labels[SERVICE_LABEL] = service
            meta = ObjectMeta(
                name=rev_name,
                namespace=ns,
                labels=labels,
                annotations=template.metadata.annotations,
            )
            revision = Revision(metadata=meta, spec=template.spec)
            self._create_revision(revision, owner=name, generation=generation, created=created)
        stamped = self._stamp(c, old)
        status = ConfigurationStatus(latest_created_revision_name=rev_name)
        self._put(dataclasses.replace(stamped, status=status), owner)
        return []

    def _create_revision(
        self, revision: Revision, *, owner: str, generation: int, created: list[RevisionKey]
    ) -> None:
        status = RevisionStatus(
            observed_generation=1, conditions=(_condition("Ready", "Unknown", "Deploying"),)
        )
        revision = dataclasses.replace(self._stamp(revision, None), status=status)
        self._put(revision, owner=owner, generation=generation)
        created.append(RevisionKey(revision.metadata.namespace, revision.metadata.name))

    # -- delete ----------------------------------------------------------------------------

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete one resource and what it owns (a Service its Configuration, Route and
        revisions; a Configuration its revisions). Returns whether it existed."""
        with self._transaction():
            existed = self._delete_rows(kind, namespace, name)
            if existed and kind == "Service":
                for child in ("Configuration", "Route"):
                    if self._owner(child, namespace, name) == name:
                        self._delete_rows(child, namespace, name)
                        kind = "Configuration"
            if existed and kind == "Configuration":
                self._db.execute(
                    "DELETE FROM objects WHERE kind = 'Revision' AND namespace = ? AND owner = ?",
                    (namespace, name),
                )
            return existed

    def delete_service(self, namespace: str, name: str) -> bool:
        return self.delete("Service", namespace, name)

    # -- status from the platform ----------------------------------------------------------

    def set_revision_status(
        self,
        namespace: str,
        name: str,
        *,
        ready: bool | None = None,
        reason: str = "",
        message: str = "",
        container_healthy: bool | None = None,
        actual_replicas: int | None = None,
        desired_replicas: int | None = None,
    ) -> Revision | None:
        """Record what the platform observed of a revision; None if there is no such revision.

        ``reason`` and ``message`` go with ``ready`` and, when it is False, with
        ``container_healthy`` too: as Knative's Ready, which takes a failed dependent
        condition's reason and message (ContainerHealthy False, "ExitCode1").
        """
        with self._transaction():
            rev = self._get(Revision, namespace, name)
            if rev is None:
                return None
            status = rev.status
            conditions = status.conditions
            now = _rfc3339(self._clock())
            if ready is not None:
                conditions = _with_condition(conditions, "Ready", ready, reason, message, now)
            if container_healthy is not None:
                why = ("", "") if container_healthy else (reason, message)
                conditions = _with_condition(
                    conditions, "ContainerHealthy", container_healthy, *why, now
                )
            status = dataclasses.replace(status, conditions=conditions)
            if actual_replicas is not None:
                status = dataclasses.replace(status, actual_replicas=actual_replicas)
            if desired_replicas is not None:
                status = dataclasses.replace(status, desired_replicas=desired_replicas)
            rev = dataclasses.replace(rev, status=status)
            owner = self._owner("Revision", namespace, name) or ""
            generation = int(rev.metadata.labels.get(CONFIGURATION_GENERATION_LABEL, "0"))
            self._put(rev, owner, generation)
            return rev

    # -- reads -----------------------------------------------------------------------------

    def get_revision(self, namespace: str, name: str) -> Revision | None:
        return self._get(Revision, namespace, name)

    def list_revisions(
        self, namespace: str | None = None, configuration: str | None = None
    ) -> list[Revision]:
        """Revisions, oldest first within a configuration."""
        return self._list(Revision, namespace, configuration)

    def get_configuration(self, namespace: str, name: str) -> Configuration | None:
        c = self._get(Configuration, namespace, name)
        return None if c is None else self._configuration_status(c)

    def list_configurations(self, namespace: str | None = None) -> list[Configuration]:
        return [self._configuration_status(c) for c in self._list(Configuration, namespace)]

    def get_route(self, namespace: str, name: str) -> Route | None:
        r = self._get(Route, namespace, name)
        return None if r is None else self._route_status(r)[0]

    def list_routes(self, namespace: str | None = None) -> list[Route]:
        return [self._route_status(r)[0] for r in self._list(Route, namespace)]

    def get_service(self, namespace: str, name: str) -> Service | None:
        s = self._get(Service, namespace, name)
        return None if s is None else self._service_status(s)

    def list_services(self, namespace: str | None = None) -> list[Service]:
        return [self._service_status(s) for s in self._list(Service, namespace)]

    def resolve_route(self, namespace: str, name: str) -> tr.TrafficConfig | None:
        """The route's resolved traffic; None if there is no such route.

        Raises:
            traffic.TargetError: a target cannot be served now (keep the previous routing).
        """
        r = self._get(Route, namespace, name)
        if r is None:
            return None
        return self._resolve(r)

    def hosts(self) -> dict[str, tuple[tr.RevisionTarget, ...]]:
        """Every resolvable route's hosts and their revisions: the ingress's table."""
        table: dict[str, tuple[tr.RevisionTarget, ...]] = {}
        for r in self._list(Route):
            try:
                resolved = self._resolve(r)
            except tr.TargetError:
                continue
            table.update(resolved.hosts(r.metadata.name, r.metadata.namespace))
        return table

    # -- derived status --------------------------------------------------------------------

    def _revision_states(self, namespace: str) -> dict[str, tr.RevisionState]:
        return {
            rev.metadata.name: tr.RevisionState(
                rev.metadata.name,
                rev.metadata.labels.get(CONFIGURATION_LABEL, ""),
                rev.metadata.labels.get(SERVICE_LABEL, ""),
                _ready_of(rev.status.conditions),
            )
            for rev in self._list(Revision, namespace)
        }

    def _configuration_status(self, c: Configuration) -> Configuration:
        ns, name = c.metadata.namespace, c.metadata.name
        revisions = self._list(Revision, ns, name)
        ready = [r.metadata.name for r in revisions if _ready_of(r.status.conditions) == "True"]
        latest = c.status.latest_created_revision_name
        latest_rev = next((r for r in revisions if r.metadata.name == latest), None)
        state = _ready_of(latest_rev.status.conditions) if latest_rev else "Unknown"
        reason = {"True": "", "False": "RevisionFailed", "Unknown": "Deploying"}[state]
        status = ConfigurationStatus(
            observed_generation=c.metadata.generation,
            conditions=(_condition("Ready", state, reason),),
            latest_created_revision_name=latest,
            latest_ready_revision_name=ready[-1] if ready else "",
        )
        return dataclasses.replace(c, status=status)

    def _resolve(self, r: Route) -> tr.TrafficConfig:
        ns = r.metadata.namespace
        configurations = {
            c.metadata.name: tr.ConfigurationState(
                c.metadata.name,
                c.status.latest_ready_revision_name,
                _ready_of(c.status.conditions),
            )
            for c in map(self._configuration_status, self._list(Configuration, ns))
        }
        return tr.resolve(
            r.spec.traffic,
            configurations=configurations,
            revisions=self._revision_states(ns),
            service=r.metadata.labels.get(SERVICE_LABEL, ""),
        )

    def _route_status(self, r: Route) -> tuple[Route, tr.TargetError | None]:
        ns, name = r.metadata.namespace, r.metadata.name
        try:
            resolved = self._resolve(r)
        except tr.TargetError as e:
            state: tr.ConditionStatus = "False" if e.is_failure else "Unknown"
            condition = _condition("Ready", state, "TrafficNotAssigned", str(e))
            status = RouteStatus(r.metadata.generation, (condition,), tr.route_url(name, ns))
            return dataclasses.replace(r, status=status), e
        status = RouteStatus(
            observed_generation=r.metadata.generation,
            conditions=(_condition("Ready", "True"),),
            url=tr.route_url(name, ns),
            traffic=resolved.status_traffic(name, ns),
        )
        return dataclasses.replace(r, status=status), None

    def _service_status(self, s: Service) -> Service:
        ns, name = s.metadata.namespace, s.metadata.name
        config = self.get_configuration(ns, name)
        route = self._get(Route, ns, name)
        config_ready: tr.ConditionStatus = (
            _ready_of(config.status.conditions) if config else "Unknown"
        )
        route_ready: tr.ConditionStatus = "Unknown"
        route_message = ""
        if route is not None:
            route, error = self._route_status(route)
            route_ready = _ready_of(route.status.conditions)
            route_message = str(error) if error else ""
        ready: tr.ConditionStatus = (
            "True"
            if config_ready == route_ready == "True"
            else "False"
            if "False" in (config_ready, route_ready)
            else "Unknown"
        )
        status = ServiceStatus(
            observed_generation=s.metadata.generation,
            conditions=(
                _condition("ConfigurationsReady", config_ready),
                _condition("Ready", ready),
                _condition("RoutesReady", route_ready, message=route_message),
            ),
            latest_created_revision_name=config.status.latest_created_revision_name
            if config
            else "",
            latest_ready_revision_name=config.status.latest_ready_revision_name if config else "",
            url=tr.route_url(name, ns),
            traffic=route.status.traffic if route else (),
        )
        return dataclasses.replace(s, status=status)


def _without_status(r: R) -> R:
    # As the API server: a client's status is not applied (the platform writes status).
    if isinstance(r, ConfigMap):
        return r
    blank: Any = r  # every resource but a ConfigMap has a status of its own type
    return cast(R, dataclasses.replace(blank, status=type(r.status)()))


def _body(r: Resource) -> str:
    return canonical(r.data if isinstance(r, ConfigMap) else r.spec)


def _outcome(new: Resource, old: Resource | None) -> Outcome:
    if old is None:
        return Outcome.CREATED
    same_meta = (new.metadata.labels, new.metadata.annotations) == (
        old.metadata.labels,
        old.metadata.annotations,
    )
    return Outcome.UNCHANGED if same_meta and _body(new) == _body(old) else Outcome.CONFIGURED
