"""What every reconciler needs of an object: owner references, names, conditions, timestamps.

Conditions follow knative.dev/pkg's ConditionSet: a condition's ``lastTransitionTime`` moves
only when its status, reason, message or severity change (``set_condition``), the list is kept
sorted by type, and a "living" set's ``Ready`` is the conjunction of its dependents
(``living_ready``): True when all are True, else the first False one's reason and message, else
Unknown with the first Unknown one's. Pure: the caller passes ``now``.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal

from shared.kube.resources import Obj, Resource, annotations_of, labels_of, meta

__all__ = [
    "ConditionStatus",
    "Key",
    "child_name",
    "condition",
    "controller_of",
    "get_condition",
    "is_controlled_by",
    "living_ready",
    "owner_reference",
    "rfc3339",
    "set_condition",
]

ConditionStatus = Literal["True", "False", "Unknown"]
Key = tuple[str, str]  # (namespace, name) of a reconciled object; namespace "" if cluster-scoped
_MAX_NAME: Final = 63  # a Kubernetes name that is also a DNS label
_MD5_HEX: Final = 32


def rfc3339(t: float) -> str:
    """Kubernetes' metav1.Time on the wire: whole seconds, UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def child_name(parent: str, suffix: str) -> str:
    """Knative's kmeta.ChildName: ``parent + suffix``, hashed down to 63 characters.

    E.g. a 60-character Service's first revision keeps 25 characters of its name, then the
    MD5 of the whole name (32 hex digits), then ``-00001``.
    """
    if len(parent) + len(suffix) <= _MAX_NAME:
        return parent + suffix
    digest = hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest()
    return parent[: _MAX_NAME - _MD5_HEX - len(suffix)] + digest + suffix


def owner_reference(owner: Obj, resource: Resource) -> Obj:
    """kmeta.NewControllerRef: the owner as the controlling reference (cascading delete).

    ``resource`` names the owner's kind: list items from a Kubernetes API server carry no
    apiVersion or kind of their own."""
    m = meta(owner)
    return {
        "apiVersion": owner.get("apiVersion") or resource.api_version,
        "kind": owner.get("kind") or resource.kind,
        "name": m.get("name", ""),
        "uid": m.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_of(obj: Obj) -> Obj | None:
    """metav1.GetControllerOf: the owner reference with ``controller: true``, if any."""
    for ref in meta(obj).get("ownerReferences") or ():
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def is_controlled_by(obj: Obj, owner: Obj) -> bool:
    """metav1.IsControlledBy: the controlling reference has the owner's uid."""
    ref = controller_of(obj)
    uid = meta(owner).get("uid")
    return ref is not None and bool(uid) and ref.get("uid") == uid


def get_condition(obj_or_status: Obj | None, type_: str) -> Obj | None:
    """The condition of that type in an object's status (or a status), if any."""
    if not obj_or_status:
        return None
    status = obj_or_status.get("status", obj_or_status)
    for c in (status or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


def condition_status(obj_or_status: Obj | None, type_: str) -> ConditionStatus:
    c = get_condition(obj_or_status, type_)
    status = c.get("status") if c else None
    return "True" if status == "True" else "False" if status == "False" else "Unknown"


def condition(
    type_: str, status: ConditionStatus, reason: str = "", message: str = "", severity: str = ""
) -> Obj:
    """A condition without its time (``set_condition`` stamps it); empty fields left out."""
    c: Obj = {"type": type_, "status": status}
    if severity:
        c["severity"] = severity
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def set_condition(conditions: Sequence[Obj], new: Obj, now: str) -> list[Obj]:
    """``conditions`` with ``new`` in; its transition time kept unless something changed."""
    out: list[Obj] = []
    stamped = dict(new)
    for c in conditions:
        if c.get("type") != new["type"]:
            out.append(c)
            continue
        same = all(c.get(k, "") == new.get(k, "") for k in ("status", "reason", "message"))
        if same and c.get("severity", "") == new.get("severity", ""):
            stamped["lastTransitionTime"] = c.get("lastTransitionTime", now)
    stamped.setdefault("lastTransitionTime", now)
    out.append(stamped)
    out.sort(key=lambda c: str(c.get("type", "")))
    return out


def set_conditions(conditions: Sequence[Obj], news: Iterable[Obj], now: str) -> list[Obj]:
    out = list(conditions)
    for c in news:
        out = set_condition(out, c, now)
    return out


def living_ready(conditions: Sequence[Obj], dependents: Sequence[str]) -> Obj:
    """The ``Ready`` condition a living condition set derives from its dependents."""
    by_type = {c.get("type"): c for c in conditions}
    unknown: Obj | None = None
    for dep in dependents:
        c = by_type.get(dep)
        if c is None or c.get("status") not in ("True", "False"):
            if unknown is None:
                unknown = c if c is not None else {}
            continue
        if c["status"] == "False":
            return condition("Ready", "False", c.get("reason", ""), c.get("message", ""))
    if unknown is not None:
        return condition("Ready", "Unknown", unknown.get("reason", ""), unknown.get("message", ""))
    return condition("Ready", "True")


def merged(base: Mapping[str, str], *more: Mapping[str, str]) -> dict[str, str]:
    out = dict(base)
    for m in more:
        out.update(m)
    return out


def copy_meta_maps(obj: Obj) -> tuple[dict[str, str], dict[str, str]]:
    """Copies of an object's labels and annotations."""
    return dict(labels_of(obj)), dict(annotations_of(obj))


def deep(obj: Obj) -> Obj:
    return copy.deepcopy(obj)


class Conditions:
    """A status' conditions as one reconcile changes them (knative.dev/pkg's ConditionManager).

    ``mark`` records the new state of a condition; ``result(now)`` derives ``Ready`` from the
    living set's dependents and stamps the transition times against the conditions it started
    from, so a condition marked again with the same state keeps its time.
    """

    def __init__(self, existing: Sequence[Obj], dependents: Sequence[str] = ()) -> None:
        self._old = [c for c in existing if isinstance(c, dict) and c.get("type")]
        self._dependents = tuple(dependents)
        self._cur: dict[str, Obj] = {
            str(c["type"]): {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in self._old
        }
        # InitializeConditions: every dependent (and Ready) starts Unknown.
        for type_ in (*self._dependents, "Ready") if self._dependents else ():
            self._cur.setdefault(type_, condition(type_, "Unknown"))

    def mark(
        self,
        type_: str,
        status: ConditionStatus,
        reason: str = "",
        message: str = "",
        severity: str = "",
    ) -> None:
        self._cur[type_] = condition(type_, status, reason, message, severity)

    def status(self, type_: str) -> ConditionStatus:
        c = self._cur.get(type_)
        s = c.get("status") if c else None
        return "True" if s == "True" else "False" if s == "False" else "Unknown"

    def is_true(self, type_: str) -> bool:
        return self.status(type_) == "True"

    def is_false(self, type_: str) -> bool:
        return self.status(type_) == "False"

    def result(self, now: str) -> list[Obj]:
        if self._dependents:
            self._cur["Ready"] = living_ready(list(self._cur.values()), self._dependents)
        return set_conditions(self._old, self._cur.values(), now)
