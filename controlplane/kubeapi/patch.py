"""The three patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes'
strategic merge patch, pure functions over JSON values.

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

__all__ = ["PatchError", "clone", "json_patch", "merge_patch", "strategic_merge_patch"]


def clone(value: Any) -> Any:
    """A deep copy of a JSON value, several times faster than ``copy.deepcopy`` (no memo,
    no type dispatch beyond dict and list)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


class PatchError(ValueError):
    """The patch cannot be applied (a failed ``test``, a missing path...): 422."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` removes, anything else replaces.

    The result shares the subtrees the patch does not touch with ``target``: stored objects
    are never changed in place, so that is safe and saves copying whole objects.
    """
    if not isinstance(patch, dict):
        return clone(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# -- JSON patch ------------------------------------------------------------------------------
def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if token == "-" and for_add:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"invalid array index {token!r}")
    i = int(token)
    limit = len(container) if for_add else len(container) - 1
    if i > limit:
        raise PatchError(f"array index {i} out of range")
    return i


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError(f"path {path!r} not found: missing {t!r}")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(cur, t, for_add=False)]
        else:
            raise PatchError(f"path {path!r} not found")
    return cur


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path!r} not found")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_add=False)]
    raise PatchError(f"path {path!r} not found")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise PatchError(f"cannot add at {path!r}")
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path!r} not found")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, for_add=False)]
    else:
        raise PatchError(f"path {path!r} not found")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 on a copy of ``target``.

    Raises:
        PatchError: an operation fails (a ``test`` mismatch, a missing path, a bad op).
    """
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = clone(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        kind, path = op["op"], str(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {kind!r} needs a value")
        if kind == "add":
            doc = _add(doc, path, clone(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            if _pointer(path):
                doc = _add(_remove(doc, path), path, clone(op["value"]))
            else:
                doc = clone(op["value"])
        elif kind in ("move", "copy"):
            src = str(op.get("from", ""))
            value = clone(_get(doc, src))
            if kind == "move":
                doc = _remove(doc, src)
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return doc


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
            field = k[len(_DELETE_PRIMITIVE):]
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
