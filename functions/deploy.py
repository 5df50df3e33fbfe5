"""``knpy func deploy``: the function as a Knative Service, its subscriptions as Triggers.

What is written matches Knative's ``func deploy`` with its default (``knative``) deployer
(knative/func pkg/knative/deployer.go, pkg/deployer/common.go, pkg/k8s/deployer.go):

- the Service is named after the function, labelled ``function.knative.dev/name`` and
  ``/runtime`` and ``boson.dev/function: "true"`` (plus ``deploy.labels``), annotated
  ``function.knative.dev/deployer: knative`` plus ``deploy.annotations``, on the Service and
  its revision template alike;
- ``deploy.options.scale`` becomes Knative's autoscaling annotations on the revision template
  (min -> ``min-scale``, max -> ``max-scale``, metric, target, utilization ->
  ``target-utilization-percentage``; target and utilization written ``%f`` as func writes
  them), ``resources.limits.concurrency`` the revision's ``containerConcurrency``, requests and
  limits the container's resources;
- ``run.envs`` is the container's environment (``{{ env:NAME }}`` read from the deploying
  shell, ``{{ secret:name:key }}`` / ``{{ configMap:name:key }}`` as ``valueFrom`` references);
- liveness and readiness probes are httpGet on port 8080 at ``/health/liveness`` and
  ``/health/readiness`` (or ``deploy.healthEndpoints``); on knpy serve the readiness probe
  only, since its kubelet runs no liveness probes (its webhook refuses the field);
- each ``deploy.subscriptions[i]`` is a Trigger ``<name>-function-trigger-<i>`` on the Broker
  named by its ``source``, filtered by its attributes, subscriber the Service, owned by the
  Service (deleting the Service deletes them).

Where knpy differs, on purpose: an update replaces the Service's spec and the Triggers whole
(func's update leaves a Trigger as it was created, so an edited filter never reaches the
cluster), Triggers of subscriptions removed from func.yaml are deleted, and a Service of the
same name that is not a function's is refused rather than overwritten.

Where the function runs. On ``knpy serve`` (recognised by its ingress Service,
``knative-serving/knpy-ingress``) the container's command is the function host on the
function's source directory (``python -m functions.host DIR``, working directory DIR): the
kubelet runs it as a process, so a deploy needs no build and no registry. Elsewhere (a
cluster) the container is the built image (``--image``, or func.yaml's ``deploy.image`` or
``image``), whose entrypoint is the host (``knpy func build``).

The deploy waits, as func does, until the Service is Ready (a bounded ``--timeout``), and says
why not from the Service's conditions when it fails. ``.func/deploy.json`` records where it
went, for ``knpy func invoke`` (``deployed_url``), ``describe``, ``delete`` and ``logs``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from autoscaler.register import (
    MAX_SCALE_KEY,
    METRIC_KEY,
    MIN_SCALE_KEY,
    TARGET_KEY,
    TARGET_UTILIZATION_PERCENTAGE_KEY,
)
from functions.project import (
    Env,
    FunctionProject,
    ProjectError,
    load,
    source_files,
)
from shared.apiclient import Api, ApiFailure, load_kubeconfig
from shared.kube.resources import BROKERS, KSERVICES, SERVICES, SYSTEM_NAMESPACE, TRIGGERS, Obj
from shared.readiness import Outcome, wait_ready

__all__ = [
    "DEPLOY_FILE",
    "Deployment",
    "deploy",
    "deploy_command",
    "deployed_url",
    "ingress_port",
    "reachable_url",
    "read_deployment",
    "scale_annotations",
    "service_manifest",
    "source_digest",
    "trigger_manifests",
]

NAME_LABEL: Final = "function.knative.dev/name"
RUNTIME_LABEL: Final = "function.knative.dev/runtime"
BOSON_LABEL: Final = "boson.dev/function"
DEPLOYER_ANNOTATION: Final = "function.knative.dev/deployer"
DEPLOYER: Final = "knative"
# knpy's: the revision template's digest of the source a function runs from (source_digest).
SOURCE_DIGEST_ANNOTATION: Final = "knpy.dev/source-digest"
# pkg/k8s/deployer.go: DefaultLivenessEndpoint, DefaultReadinessEndpoint, DefaultHTTPPort.
LIVENESS_PATH: Final = "/health/liveness"
READINESS_PATH: Final = "/health/readiness"
HTTP_PORT: Final = 8080
# func.yaml's deploy.options.scale fields, as the autoscaling annotations the autoscaler reads.
SCALE_KEYS: Final[Mapping[str, str]] = {
    "min": MIN_SCALE_KEY,
    "max": MAX_SCALE_KEY,
    "metric": METRIC_KEY,
    "target": TARGET_KEY,
    "utilization": TARGET_UTILIZATION_PERCENTAGE_KEY,
}
# Annotations the serving webhook owns and refuses to see changed (func keeps the creator).
_KEPT_ANNOTATIONS: Final = ("serving.knative.dev/creator", "serving.knative.dev/lastModifier")
INGRESS_SERVICE: Final = "knpy-ingress"  # controlplane/system.py publishes knpy serve's ingress
DEPLOY_FILE: Final = "deploy.json"
DEFAULT_NAMESPACE: Final = "default"
DEFAULT_KUBECONFIG: Final = Path(".knpy") / "kubeconfig"  # knpy's CLI default (shared/cli.py)
DEFAULT_TIMEOUT_S: Final = 120.0  # func's wait for Ready is two minutes too (DefaultWaitingTimeout)


# -- the objects (pure) --------------------------------------------------------------------------
def scale_annotations(scale: Mapping[str, Any]) -> dict[str, str]:
    """func.yaml's ``deploy.options.scale`` as Knative's autoscaling annotations.

    E.g. ``{min: 0, max: 3, target: 10}`` -> ``min-scale "0"``, ``max-scale "3"``,
    ``target "10.000000"`` (func's ``%d`` and ``%f``).

    Raises:
        ProjectError: a value of the wrong kind (named).
    """
    out: dict[str, str] = {}
    for field_name, key in SCALE_KEYS.items():
        value = scale.get(field_name)
        if value is None:
            continue
        where = f"deploy.options.scale.{field_name}"
        if field_name == "metric":
            if value not in ("concurrency", "rps", "cpu", "memory"):
                raise ProjectError(f"{where}: {value!r}: want concurrency, rps, cpu or memory")
            out[key] = str(value)
        elif field_name in ("min", "max"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ProjectError(f"{where}: {value!r}: want a whole number >= 0")
            out[key] = f"{value:d}"
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ProjectError(f"{where}: {value!r}: want a number > 0")
            out[key] = f"{float(value):f}"
    return out


def function_labels(project: FunctionProject) -> dict[str, str]:
    """GenerateCommonLabels: deploy.labels, then the function's own three."""
    labels: dict[str, str] = {}
    for i, item in enumerate((project.doc.get("deploy") or {}).get("labels") or []):
        key = (item or {}).get("key")
        if not key:
            raise ProjectError(f"deploy.labels[{i}]: a label needs a key")
        labels[str(key)] = _text((item or {}).get("value"))
    labels[BOSON_LABEL] = "true"
    labels[NAME_LABEL] = project.name
    labels[RUNTIME_LABEL] = project.runtime
    domain = project.doc.get("domain")
    if domain:
        labels["func.domain"] = str(domain)
    return labels


def function_annotations(project: FunctionProject) -> dict[str, str]:
    """GenerateCommonAnnotations: the deployer's name, then deploy.annotations."""
    out = {DEPLOYER_ANNOTATION: DEPLOYER}
    for key, value in (project.section("deploy").get("annotations") or {}).items():
        out[str(key)] = _text(value)
    return out


def container_env(envs: Sequence[Env], environ: Mapping[str, str]) -> list[Obj]:
    """``run.envs`` as a container's ``env`` (pkg/k8s ProcessEnvs): plain values, ``{{ env:X }}``
    from ``environ`` now, secret and ConfigMap keys as ``valueFrom``.

    Raises:
        ProjectError: an unset ``env:`` variable, a whole-secret import (not supported here),
            or a reference that does not parse.
    """
    import re

    template = re.compile(r"^\{\{\s*(\w+):([^}]*?)\s*\}\}$")
    out: list[Obj] = []
    for env in envs:
        value = env.value or ""
        match = template.match(value.strip())
        if env.name is None:
            raise ProjectError(
                f"run.envs: an entry without a name ({value!r}) imports a whole Secret or "
                "ConfigMap, which knpy func deploy does not do; name each variable"
            )
        if match is None:
            out.append({"name": env.name, "value": value})
            continue
        kind, ref = match.group(1), match.group(2).strip()
        if kind == "env":
            if ref not in environ:
                raise ProjectError(
                    f"run.envs: {env.name} refers to {{{{ env:{ref} }}}}, and {ref} is not set "
                    "in this shell; export it or change func.yaml"
                )
            out.append({"name": env.name, "value": environ[ref]})
        elif kind in ("secret", "configMap"):
            obj, _, key = ref.partition(":")
            if not obj or not key:
                raise ProjectError(
                    f"run.envs: {env.name} = {value!r}: want {{{{ {kind}:NAME:KEY }}}}"
                )
            selector = "secretKeyRef" if kind == "secret" else "configMapKeyRef"
            out.append({"name": env.name, "valueFrom": {selector: {"name": obj, "key": key}}})
        else:
            raise ProjectError(f"run.envs: {env.name}: unknown reference {value!r}")
    return out


@dataclass(frozen=True, slots=True)
class Runs:
    """How the Service's container runs the function: the host on the source directory
    (``python``: the interpreter's name in the command, which knpy serve's kubelet maps to its
    own) or the image's entrypoint (``source`` False)."""

    image: str
    source: bool
    python: str = "python"
    liveness: bool = True  # knpy serve's kubelet runs no liveness probes, and its webhook says so
    source_digest: str = ""  # source_digest(root) when ``source``: a new revision per change


def source_digest(root: Path) -> str:
    """A digest of the function's files (functions/project.py ``source_files``: what ``knpy func
    run`` reloads on), names and contents.

    Knative's func deploys a new image digest for changed code, so the revision template
    changes and Knative makes a new Revision. From the source directory the template would
    be the same for every edit and the running pod would keep the old code; this digest in
    the template (``SOURCE_DIGEST_ANNOTATION``) plays the image digest's part."""
    h = hashlib.sha256()
    for path in sorted(e.path for e in source_files(root)):
        with contextlib.suppress(OSError):
            content = Path(path).read_bytes()
            h.update(f"{os.path.relpath(path, root)}\0{len(content)}\0".encode())
            h.update(content)
    return h.hexdigest()[:16]


def service_manifest(
    project: FunctionProject, runs: Runs, *, namespace: str, environ: Mapping[str, str]
) -> Obj:
    """The Knative Service ``func deploy`` would write for ``project`` (see the module doc)."""
    deploy = project.section("deploy")
    health = project.section("deploy", "healthEndpoints")
    container: Obj = {"image": runs.image}
    if runs.source:
        container["command"] = [runs.python, "-m", "functions.host", str(project.root)]
        container["workingDir"] = str(project.root)
    env = container_env(project.envs, environ)
    if env:
        container["env"] = env
    if runs.liveness:
        path = health.get("liveness") or LIVENESS_PATH
        container["livenessProbe"] = {"httpGet": {"path": str(path), "port": HTTP_PORT}}
    path = health.get("readiness") or READINESS_PATH
    container["readinessProbe"] = {"httpGet": {"path": str(path), "port": HTTP_PORT}}
    resources = project.section("deploy", "options", "resources")
    limits = dict(resources.get("limits") or {})
    concurrency = limits.pop("concurrency", None)
    requests = {k: str(v) for k, v in (resources.get("requests") or {}).items() if v is not None}
    limits = {k: str(v) for k, v in limits.items() if v is not None}
    if requests or limits:
        container["resources"] = {
            **({"requests": requests} if requests else {}),
            **({"limits": limits} if limits else {}),
        }
    labels = function_labels(project)
    annotations = function_annotations(project)
    spec: Obj = {"containers": [container]}
    if concurrency is not None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 0:
            raise ProjectError(
                f"deploy.options.resources.limits.concurrency: {concurrency!r}: want a whole "
                "number >= 0"
            )
        spec["containerConcurrency"] = concurrency
    if deploy.get("serviceAccountName"):
        spec["serviceAccountName"] = str(deploy["serviceAccountName"])
    if deploy.get("imagePullSecret"):
        spec["imagePullSecrets"] = [{"name": str(deploy["imagePullSecret"])}]
    revision_annotations = {
        **annotations,
        **scale_annotations(project.section("deploy", "options", "scale")),
    }
    if runs.source_digest:
        revision_annotations[SOURCE_DIGEST_ANNOTATION] = runs.source_digest
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": project.name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "template": {
                "metadata": {"labels": dict(labels), "annotations": revision_annotations},
                "spec": spec,
            }
        },
    }


def trigger_name(service: str, index: int) -> str:
    return f"{service}-function-trigger-{index}"


def trigger_manifests(project: FunctionProject, service: Obj) -> list[Obj]:
    """One Trigger per ``deploy.subscriptions`` entry (createTriggers in func's deployer).

    Raises:
        ProjectError: a subscription without a source.
    """
    meta = service.get("metadata") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace") or DEFAULT_NAMESPACE)
    owner: Obj = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "name": name,
        "uid": str(meta.get("uid", "")),
    }
    out: list[Obj] = []
    subscriptions = (project.doc.get("deploy") or {}).get("subscriptions") or []
    for i, sub in enumerate(subscriptions):
        source = (sub or {}).get("source")
        if not source:
            raise ProjectError(f"deploy.subscriptions[{i}]: no source (the Broker's name)")
        filters = {str(k): _text(v) for k, v in ((sub or {}).get("filters") or {}).items()}
        out.append(
            {
                "apiVersion": "eventing.knative.dev/v1",
                "kind": "Trigger",
                "metadata": {
                    "name": trigger_name(name, i),
                    "namespace": namespace,
                    "labels": {NAME_LABEL: project.name},
                    "ownerReferences": [owner],
                },
                "spec": {
                    "broker": str(source),
                    "filter": {"attributes": filters},
                    "subscriber": {
                        "ref": {
                            "apiVersion": "serving.knative.dev/v1",
                            "kind": "Service",
                            "name": name,
                        }
                    },
                },
            }
        )
    return out


def _text(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)


# -- where the function went ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Deployment:
    """``.func/deploy.json``: the API the function was deployed through, and its namespace."""

    kubeconfig: Path
    namespace: str
    name: str

    def api(self) -> Api:
        return load_kubeconfig(self.kubeconfig)


def read_deployment(project: FunctionProject) -> Deployment | None:
    """What the last ``knpy func deploy`` of this directory recorded, or None."""
    try:
        doc = json.loads((project.run_dir / DEPLOY_FILE).read_text())
        return Deployment(Path(doc["kubeconfig"]), str(doc["namespace"]), str(doc["name"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record(project: FunctionProject, dep: Deployment) -> None:
    project.run_dir.mkdir(exist_ok=True)
    doc = {"kubeconfig": str(dep.kubeconfig), "namespace": dep.namespace, "name": dep.name}
    tmp = project.run_dir / (DEPLOY_FILE + ".tmp")
    tmp.write_text(json.dumps(doc) + "\n")
    os.replace(tmp, project.run_dir / DEPLOY_FILE)


def forget(project: FunctionProject) -> None:
    """Drop ``.func/deploy.json`` (after a delete)."""
    with contextlib.suppress(FileNotFoundError):
        (project.run_dir / DEPLOY_FILE).unlink()


def ingress_port(api: Api) -> int | None:
    """knpy serve's ingress port (its ``knpy-ingress`` Service), None when the API is not a
    knpy serve's."""
    service = api.get(SERVICES, SYSTEM_NAMESPACE, INGRESS_SERVICE)
    if service is None:
        return None
    for port in (service.get("spec") or {}).get("ports") or []:
        if isinstance(port.get("port"), int):
            number: int = port["port"]
            return number
    return None


def reachable_url(url: str, port: int | None) -> str:
    """A Service's ``status.url`` with the ingress's port, so it can be dialled from here
    (``http://hello.default.localhost`` -> ``http://hello.default.localhost:8080``)."""
    parts = urlsplit(url)
    if port is None or port == 80 or parts.port is not None or not parts.hostname:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


def deployed_url(project: FunctionProject) -> str | None:
    """The deployed function's URL, for ``knpy func invoke``; None when it is not deployed.

    Raises:
        ProjectError: it was deployed, but the API it went to does not answer.
    """
    dep = read_deployment(project)
    if dep is None:
        return None
    try:
        api = dep.api()
        service = api.get(KSERVICES, dep.namespace, dep.name)
        if service is None:
            return None
        url = str((service.get("status") or {}).get("url") or "")
        return reachable_url(url, ingress_port(api)) if url else None
    except ApiFailure as err:
        raise ProjectError(
            f"function '{project.name}' was deployed through {dep.kubeconfig}: {err}"
        ) from None


# -- deploy --------------------------------------------------------------------------------------
def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _put(api: Api, resource: Any, namespace: str, body: Obj, current: Obj | None) -> str:
    """Create ``body``, or replace ``current`` with it (status and server fields kept)."""
    name = str(body["metadata"]["name"])
    if current is None:
        api.call("POST", resource.path(namespace), body)
        return "created"
    meta = body["metadata"]
    old = current.get("metadata") or {}
    meta["resourceVersion"] = old.get("resourceVersion")
    kept = {k: v for k, v in (old.get("annotations") or {}).items() if k in _KEPT_ANNOTATIONS}
    meta["annotations"] = {**kept, **(meta.get("annotations") or {})}
    api.call("PUT", resource.path(namespace, name), body)
    return "updated"


def deploy(
    project: FunctionProject,
    api: Api,
    *,
    namespace: str,
    image: str | None,
    timeout_s: float,
    environ: Mapping[str, str],
) -> tuple[int, str]:
    """Write the Service, wait until it is Ready, write its Triggers: (exit code, URL).

    Raises:
        ProjectError: func.yaml asks for something that cannot be deployed here.
        ApiFailure: the API refused an object or does not answer.
    """
    port = ingress_port(api)
    on_knpy = port is not None
    image = image or _image_of(project)
    if on_knpy:
        name = image or f"localhost/knpy-func/{project.name}:latest"
        runs = Runs(name, source=True, liveness=False, source_digest=source_digest(project.root))
    elif image:
        runs = Runs(image, source=False)
    else:
        raise ProjectError(
            "this API is not knpy serve's, so the function runs from an image: build one "
            "(knpy func build), push it where the cluster pulls from, and pass --image (or set "
            "image in func.yaml)"
        )
    body = service_manifest(project, runs, namespace=namespace, environ=environ)
    env = body["spec"]["template"]["spec"]["containers"][0].get("env", [])
    if on_knpy and any("valueFrom" in e for e in env):
        raise ProjectError(
            "run.envs names a Secret or ConfigMap key, which knpy serve's kubelet does not "
            "resolve; give the value itself or {{ env:NAME }}"
        )
    current = api.get(KSERVICES, namespace, project.name)
    if (
        current is not None
        and (current["metadata"].get("labels") or {}).get(NAME_LABEL) != project.name
    ):
        raise ProjectError(
            f"a Service '{project.name}' exists in namespace '{namespace}' and is not this "
            "function's (no function.knative.dev/name label); delete it or rename the function"
        )
    verb = _put(api, KSERVICES, namespace, body, current)
    what = "from its source directory" if runs.source else f"from image {runs.image}"
    _say(f"Service '{project.name}' {verb} in namespace '{namespace}' ({what}); waiting for Ready:")
    wait = wait_ready(
        api, KSERVICES, namespace, project.name,
        deadline=time.monotonic() + timeout_s, progress=_say,
    )  # fmt: skip
    if wait.outcome is not Outcome.READY:
        why = {
            Outcome.FAILED: f"is not ready: {wait.failure}",
            Outcome.DELETED: "was deleted while waiting for it",
        }.get(wait.outcome, f"is not ready after {timeout_s:g} s (--timeout)")
        _say(f"Error: function '{project.name}' {why}")
        for line in _conditions(wait.latest or api.get(KSERVICES, namespace, project.name) or {}):
            _say(f"  {line}")
        _say(f"  (knpy func logs -p {project.root} shows what the function printed)")
        return 1, ""
    service = api.get(KSERVICES, namespace, project.name) or wait.latest
    _triggers(project, api, namespace, service)
    url = reachable_url(str((service.get("status") or {}).get("url") or ""), port)
    return 0, url


def _image_of(project: FunctionProject) -> str:
    """func.yaml's deploy.image or image, else the last ``knpy func build``'s."""
    from functions.build import built_image

    named = project.section("deploy").get("image") or project.doc.get("image")
    return str(named or built_image(project))


def _conditions(service: Obj) -> list[str]:
    out = []
    for c in (service.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":  # said already, as the failure
            continue
        text = f"{c.get('type')}: {c.get('status')}"
        if c.get("reason"):
            text += f" {c['reason']}"
        if c.get("message"):
            text += f": {c['message']}"
        out.append(text)
    return out


def _triggers(project: FunctionProject, api: Api, namespace: str, service: Obj) -> None:
    """Make the Triggers match ``deploy.subscriptions``: create, replace, delete the rest."""
    wanted = trigger_manifests(project, service)
    names = {t["metadata"]["name"] for t in wanted}
    for body in wanted:
        name = body["metadata"]["name"]
        current = api.get(TRIGGERS, namespace, name)
        if (
            current is not None
            and (current.get("spec") or {}).get("broker") != body["spec"]["broker"]
        ):
            # A Trigger's broker is immutable (Knative's webhook refuses the change): the
            # subscription at this index moved to another Broker, so its Trigger is made anew.
            api.call("DELETE", TRIGGERS.path(namespace, name))
            current = None
        verb = _put(api, TRIGGERS, namespace, body, current)
        broker = body["spec"]["broker"]
        filters = body["spec"]["filter"]["attributes"]
        shown = ", ".join(f"{k}={v}" for k, v in filters.items()) or "every event"
        _say(f"Trigger '{name}' {verb}: broker '{broker}', {shown}")
        if api.get(BROKERS, namespace, broker) is None:
            _say(f"  note: there is no Broker '{broker}' in namespace '{namespace}' yet")
    for old in api.list(TRIGGERS, namespace, f"{NAME_LABEL}={project.name}"):
        name = str(old["metadata"]["name"])
        if name not in names:
            api.call("DELETE", TRIGGERS.path(namespace, name))
            _say(f"Trigger '{name}' deleted (no longer in deploy.subscriptions)")


def namespace_of(project: FunctionProject, given: str | None) -> str:
    """``--namespace``, else func.yaml's deploy.namespace or namespace, else the last
    deploy's, else default."""
    dep = read_deployment(project)
    return str(
        given
        or project.section("deploy").get("namespace")
        or project.doc.get("namespace")
        or (dep.namespace if dep is not None else "")
        or DEFAULT_NAMESPACE
    )


def kubeconfig_of(project: FunctionProject | None, given: Path | None) -> Path:
    """``--kubeconfig``, else the one the last deploy went through, else knpy's default."""
    if given is not None:
        return given.resolve()
    dep = read_deployment(project) if project is not None else None
    return dep.kubeconfig if dep is not None else DEFAULT_KUBECONFIG.resolve()


def deploy_command(args: argparse.Namespace) -> int:
    """``knpy func deploy`` (functions/cli.py)."""
    project = load(args.path)
    kubeconfig = kubeconfig_of(project, args.kubeconfig)
    namespace = namespace_of(project, args.namespace)
    if args.timeout <= 0:
        raise ProjectError(f"--timeout must be positive, got {args.timeout:g}")
    try:
        api = load_kubeconfig(kubeconfig)
        code, url = deploy(
            project, api, namespace=namespace, image=args.image, timeout_s=args.timeout,
            environ=os.environ,
        )  # fmt: skip
    except ApiFailure as err:
        raise ProjectError(str(err)) from None
    if code == 0:
        _record(project, Deployment(kubeconfig, namespace, project.name))
        print(f"Function deployed in namespace '{namespace}' and exposed at URL:\n   {url}")
    return code
