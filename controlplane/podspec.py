"""Pods on one machine: a Deployment's pod template made runnable on 127.0.0.1, and the
Pod/Deployment status the kubelet writes. Pure: no asyncio, no I/O, time passed in.

Theory of operation. In a cluster every pod has its own IP, so every queue-proxy listens on
Knative's fixed ports (8012 serving, 8022 admin, 9090 autoscaler metrics, 9091 user metrics)
and every app on 8080. Here all pods share 127.0.0.1, so each pod gets its own free port for
every port its containers declare (``containerPort``; a declared ``hostPort`` is kept, which is
how the platform pins its own components' ports). The pod's spec is rewritten with the new
numbers, so whoever reads the Pod from the API finds the real ports where Kubernetes puts them:

* ``spec.containers[].ports[].containerPort`` (names kept: the Endpoints controller resolves a
  Service's named ``targetPort`` per pod, the autoscaler finds ``http-autometric``);
* every environment variable whose value is a moved port and whose name says it is one
  (``PORT``, ``USER_PORT``, ``QUEUE_SERVING_PORT``, ... any name ending in ``PORT``), so the
  app binds ``$PORT`` and the queue-proxy proxies to ``USER_PORT``; the queue-proxy gets
  knpy's QUEUE_ADMIN_PORT / QUEUE_METRICS_PORT / USER_METRICS_PORT for Knative's fixed
  8022 / 9090 / 9091 (Knative's own queue-proxy has them compiled in);
* probe ports (``httpGet``/``tcpSocket`` with a number), and the user's probe that Knative
  hands the queue-proxy as JSON in SERVING_READINESS_PROBE.

E.g. a Knative revision pod declares 8080 (user-port), 8012 (http1), 8022, 9090, 9091; the pod
``hello-00001-deployment-7d9f-x2k4q`` may get 41001, 41002, 41003, 41004, 41005: PORT=41001,
QUEUE_SERVING_PORT=41002, USER_PORT=41001, and Endpoints of its private Service list
127.0.0.1:41002 under the port named ``http``.

A container without a ``command`` runs the local build of a known image (the queue-proxy
sidecar), and ``python`` means the interpreter running knpy; images are not pulled.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from shared.kube.resources import Obj

__all__ = [
    "POD_TEMPLATE_HASH_LABEL",
    "ContainerView",
    "PodView",
    "RolloutPlan",
    "container_argv",
    "deployment_status",
    "localize",
    "pod_conditions_ready",
    "pod_name",
    "pod_status",
    "ports_to_allocate",
    "resolve_env",
    "template_hash",
]

LOOPBACK: Final = "127.0.0.1"
NODE_NAME: Final = "knpy"
# Kubernetes' label on a ReplicaSet's pods: the hash of the template they were made from.
POD_TEMPLATE_HASH_LABEL: Final = "pod-template-hash"
# Kubernetes' safe alphabet for generated name suffixes (no vowels, no look-alikes).
_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
# The queue-proxy sidecar's container name in Knative's revision Deployments.
QUEUE_PROXY: Final = "queue-proxy"
# Local builds of images whose containers come without a command (Knative's queue-proxy image
# has its entrypoint baked in).
LOCAL_ENTRYPOINTS: Final[Mapping[str, tuple[str, ...]]] = {
    QUEUE_PROXY: ("python", "-m", "queueproxy"),
}
_INTERPRETERS: Final = frozenset({"python", "python3"})
# knpy's variables for the queue-proxy ports Knative compiles in, by Knative's fixed number.
QUEUE_PORT_VARIABLES: Final[Mapping[int, str]] = {
    8012: "QUEUE_SERVING_PORT",
    8022: "QUEUE_ADMIN_PORT",
    9090: "QUEUE_METRICS_PORT",
    9091: "USER_METRICS_PORT",
    8080: "USER_PORT",
}
# What the local queue-proxy needs beyond Knative's contract: bind and dial loopback only.
QUEUE_LOCAL_ENV: Final[Mapping[str, str]] = {"QUEUE_BIND_HOST": LOOPBACK, "USER_HOST": LOOPBACK}
_PROBES: Final = ("readinessProbe", "livenessProbe", "startupProbe")


# -- names ---------------------------------------------------------------------------------------
def template_hash(template: Obj) -> str:
    """A short stable hash of a pod template (Kubernetes' pod-template-hash, our own digest)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return _encode(int.from_bytes(digest[:8], "big"), 10)


def pod_name(deployment: str, hash_: str, draw: int) -> str:
    """``<deployment>-<hash>-<5 random>`` as a Deployment's pods are named."""
    return f"{deployment}-{hash_}-{_encode(draw, 5)}"


def _encode(n: int, length: int) -> str:
    out = []
    for _ in range(length):
        n, r = divmod(n, len(_ALPHABET))
        out.append(_ALPHABET[r])
    return "".join(out)


# -- ports ---------------------------------------------------------------------------------------
def ports_to_allocate(spec: Obj) -> tuple[list[int], dict[int, int]]:
    """The declared container ports that need a free local port, and those pinned by
    ``hostPort`` (declared -> host port)."""
    free: list[int] = []
    pinned: dict[int, int] = {}
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            if not isinstance(number, int) or number in pinned or number in free:
                continue
            host = port.get("hostPort")
            if isinstance(host, int) and host > 0:
                pinned[number] = host
            else:
                free.append(number)
    return free, pinned


def localize(spec: Obj, ports: Mapping[int, int]) -> Obj:
    """A copy of a pod spec with every declared port moved as ``ports`` says (see module doc).

    ``ports`` maps each declared port to its local number. The node name is set to knpy's.
    """
    out = copy.deepcopy(spec)
    out["nodeName"] = NODE_NAME
    for container in out.get("containers") or []:
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            if number in ports:
                port["containerPort"] = ports[number]
                port.pop("hostPort", None)
        env = container.get("env") or []
        for var in env:
            value = var.get("value")
            if _is_port_name(str(var.get("name", ""))) and value is not None:
                moved = _moved(value, ports)
                if moved is not None:
                    var["value"] = str(moved)
            if var.get("name") == "SERVING_READINESS_PROBE" and var.get("value"):
                var["value"] = _localize_probe_json(str(var["value"]), ports)
        declared = [p["containerPort"] for p in container.get("ports") or []]
        # Knative gives the user container PORT; a bare Deployment gets it too, so an app
        # that reads $PORT binds its own port and not a neighbour's 8080.
        named_port_var = any(v.get("name") == "PORT" for v in env)
        if container.get("name") != QUEUE_PROXY and declared and not named_port_var:
            container["env"] = env = [*env, {"name": "PORT", "value": str(declared[0])}]
        if container.get("name") == QUEUE_PROXY:
            have = {v.get("name") for v in env}
            extra = [
                {"name": name, "value": str(ports[number])}
                for number, name in QUEUE_PORT_VARIABLES.items()
                if number in ports and name not in have
            ]
            extra += [{"name": k, "value": v} for k, v in QUEUE_LOCAL_ENV.items() if k not in have]
            container["env"] = [*env, *extra]
        for probe_name in _PROBES:
            probe = container.get(probe_name)
            if isinstance(probe, dict):
                _localize_probe(probe, ports)
    return out


def _is_port_name(name: str) -> bool:
    return name.endswith("PORT")


def _moved(value: object, ports: Mapping[int, int]) -> int | None:
    try:
        number = int(str(value))
    except ValueError:
        return None
    return ports.get(number)


def _localize_probe(probe: Obj, ports: Mapping[int, int]) -> None:
    for action in ("httpGet", "tcpSocket", "grpc"):
        handler = probe.get(action)
        if isinstance(handler, dict) and isinstance(handler.get("port"), int):
            handler["port"] = ports.get(handler["port"], handler["port"])


def _localize_probe_json(text: str, ports: Mapping[int, int]) -> str:
    """Knative's SERVING_READINESS_PROBE: the user's probe, aimed at the pod's local ports."""
    try:
        probe = json.loads(text)
    except ValueError:
        return text
    if not isinstance(probe, dict):
        return text
    _localize_probe(probe, ports)
    for action in ("httpGet", "tcpSocket"):
        handler = probe.get(action)
        if isinstance(handler, dict) and not handler.get("host"):
            handler["host"] = LOOPBACK
    return json.dumps(probe, separators=(",", ":"))


def named_port(container: Obj, port: object) -> int | None:
    """A probe's port: a number as is, a name through the container's ports."""
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port and isinstance(p.get("containerPort"), int):
            number: int = p["containerPort"]
            return number
    try:
        return int(str(port))
    except ValueError:
        return None


# -- processes -----------------------------------------------------------------------------------
def container_argv(container: Obj, python: str) -> list[str]:
    """The argv of a container: command + args, or the local entrypoint of a known image.

    Raises:
        ValueError: no command and no local build of the container (the message says so).
    """
    command = [str(c) for c in container.get("command") or []]
    if not command:
        entry = LOCAL_ENTRYPOINTS.get(str(container.get("name", "")))
        if entry is None:
            image = container.get("image", "")
            raise ValueError(
                f"container {container.get('name')!r} (image {image!r}) has no command, and"
                " knpy runs no images: give it the command that starts the app"
            )
        command = list(entry)
    if command[0] in _INTERPRETERS:
        command[0] = python
    return [*command, *(str(a) for a in container.get("args") or [])]


def resolve_env(container: Obj, pod: Obj) -> dict[str, str]:
    """A container's environment: values, and ``valueFrom.fieldRef`` read from the pod
    (Kubernetes' downward API: metadata.name/namespace/uid, labels/annotations, status.podIP,
    spec.nodeName ...); ``$(VAR)`` references to earlier variables expanded as the kubelet does.
    """
    out: dict[str, str] = {}
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        if "value" in var:
            out[name] = _expand(str(var["value"]), out)
            continue
        field_ref = (var.get("valueFrom") or {}).get("fieldRef") or {}
        path = field_ref.get("fieldPath")
        if isinstance(path, str):
            out[name] = _field(pod, path)
        else:
            out[name] = ""
    return out


def _expand(value: str, env: Mapping[str, str]) -> str:
    if "$(" not in value:
        return value
    for name, known in env.items():
        value = value.replace(f"$({name})", known)
    return value


def _field(pod: Obj, path: str) -> str:
    meta = pod.get("metadata") or {}
    if path.startswith(("metadata.labels['", "metadata.annotations['")):
        which, _, rest = path.partition("['")
        mapping = meta.get(which.split(".")[1]) or {}
        return str(mapping.get(rest.rstrip("']"), ""))
    fixed = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": NODE_NAME,
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
        "status.podIP": LOOPBACK,
        "status.hostIP": LOOPBACK,
    }
    value = fixed.get(path)
    return "" if value is None else str(value)


# -- status --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ContainerView:
    """One container as the kubelet knows it, for containerStatuses."""

    name: str
    image: str
    ready: bool
    restart_count: int
    started_at: str = ""  # running since (RFC 3339); "" when not running
    waiting_reason: str = ""  # ContainerCreating, CrashLoopBackOff, ...
    waiting_message: str = ""
    terminated: Obj | None = None  # the current terminated state (exitCode, reason, ...)
    last_terminated: Obj | None = None  # lastState.terminated


@dataclass(frozen=True, slots=True)
class PodView:
    """A pod's state for its status: start time, containers, and when conditions last moved."""

    start_time: str
    containers: tuple[ContainerView, ...]
    ready_since: str = ""  # lastTransitionTime of Ready/ContainersReady
    scheduled_at: str = ""


def pod_status(view: PodView) -> Obj:
    """The Pod's ``status`` as a kubelet writes it."""
    ready = bool(view.containers) and all(c.ready for c in view.containers)
    running = any(c.started_at for c in view.containers)
    since = view.ready_since or view.start_time
    scheduled = view.scheduled_at or view.start_time

    def cond(kind: str, ok: bool, at: str) -> Obj:
        c: Obj = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": at}
        if not ok:
            c["reason"] = "ContainersNotReady"
            waiting = [x.name for x in view.containers if not x.ready]
            c["message"] = f"containers with unready status: [{' '.join(waiting)}]"
        return c

    return {
        "phase": "Running" if running else "Pending",
        "hostIP": LOOPBACK,
        "podIP": LOOPBACK,
        "podIPs": [{"ip": LOOPBACK}],
        "startTime": view.start_time,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled},
            {"type": "Initialized", "status": "True", "lastTransitionTime": scheduled},
            cond("ContainersReady", ready, since),
            cond("Ready", ready, since),
        ],
        "containerStatuses": [_container_status(c) for c in view.containers],
    }


def _container_status(c: ContainerView) -> Obj:
    state: Obj
    if c.started_at:
        state = {"running": {"startedAt": c.started_at}}
    elif c.terminated is not None:
        state = {"terminated": c.terminated}
    else:
        waiting: Obj = {"reason": c.waiting_reason or "ContainerCreating"}
        if c.waiting_message:
            waiting["message"] = c.waiting_message
        state = {"waiting": waiting}
    status: Obj = {
        "name": c.name,
        "image": c.image,
        "imageID": "",
        "ready": c.ready,
        "started": bool(c.started_at),
        "restartCount": c.restart_count,
        "state": state,
        "lastState": {"terminated": c.last_terminated} if c.last_terminated else {},
    }
    return status


def pod_conditions_ready(pod: Obj) -> bool:
    """Whether a Pod object's Ready condition is True."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


# -- the Deployment controller's decisions -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PodSummary:
    """A pod of a Deployment as the rollout plan needs it."""

    name: str
    hash: str
    ready: bool
    created: float  # Unix time, for "newest first"


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    start: int = 0
    stop: tuple[str, ...] = ()


def plan_rollout(pods: Sequence[PodSummary], replicas: int, current: str) -> RolloutPlan:
    """Which pods to start or stop so ``replicas`` pods of template ``current`` run.

    Kubernetes' RollingUpdate with maxUnavailable 0 (as Knative's revision Deployments): pods of
    an old template go only as new ones turn ready, so the ready count never drops below what
    is wanted. Scale-down stops the pods that serve least first, as the ReplicaSet controller
    ranks victims: not ready before ready, then newest first. E.g. replicas 1, pods a (old,
    ready), b (new, starting): start none, stop none; once b is ready: stop a.
    """
    replicas = max(0, replicas)
    new = [p for p in pods if p.hash == current]
    old = [p for p in pods if p.hash != current]
    start = max(0, replicas - len(new))
    stop = _victims(new, len(new) - replicas)
    new_ready = sum(1 for p in new if p.ready and p.name not in stop)
    # Old pods that may go: all if nothing is wanted, else as many as new ready ones cover.
    keep_old = 0 if replicas == 0 else max(0, replicas - new_ready)
    stop += _victims(old, len(old) - keep_old)
    return RolloutPlan(start=start, stop=stop)


def _victims(pods: Iterable[PodSummary], count: int) -> tuple[str, ...]:
    if count <= 0:
        return ()
    ranked = sorted(pods, key=lambda p: (p.ready, -p.created, p.name))
    return tuple(p.name for p in ranked[:count])


def deployment_status(
    deployment: Obj,
    pods: Sequence[PodSummary],
    current: str,
    previous: Obj | None,
    now: str,
    *,
    progress_deadline_exceeded: bool = False,
) -> Obj:
    """The Deployment's ``status`` (what the Deployment controller writes), conditions keeping
    their lastTransitionTime while their status stays."""
    spec = deployment.get("spec") or {}
    replicas = spec.get("replicas")
    wanted = 1 if replicas is None else int(replicas)
    ready = sum(1 for p in pods if p.ready)
    updated = sum(1 for p in pods if p.hash == current)
    updated_ready = sum(1 for p in pods if p.hash == current and p.ready)
    available_ok = ready >= wanted
    complete = updated == wanted and updated_ready == wanted and len(pods) == wanted
    if progress_deadline_exceeded and not complete:
        progressing = ("False", "ProgressDeadlineExceeded", "ReplicaSet has timed out progressing.")
    elif complete:
        progressing = ("True", "NewReplicaSetAvailable", "ReplicaSet has successfully progressed.")
    else:
        progressing = ("True", "ReplicaSetUpdated", "ReplicaSet is progressing.")
    available = (
        ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        if available_ok
        else (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    )
    old = {c.get("type"): c for c in ((previous or {}).get("conditions") or [])}

    def cond(kind: str, value: tuple[str, str, str]) -> Obj:
        status, reason, message = value
        prior = old.get(kind) or {}
        moved = prior.get("status") != status
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastUpdateTime": now
            if moved or prior.get("reason") != reason
            else prior.get("lastUpdateTime", now),
            "lastTransitionTime": now if moved else prior.get("lastTransitionTime", now),
        }

    status: Obj = {
        "observedGeneration": (deployment.get("metadata") or {}).get("generation", 0),
        "replicas": len(pods),
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": [cond("Available", available), cond("Progressing", progressing)],
    }
    if wanted - ready > 0:
        status["unavailableReplicas"] = wanted - ready
    return status


def desired_replicas(deployment: Obj) -> int:
    """``spec.replicas``; absent means 1, as the API server defaults it."""
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else max(0, int(replicas))


def pod_template(deployment: Obj) -> Obj:
    template = (deployment.get("spec") or {}).get("template") or {}
    return template if isinstance(template, dict) else {}


def owner_reference(deployment: Obj) -> Obj:
    meta = deployment.get("metadata") or {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }


# knpy's figures on its Pods, finer than Kubernetes' one-second timestamps, for benchmarks:
# when the kubelet created the pod (Unix seconds) and how long it took to turn Ready.
CREATED_AT_ANNOTATION: Final = "knpy.dev/created-at"
READY_AFTER_ANNOTATION: Final = "knpy.dev/ready-after-seconds"


def pod_object(deployment: Obj, name: str, hash_: str, ports: Mapping[int, int], now: float) -> Obj:
    """The Pod a Deployment's template makes on this node, ports localized."""
    meta = deployment.get("metadata") or {}
    template = pod_template(deployment)
    tmeta = template.get("metadata") or {}
    labels = {**(tmeta.get("labels") or {}), POD_TEMPLATE_HASH_LABEL: hash_}
    pod_meta: Obj = {
        "name": name,
        "namespace": meta.get("namespace", "default"),
        "labels": labels,
        "ownerReferences": [owner_reference(deployment)],
    }
    pod_meta["annotations"] = {
        **(tmeta.get("annotations") or {}),
        CREATED_AT_ANNOTATION: f"{now:.6f}",
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": localize(template.get("spec") or {}, ports),
    }


def container_image(container: Obj) -> str:
    return str(container.get("image", ""))


def json_copy(obj: Any) -> Any:
    return json.loads(json.dumps(obj))
