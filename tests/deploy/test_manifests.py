"""deploy/: valid for Kubernetes 1.34, Knative v1.23's contract kept, knpy's images, least RBAC.

The schemas are kubernetes-validate's copy of Kubernetes' OpenAPI (strict: an unknown field is
an error). The RBAC is checked both ways against what the code calls (tests/deploy/rbac_scan.py
reads it from the activator's and autoscaler's modules): every call is granted, and every grant
is used. The images must be the names images/build.sh gives them.
"""

from __future__ import annotations

import ast
import copy
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from kubernetes_validate import ValidationError

from tests.deploy import rbac_scan

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.34.0"  # Knative Serving v1.23's minimum (knative/pkg version.go)
MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


DOCUMENTS = [(path.name, doc) for path in MANIFESTS for doc in _load(path)]


def _doc(kind: str, name: str) -> dict[str, Any]:
    matches = [d for _, d in DOCUMENTS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} documents"
    return matches[0]


def _container(deployment: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _doc("Deployment", deployment)["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize(
    "document",
    [pytest.param(d, id=f"{f}:{d['kind']}/{d['metadata']['name']}") for f, d in DOCUMENTS],
)
def test_valid_for_kubernetes_1_34(document: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True) == "1.34"


def _misspelt(doc: dict[str, Any]) -> dict[str, Any]:
    bad = copy.deepcopy(doc)
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    return bad


def _port_as_text(doc: dict[str, Any]) -> dict[str, Any]:
    bad = copy.deepcopy(doc)
    bad["spec"]["ports"][0]["port"] = "ninety"
    return bad


@pytest.mark.parametrize(
    ("kind", "name", "spoil"),
    [
        pytest.param("Deployment", "activator", _misspelt, id="unknown-field"),
        pytest.param("Service", "autoscaler", _port_as_text, id="wrong-type"),
    ],
)
def test_validation_rejects_a_spoilt_manifest(kind: str, name: str, spoil: Any) -> None:
    """The same check fails on a broken copy, so the passes above are not vacuous."""
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(spoil(_doc(kind, name)), KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]


def _built_images() -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(ROOT / "images" / "build.sh"), "--print"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return dict(line.split() for line in out.splitlines())


@pytest.mark.parametrize(
    ("component", "where"),
    [
        pytest.param("activator", lambda: _container("activator")["image"], id="activator"),
        pytest.param("autoscaler", lambda: _container("autoscaler")["image"], id="autoscaler"),
        pytest.param(
            "queue-proxy",
            lambda: _doc("ConfigMap", "config-deployment")["data"]["queue-sidecar-image"],
            id="queue-proxy",
        ),
    ],
)
def test_images_are_the_ones_build_sh_makes(component: str, where: Any) -> None:
    assert where() == _built_images()[component]


def _path(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


# Knative Serving v1.23's values (config/core/deployments/*.yaml) that its controller, the
# kubelet and operators rely on.
_C = "spec.template.spec.containers.0."
KNATIVE = [
    ("Deployment", "activator", "spec.selector.matchLabels",
     {"app": "activator", "role": "activator"}),
    ("Deployment", "activator", "spec.template.spec.terminationGracePeriodSeconds", 600),
    ("Deployment", "activator", _C + "readinessProbe.httpGet.port", 8012),
    ("Deployment", "activator", _C + "readinessProbe.periodSeconds", 5),
    ("Deployment", "activator", _C + "readinessProbe.failureThreshold", 5),
    ("Deployment", "activator", _C + "livenessProbe.failureThreshold", 12),
    ("Deployment", "activator", _C + "resources.requests", {"cpu": "300m", "memory": "60Mi"}),
    ("Deployment", "activator", _C + "resources.limits", {"cpu": "1000m", "memory": "600Mi"}),
    ("Service", "activator-service", "spec.selector", {"app": "activator"}),
    ("HorizontalPodAutoscaler", "activator", "spec.maxReplicas", 20),
    ("HorizontalPodAutoscaler", "activator", "spec.metrics.0.resource.target.averageUtilization",
     100),
    ("PodDisruptionBudget", "activator-pdb", "spec.minAvailable", "80%"),
    ("Deployment", "autoscaler", "spec.selector.matchLabels", {"app": "autoscaler"}),
    ("Deployment", "autoscaler", "spec.strategy.rollingUpdate.maxUnavailable", 0),
    ("Deployment", "autoscaler", _C + "readinessProbe.httpGet.port", 8080),
    ("Deployment", "autoscaler", _C + "livenessProbe.failureThreshold", 6),
    ("Deployment", "autoscaler", _C + "resources.limits", {"cpu": "1000m", "memory": "1000Mi"}),
    ("Service", "autoscaler", "spec.selector", {"app": "autoscaler"}),
]


@pytest.mark.parametrize(
    ("kind", "name", "path", "want"),
    [pytest.param(*row, id=f"{row[0]}/{row[1]}:{row[2]}") for row in KNATIVE],
)
def test_knative_contract(kind: str, name: str, path: str, want: Any) -> None:
    assert _path(_doc(kind, name), path) == want


@pytest.mark.parametrize("component", list(rbac_scan.SERVICE_ACCOUNTS), ids=str)
def test_deployment_env_and_account(component: str) -> None:
    """Knative's environment, and the service account the RBAC is bound to."""
    spec = _doc("Deployment", component)["spec"]["template"]["spec"]
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert {"POD_NAME", "POD_IP", "SYSTEM_NAMESPACE"} <= set(env)
    assert env["SYSTEM_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert spec["serviceAccountName"] == rbac_scan.SERVICE_ACCOUNTS[component]
    _doc("ServiceAccount", spec["serviceAccountName"])


RBAC = _load(DEPLOY / "rbac.yaml")


@pytest.mark.parametrize("component", list(rbac_scan.SERVICE_ACCOUNTS), ids=str)
def test_rbac_grants_every_call(component: str) -> None:
    needs = rbac_scan.needs(component)
    assert needs, f"no API call found in {component}'s code: the scan is broken"
    granted = rbac_scan.grants(RBAC, component)
    missing = [n for n in needs if not rbac_scan.covered(n, granted)]
    assert not missing, "\n".join(
        f"{n.group or 'core'} {n.resource} {n.verb} ({n.scope}) at {n.where}" for n in missing
    )


@pytest.mark.parametrize("component", list(rbac_scan.SERVICE_ACCOUNTS), ids=str)
def test_rbac_grants_nothing_unused(component: str) -> None:
    """Least privilege: each grant serves a call, and the ClusterRole only cluster-wide ones."""
    needs = rbac_scan.needs(component)
    unused = []
    for group, resource, verb, scope in sorted(rbac_scan.grants(RBAC, component)):
        users = [n for n in needs if n.key() == (group, resource, verb)]
        if scope == "cluster":
            users = [n for n in users if n.scope == "cluster"]
        if not users:
            unused.append(f"{group or 'core'} {resource} {verb} ({scope})")
    assert not unused, "granted but never called (or cluster-wide for a system call):\n" + (
        "\n".join(unused)
    )


@pytest.mark.parametrize(
    ("code", "scope"),
    [
        pytest.param("informers.informer(PODS)", "cluster", id="informer-all-namespaces"),
        pytest.param(
            "informers.informer(CONFIGMAPS, namespace=cfg.system_namespace)", "system",
            id="informer-system-namespace",
        ),
        pytest.param("client.get(ENDPOINTS, rk.namespace, name)", "cluster", id="user-namespace"),
        pytest.param("client.get(LEASES, self.namespace, name)", "system", id="self-namespace"),
    ],
)
def test_scan_reads_the_namespace(code: str, scope: str) -> None:
    call = ast.parse(code, mode="eval").body
    assert isinstance(call, ast.Call)
    found = list(rbac_scan.needs_of_call(call, rbac_scan.resource_constants(), "case"))
    assert found and {n.scope for n in found} == {scope}
