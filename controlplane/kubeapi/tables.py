"""Server-side printing: the ``meta.k8s.io/v1`` Table kubectl asks for with
``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``.

Columns come from the registry: a CRD-style jsonpath (Knative's additionalPrinterColumns, read
the way apiextensions-apiserver's table convertor reads them) or a builtin printer named
``@...`` (kube-apiserver's printers for pods, deployments, services...). Ages are formatted on
the server with apimachinery's HumanDuration rules, so every kubectl version prints the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from controlplane.kubeapi.registry import Column, Kind
from shared.kube.resources import Obj

__all__ = ["human_duration", "jsonpath", "table", "wants_table"]

_TOKEN = re.compile(
    r"\.([A-Za-z0-9_-]+)"  # .field
    r"|\['((?:[^'\\]|\\.)*)'\]"  # ['key.with\.dots']
    r"|\[\?\(@\.([A-Za-z0-9_]+)\s*==\s*['\"]([^'\"]*)['\"]\)\]"  # [?(@.type=='Ready')]
)


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def jsonpath(obj: Any, path: str) -> Any:
    """The value at a printer-column jsonpath, or None where it is absent."""
    cur = obj
    pos = 0
    while pos < len(path) and cur is not None:
        m = _TOKEN.match(path, pos)
        if m is None:
            return None
        pos = m.end()
        if m.group(1) is not None or m.group(2) is not None:
            name = m.group(1) if m.group(1) is not None else re.sub(r"\\(.)", r"\1", m.group(2))
            cur = cur.get(name) if isinstance(cur, dict) else None
        else:
            field, value = m.group(3), m.group(4)
            items = cur if isinstance(cur, list) else []
            cur = next(
                (i for i in items if isinstance(i, dict) and str(i.get(field)) == value), None
            )
    return cur


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: 45s, 3m20s, 5m, 2h10m, 3d4h, 400d, 2y30d."""
    if seconds < -1:
        return "<invalid>"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m" if s % 60 == 0 else f"{m}m{s % 60}s"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h" if m % 60 == 0 else f"{h}h{m % 60}m"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d" if h % 24 == 0 else f"{h // 24}d{h % 24}h"
    d = h // 24
    if d < 365 * 2:
        return f"{d}d"
    if d < 365 * 8:
        return f"{d // 365}y" if d % 365 == 0 else f"{d // 365}y{d % 365}d"
    return f"{d // 365}y"


def _age(obj: Obj, now: datetime) -> str:
    ts = obj["metadata"].get("creationTimestamp")
    if not ts:
        return "<unknown>"
    try:
        created = datetime.strptime(str(ts), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    return human_duration((now - created).total_seconds())


def _pod_ready(obj: Obj, _now: datetime) -> str:
    total = len((obj.get("spec") or {}).get("containers") or [])
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    return f"{ready}/{total}"


def _pod_status(obj: Obj, _now: datetime) -> str:
    status = obj.get("status") or {}
    reason = str(status.get("reason") or status.get("phase") or "Unknown")
    for s in status.get("containerStatuses") or []:
        state = s.get("state") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or {}
        if waiting.get("reason"):
            reason = str(waiting["reason"])
        elif terminated.get("reason") and reason == "Running":
            reason = str(terminated["reason"])
    if obj["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_restarts(obj: Obj, _now: datetime) -> str:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    return str(sum(int(s.get("restartCount") or 0) for s in statuses))


def _deployment_ready(obj: Obj, _now: datetime) -> str:
    ready = int((obj.get("status") or {}).get("readyReplicas") or 0)
    want = (obj.get("spec") or {}).get("replicas")
    return f"{ready}/{1 if want is None else want}"


def _service_external_ip(obj: Obj, _now: datetime) -> str:
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ips = [str(i.get("ip") or i.get("hostname")) for i in ingress if isinstance(i, dict)]
    ips += [str(ip) for ip in (obj.get("spec") or {}).get("externalIPs") or []]
    if ips:
        return ",".join(ips)
    if (obj.get("spec") or {}).get("type") == "ExternalName":
        return str(obj["spec"].get("externalName", "<none>"))
    return "<none>"


def _service_ports(obj: Obj, _now: datetime) -> str:
    out = []
    for p in (obj.get("spec") or {}).get("ports") or []:
        node = f":{p['nodePort']}" if p.get("nodePort") else ""
        out.append(f"{p.get('port')}{node}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _endpoints(obj: Obj, _now: datetime) -> str:
    pairs: list[str] = []
    for subset in obj.get("subsets") or []:
        ports = [p.get("port") for p in subset.get("ports") or []] or [None]
        for a in subset.get("addresses") or []:
            for port in ports:
                pairs.append(f"{a.get('ip')}:{port}" if port is not None else str(a.get("ip")))
    if not pairs:
        return "<none>"
    more = len(pairs) - 3
    return ",".join(pairs[:3]) + (f" + {more} more..." if more > 0 else "")


def _configmap_data(obj: Obj, _now: datetime) -> int:
    return len(obj.get("data") or {}) + len(obj.get("binaryData") or {})


def _event_last_seen(obj: Obj, now: datetime) -> str:
    ts = obj.get("lastTimestamp") or obj.get("eventTime") or obj.get("firstTimestamp")
    if ts:
        obj = {"metadata": {"creationTimestamp": str(ts)[:19] + "Z"}}
    return _age(obj, now)


def _event_object(obj: Obj, _now: datetime) -> str:
    ref = obj.get("involvedObject") or obj.get("regarding") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _slice_ports(obj: Obj, _now: datetime) -> str:
    return ",".join(str(p.get("port")) for p in obj.get("ports") or []) or "<unset>"


_BUILTINS: dict[str, Callable[[Obj, datetime], Any]] = {
    "@name": lambda obj, _now: obj["metadata"]["name"],
    "@age": _age,
    "@event_last_seen": _event_last_seen,
    "@pod_ready": _pod_ready,
    "@pod_status": _pod_status,
    "@pod_restarts": _pod_restarts,
    "@deployment_ready": _deployment_ready,
    "@service_external_ip": _service_external_ip,
    "@service_ports": _service_ports,
    "@endpoints": _endpoints,
    "@configmap_data": _configmap_data,
    "@event_object": _event_object,
    "@slice_ports": _slice_ports,
}


def _cell(col: Column, obj: Obj, now: datetime) -> Any:
    if col.path.startswith("@"):
        return _BUILTINS[col.path](obj, now)
    value = jsonpath(obj, col.path)
    if value is None:
        return col.default
    if isinstance(value, dict | list):
        return str(value)
    return value


_NAME = Column("Name", "@name")


def _columns(kind: Kind) -> tuple[Column, ...]:
    if any(c.path == "@name" for c in kind.columns):
        return kind.columns
    return (_NAME, *kind.columns)


def _column_defs(kind: Kind) -> list[Obj]:
    cols = []
    for c in _columns(kind):
        if c.path == "@name":
            cols.append({"name": c.name, "type": "string", "format": "name",
                         "description": "Name must be unique within a namespace.",
                         "priority": c.priority})
        else:
            cols.append({"name": c.name, "type": c.type, "format": "",
                         "description": c.name, "priority": c.priority})
    if not kind.columns:
        cols.append({"name": "Age", "type": "date", "format": "", "description": "Age",
                     "priority": 0})
    return cols


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


def table(
    kind: Kind,
    objs: Iterable[Obj],
    resource_version: str,
    include_object: str = "Metadata",
    now: datetime | None = None,
) -> Obj:
    """The Table of ``objs`` with the kind's columns."""
    now = now or datetime.now(UTC)
    rows: list[Obj] = []
    for o in objs:
        cells: list[Any] = [_cell(c, o, now) for c in _columns(kind)]
        if not kind.columns:
            cells.append(_age(o, now))
        row: Obj = {"cells": cells}
        ro = _row_object(o, include_object)
        if ro is not None:
            row["object"] = ro
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": _column_defs(kind),
        "rows": rows,
    }
