"""Discovery documents (``/version``, ``/api``, ``/apis``, group and group-version lists),
built from the registry. Knative's resources carry their CRDs' short names and categories, so
``kubectl get ksvc`` and ``kubectl get knative`` resolve as in a cluster.
"""

from __future__ import annotations

from controlplane.kubeapi.registry import Kind, Registry
from shared.kube.resources import Obj

__all__ = ["GIT_VERSION", "api_groups", "api_versions", "group", "resource_list", "version"]

# Knative Serving checks the server is at least its minimum Kubernetes version (1.34 for the
# release knpy tracks); "-knpy" says which server this is.
GIT_VERSION = "v1.34.0-knpy"

_SUB_VERBS = ["get", "patch", "update"]


def version() -> Obj:
    return {
        "major": "1",
        "minor": "34",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group_doc(name: str, versions: list[str]) -> Obj:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def api_groups(registry: Registry) -> Obj:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_doc(g, vs) for g, vs in registry.groups().items()],
    }


def group(registry: Registry, name: str) -> Obj | None:
    versions = registry.groups().get(name)
    if versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(name, versions)}


def _entries(kind: Kind) -> list[Obj]:
    r = kind.resource
    main: Obj = {
        "name": r.plural,
        "singularName": kind.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": list(kind.verbs),
    }
    if kind.short_names:
        main["shortNames"] = list(kind.short_names)
    if kind.categories:
        main["categories"] = list(kind.categories)
    out = [main]
    if kind.status:
        out.append({"name": f"{r.plural}/status", "singularName": "", "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": _SUB_VERBS})
    if kind.scale:
        out.append({"name": f"{r.plural}/scale", "singularName": "", "namespaced": r.namespaced,
                    "group": "autoscaling", "version": "v1", "kind": "Scale",
                    "verbs": _SUB_VERBS})
    return out


def resource_list(registry: Registry, group_name: str, version_name: str) -> Obj | None:
    kinds = list(registry.in_group_version(group_name, version_name))
    if not kinds:
        return None
    gv = f"{group_name}/{version_name}" if group_name else version_name
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": [e for k in kinds for e in _entries(k)],
    }
