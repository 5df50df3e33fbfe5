"""What each component asks of the Kubernetes API, read from its code; and what rbac.yaml grants.

Theory of operation: the component's modules are the first-party modules its entrypoint can
import (images/deps.py's import closure, the same one that decides what goes into its image).
In them every call is read:

- ``<x>.informer(RES, namespace=..., label_selector=...)`` is a list and a watch of RES, across
  all namespaces unless ``namespace`` is given (Knative's components watch only their own
  system namespace per namespace).
- ``<x>.get/list/create/replace/replace_status/patch/delete(RES, namespace, ...)`` is the
  matching verb (replace is ``update``; replace_status is ``update`` on ``RES/status``; a
  ``subresource=`` names ``RES/<sub>``). A call whose resource is not a constant but names a
  subresource (the autoscaler's scale patch on whatever its PodAutoscaler targets) needs
  ``*/<sub>`` in every group, as Knative's own ClusterRole grants it.

RES is any name bound to a ``Resource`` in shared/kube/resources.py. Calls on a variable
resource without a subresource are the generic plumbing (the informer's own list/watch) and are
covered by the informer() calls that start them.

Scope: a Role in the system namespace can only grant what is called there. The namespace
argument is read as text: ``namespace``, ``self.namespace`` or anything with
``system_namespace`` in it is the system namespace (lease.py, the bucket objects, the
ConfigMaps); anything else (``rk.namespace``, ``ns``) may be any namespace and needs the
ClusterRole. That is a convention of the code, not proof: a new call that passes a user
namespace through a variable named ``namespace`` would be misread.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from images import deps
from shared.kube import resources as resources_module
from shared.kube.resources import Resource

Scope = Literal["system", "cluster"]
ROOT = Path(__file__).resolve().parents[2]
# Component -> the service account its Deployment runs as in deploy/.
SERVICE_ACCOUNTS = {"activator": "knpy-activator", "autoscaler": "knpy-autoscaler"}
SYSTEM_NAMESPACE = "knative-serving"
_VERBS = {
    "get": "get",
    "list": "list",
    "create": "create",
    "replace": "update",
    "replace_status": "update",
    "patch": "patch",
    "delete": "delete",
}
_SYSTEM_TEXTS = ("namespace", "self.namespace")


@dataclass(frozen=True, order=True)
class Need:
    """One verb on one resource (``plural`` or ``plural/sub``) of an API group, and where."""

    group: str
    resource: str
    verb: str
    scope: Scope
    where: str = ""

    def key(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)


def resource_constants() -> dict[str, Resource]:
    """Every module-level name in shared/kube/resources.py bound to a Resource."""
    return {
        name: value
        for name, value in vars(resources_module).items()
        if isinstance(value, Resource)
    }


def component_modules(component: str) -> list[Path]:
    """Source files of the first-party modules ``knpy <component>`` can import."""
    # shared.cli only dispatches to the component: it and what only it imports (the knpy
    # subcommands' API calls: send, get, apply) run in a user's shell, not under the
    # component's ServiceAccount.
    roots = [r for r in deps.component_roots(component) if r not in deps.ENTRY_MODULES]
    seen, _ = deps.closure(roots)
    paths = (deps.module_file(m) for m in sorted(seen))
    return [p for p in paths if p is not None]


def _resource_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _namespace_scope(expr: ast.expr | None) -> Scope:
    if expr is None or (isinstance(expr, ast.Constant) and expr.value is None):
        return "cluster"
    text = ast.unparse(expr)
    if text in _SYSTEM_TEXTS or "system_namespace" in text:
        return "system"
    return "cluster"


def needs_of_call(call: ast.Call, constants: dict[str, Resource], where: str) -> Iterator[Need]:
    """The API needs of one call (none when it is not an informer or client call)."""
    func = call.func
    if not isinstance(func, ast.Attribute) or not call.args:
        return
    method = func.attr
    name = _resource_name(call.args[0])
    res = constants.get(name) if name else None
    if method == "informer":
        if res is None:
            return
        ns = _keyword(call, "namespace")
        scope: Scope = "system" if ns is not None and _namespace_scope(ns) == "system" else (
            "cluster"
        )
        for verb in ("list", "watch"):
            yield Need(res.group, res.plural, verb, scope, where)
        return
    if method not in _VERBS:
        return
    sub_expr = _keyword(call, "subresource")
    sub = sub_expr.value if isinstance(sub_expr, ast.Constant) else None
    if method == "replace_status":
        sub = "status"
    ns_expr = call.args[1] if len(call.args) > 1 else _keyword(call, "namespace")
    scope = _namespace_scope(ns_expr)
    if res is None:
        if isinstance(sub, str):
            yield Need("*", f"*/{sub}", _VERBS[method], "cluster", where)
        return
    plural = f"{res.plural}/{sub}" if isinstance(sub, str) else res.plural
    yield Need(res.group, plural, _VERBS[method], scope, where)


def needs(component: str) -> list[Need]:
    """Every API call the component's code makes, one Need per call site and verb."""
    constants = resource_constants()
    found: list[Need] = []
    for path in component_modules(component):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                found.extend(needs_of_call(node, constants, f"{rel}:{node.lineno}"))
    return sorted(found)


def _expand(rules: Iterable[dict[str, Any]], scope: Scope) -> set[tuple[str, str, str, Scope]]:
    return {
        (group, resource, verb, scope)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def grants(documents: Iterable[dict[str, Any]], component: str) -> set[tuple[str, str, str, Scope]]:
    """(group, resource, verb, scope) rbac documents grant the component's service account.

    A ClusterRole bound by a ClusterRoleBinding grants in every namespace ("cluster"); a Role
    bound in the system namespace grants there ("system").
    """
    docs = list(documents)
    account = SERVICE_ACCOUNTS[component]
    roles = {
        (d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Role", "ClusterRole")
    }
    granted: set[tuple[str, str, str, Scope]] = set()
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = binding.get("subjects", [])
        if not any(
            s["kind"] == "ServiceAccount"
            and s["name"] == account
            and s.get("namespace") == SYSTEM_NAMESPACE
            for s in subjects
        ):
            continue
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], ref["name"]))
        if role is None:
            continue
        cluster = binding["kind"] == "ClusterRoleBinding"
        if not cluster and binding["metadata"].get("namespace") != SYSTEM_NAMESPACE:
            continue
        granted |= _expand(role.get("rules", []), "cluster" if cluster else "system")
    return granted


def covered(need: Need, granted: set[tuple[str, str, str, Scope]]) -> bool:
    """Whether a grant allows the need: "*" matches any group or resource (``*/scale`` any
    scale subresource); a Role grant serves only system-namespace needs."""
    for group, resource, verb, scope in granted:
        if scope == "system" and need.scope != "system":
            continue
        if verb not in (need.verb, "*"):
            continue
        if group not in (need.group, "*"):
            continue
        if resource == "*" or resource == need.resource:
            return True
        if resource.startswith("*/") and need.resource.endswith(resource[1:]):
            return True
    return False


def main() -> int:
    for component in SERVICE_ACCOUNTS:
        print(f"== {component}")
        for n in needs(component):
            print(f"  {n.group or 'core':35} {n.resource:28} {n.verb:7} {n.scope:7} {n.where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
