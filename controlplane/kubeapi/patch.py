"""The three patch types: JSON merge patch (RFC 7386) and JSON patch (RFC 6902), from
shared/kube/patch.py, and Kubernetes' strategic merge patch, pure functions over JSON values.

Strategic merge patch is the subset kubectl apply needs for core types: maps merge, ``null``
deletes, lists of objects with a known merge key merge element by element (containers, volumes
and env by ``name``, container ports by ``containerPort``, service ports by ``port``...), lists
of primitives with a merge strategy (``finalizers``) take the union, other lists are replaced;
the directives ``$patch: replace|delete``, ``$deleteFromPrimitiveList/<f>``,
``$setElementOrder/<f>`` and ``$retainKeys`` are understood (the last two only stripped, since
element order and retained keys follow from the merge here). Merge keys are looked up by field
name, not by Go type, which is the same for every type knpy serves.
"""

from __future__ import annotations

from typing import Any

from shared.kube.patch import PatchError, clone, json_patch, merge_patch

__all__ = ["PatchError", "clone", "json_patch", "merge_patch", "strategic_merge_patch"]


# -- strategic merge patch -------------------------------------------------------------------
# Field name -> merge key, for lists of objects with patchStrategy "merge" in the core types.
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "ports": "port",  # containerPort for container ports: chosen by the elements themselves
}
# Lists of primitives with patchStrategy "merge": a set union.
_MERGE_PRIMITIVES = frozenset({"finalizers"})
_PATCH = "$patch"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_ORDER = "$setElementOrder/"
_RETAIN = "$retainKeys"


def _merge_key(field: str, items: list[Any]) -> str | None:
    key = _MERGE_KEYS.get(field)
    if key == "port" and any(isinstance(i, dict) and "containerPort" in i for i in items):
        return "containerPort"
    return key


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch (see the module docstring); like ``merge_patch`` the
    result shares untouched subtrees with ``target``, which is not changed."""
    result = _smp_map(target if isinstance(target, dict) else {}, patch)
    return {} if result is None else result


def _smp_map(target: dict[str, Any], patch: Any) -> dict[str, Any] | None:
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be an object")
    directive = patch.get(_PATCH)
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: clone(v) for k, v in patch.items() if k != _PATCH}
    if directive is not None:
        raise PatchError(f"unknown patch directive {directive!r}")
    out = dict(target)
    for k, v in patch.items():
        if k in (_PATCH, _RETAIN) or k.startswith(_ORDER):
            continue
        if k.startswith(_DELETE_PRIMITIVE):
            field = k[len(_DELETE_PRIMITIVE) :]
            drop = v if isinstance(v, list) else []
            cur = out.get(field)
            if isinstance(cur, list):
                out[field] = [x for x in cur if x not in drop]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            cur = out.get(k)
            merged = _smp_map(cur if isinstance(cur, dict) else {}, v)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        elif isinstance(v, list):
            out[k] = _smp_list(k, out.get(k), v)
        else:
            out[k] = v
    return out


def _smp_list(field: str, target: Any, patch: list[Any]) -> list[Any]:
    cur = target if isinstance(target, list) else []
    if any(isinstance(i, dict) and i.get(_PATCH) == "replace" for i in patch):
        return [clone(i) for i in patch if not (isinstance(i, dict) and _PATCH in i)]
    if field in _MERGE_PRIMITIVES:
        out = list(cur)
        out.extend(clone(x) for x in patch if x not in out)
        return out
    key = _merge_key(field, patch + cur)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return [clone(i) for i in patch]
    out = [clone(i) for i in cur]
    for item in patch:
        if key not in item:
            raise PatchError(f"map in list {field!r} lacks its merge key {key!r}")
        idx = next(
            (n for n, o in enumerate(out) if isinstance(o, dict) and o.get(key) == item[key]),
            None,
        )
        if item.get(_PATCH) == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            merged = _smp_map({}, item)
            if merged is not None:
                out.append(merged)
        else:
            merged = _smp_map(out[idx], item)
            if merged is None:
                del out[idx]
            else:
                out[idx] = merged
    return out
