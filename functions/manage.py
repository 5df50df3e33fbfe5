"""``knpy func subscribe | describe | list | delete | logs``: a deployed function's life after
``deploy`` (Knative's func cmd/subscribe.go, describe.go, list.go, delete.go, logs.go).

- ``subscribe --filter k=v --source BROKER`` only edits func.yaml, as func does: a subscription
  to a Broker already listed gains (or changes) the given filters, else one is added; the next
  ``deploy`` makes the Triggers. A filter that is not ``k=v`` is an error here (func prints
  "Invalid pair" and carries on without it).
- ``describe`` and ``list`` read the Services labelled ``function.knative.dev/name`` (func's
  list shows every Knative Service; its own TODO says it should not) and the Triggers whose
  subscriber is the function, with func's human layout or JSON/YAML.
- ``delete`` removes the Service and its Triggers (owned by the Service, so the API's garbage
  collection takes them too; they are deleted by name first so that none outlives a Service
  deployed by hand without owner references).
- ``logs`` prints what the function's pods printed, from the files knpy serve's kubelet keeps in
  its state dir (shared/podlogs.py, as ``knpy logs``), ``-f`` following them.

A function is named by NAME, else by the function directory (``-p``), whose last deploy
(``.func/deploy.json``) also gives the kubeconfig and namespace when none is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from functions.deploy import (
    DEFAULT_NAMESPACE,
    DEPLOYER_ANNOTATION,
    NAME_LABEL,
    RUNTIME_LABEL,
    forget,
    ingress_port,
    kubeconfig_of,
    namespace_of,
    reachable_url,
    read_deployment,
)
from functions.project import FUNC_YAML, FunctionProject, ProjectError, load, write
from shared.apiclient import Api, ApiFailure, load_kubeconfig
from shared.kube.resources import KSERVICES, TRIGGERS, Obj

__all__ = [
    "Described",
    "delete_command",
    "describe",
    "describe_command",
    "list_command",
    "logs_command",
    "subscribe",
    "subscribe_command",
]


# -- subscribe -----------------------------------------------------------------------------------
def parse_filters(items: list[str]) -> dict[str, str]:
    """``k=v`` items as a mapping (the value may itself hold ``=``).

    Raises:
        ProjectError: an item without ``=`` or with an empty key.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ProjectError(f"--filter {item!r}: want ATTRIBUTE=VALUE, e.g. type=com.example")
        out[key.strip()] = value
    return out


def subscribe(doc: dict[str, Any], source: str, filters: Mapping[str, str]) -> dict[str, Any]:
    """func.yaml's document with the subscription to ``source`` added or its filters updated
    (func's updateOrAddSubscription)."""
    deploy = doc.setdefault("deploy", {}) or {}
    doc["deploy"] = deploy
    subscriptions = deploy.setdefault("subscriptions", []) or []
    deploy["subscriptions"] = subscriptions
    for sub in subscriptions:
        if sub.get("source") == source:
            sub["filters"] = {**(sub.get("filters") or {}), **filters}
            return doc
    subscriptions.append({"source": source, "filters": dict(filters)})
    return doc


def subscribe_command(args: argparse.Namespace) -> int:
    project = load(args.path)
    if not args.source:
        raise ProjectError("--source must name a Broker")
    filters = parse_filters(args.filter)
    doc = subscribe(dict(project.doc), args.source, filters)
    write(project.root, doc)
    shown = ", ".join(f"{k}={v}" for k, v in filters.items()) or "every event"
    print(
        f"Subscribed function '{project.name}' to broker '{args.source}' ({shown}) in "
        f"{project.func_yaml}; `knpy func deploy` makes the Trigger."
    )
    return 0


# -- which function ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Target:
    api: Api
    namespace: str
    name: str
    project: FunctionProject | None
    kubeconfig: Path


def _target(args: argparse.Namespace) -> Target:
    name = getattr(args, "name", None)
    project: FunctionProject | None = None
    if not name or args.path != Path("."):
        project = load(args.path)
    if name and project is not None and project.name != name:
        raise ProjectError(f"name {name!r} and --path {args.path} (function "
                           f"{project.name!r}) disagree; give one of them")  # fmt: skip
    kubeconfig = kubeconfig_of(project, args.kubeconfig)
    if project is not None:
        namespace = namespace_of(project, args.namespace)
    else:
        namespace = args.namespace or DEFAULT_NAMESPACE
    try:
        api = load_kubeconfig(kubeconfig)
    except ApiFailure as err:
        raise ProjectError(str(err)) from None
    return Target(api, namespace, str(name or (project.name if project else "")), project,
                  kubeconfig)  # fmt: skip


def _function_service(t: Target) -> Obj:
    service = t.api.get(KSERVICES, t.namespace, t.name)
    if service is None or (service["metadata"].get("labels") or {}).get(NAME_LABEL) is None:
        what = "no function" if service is None else "a Service, but not a function's,"
        raise ProjectError(
            f"there is {what} named '{t.name}' in namespace '{t.namespace}' "
            f"(knpy func list -n {t.namespace} lists them; knpy func deploy deploys one)"
        )
    return service


def _triggers_of(api: Api, namespace: str, name: str) -> list[Obj]:
    """The Triggers whose subscriber is the function's Service (as func's describer finds
    them), and those labelled with its name."""
    out = []
    for trigger in api.list(TRIGGERS, namespace):
        ref = ((trigger.get("spec") or {}).get("subscriber") or {}).get("ref") or {}
        labelled = (trigger["metadata"].get("labels") or {}).get(NAME_LABEL) == name
        if labelled or (
            ref.get("kind") == "Service"
            and ref.get("name") == name
            and str(ref.get("apiVersion", "")).startswith("serving.knative.dev/")
        ):
            out.append(trigger)
    return sorted(out, key=lambda t: str(t["metadata"]["name"]))


# -- describe / list -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Described:
    """func's Instance: what describe shows."""

    name: str
    namespace: str
    image: str
    route: str
    ready: str
    deployer: str
    runtime: str
    subscriptions: tuple[tuple[str, str, str], ...]  # (source, type, broker)
    labels: Mapping[str, str]
    # knpy's: the directory the function runs from on knpy serve, where ``image`` is only the
    # name the Service needs (nothing was built); "" when it runs an image.
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "image": self.image,
            "route": self.route,
            "routes": [self.route] if self.route else [],
            "ready": self.ready,
            "deployer": self.deployer,
            "runtime": self.runtime,
            "subscriptions": [
                {"source": s, "type": ty, "broker": b} for s, ty, b in self.subscriptions
            ],
            "labels": dict(self.labels),
            **({"source": self.source} if self.source else {}),
        }


def describe(service: Obj, triggers: list[Obj], port: int | None) -> Described:
    """A Service and its Triggers as func describes a function."""
    meta = service.get("metadata") or {}
    status = service.get("status") or {}
    spec = ((service.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = spec.get("containers") or [{}]
    ready = "Unknown"
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            ready = str(c.get("status", "Unknown"))
    url = str(status.get("url") or "")
    subs = []
    for t in triggers:
        attrs = (((t.get("spec") or {}).get("filter") or {}).get("attributes")) or {}
        subs.append(
            (str(attrs.get("source", "")), str(attrs.get("type", "")), str(t["spec"].get("broker")))
        )
    labels = meta.get("labels") or {}
    command = containers[0].get("command") or []
    runs_source = "functions.host" in command and containers[0].get("workingDir")
    return Described(
        name=str(meta.get("name")),
        namespace=str(meta.get("namespace", DEFAULT_NAMESPACE)),
        image=str(containers[0].get("image", "")),
        route=reachable_url(url, port) if url else "",
        ready=ready,
        deployer=str((meta.get("annotations") or {}).get(DEPLOYER_ANNOTATION, "knative")),
        runtime=str(labels.get(RUNTIME_LABEL, "")),
        subscriptions=tuple(subs),
        labels=labels,
        source=str(containers[0]["workingDir"]) if runs_source else "",
    )


def human(d: Described) -> str:
    """func describe's human layout (cmd/describe.go)."""
    built = ["Function runs from its source directory:", f"  {d.source}"] if d.source else [
        "Function is built in image:", f"  {d.image}"]  # fmt: skip
    lines = ["Function name:", f"  {d.name}", *built,
             "Function is deployed in namespace:", f"  {d.namespace}", "Routes:"]  # fmt: skip
    lines += [f"  {d.route}"] if d.route else []
    lines += ["Function is ready:", f"  {d.ready}", "Deployer:", f"  {d.deployer}"]
    if d.subscriptions:
        lines.append("Subscriptions (Source, Type, Broker):")
        lines += [f"  {s} {ty} {b}" for s, ty, b in d.subscriptions]
    if d.labels:
        lines.append("Labels:")
        lines += [f"  {k}: {v}" for k, v in sorted(d.labels.items())]
    return "\n".join(lines)


def plain(d: Described) -> str:
    """func describe's plain layout: one ``Key value`` a line."""
    built = f"Source {d.source}" if d.source else f"Image {d.image}"
    lines = [f"Name {d.name}", built, f"Namespace {d.namespace}"]
    lines += [f"Route {d.route}"] if d.route else []
    lines += [f"Ready {d.ready}", f"Deployer {d.deployer}"]
    lines += [f"Subscription {s} {ty} {b}" for s, ty, b in d.subscriptions]
    lines += [f"Label {k} {v}" for k, v in sorted(d.labels.items())]
    return "\n".join(lines)


def describe_command(args: argparse.Namespace) -> int:
    t = _target(args)
    try:
        service = _function_service(t)
        d = describe(service, _triggers_of(t.api, t.namespace, t.name), ingress_port(t.api))
    except ApiFailure as err:
        raise ProjectError(str(err)) from None
    if args.output == "json":
        print(json.dumps(d.as_json(), indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(d.as_json(), sort_keys=False), end="")
    elif args.output == "url":
        print(d.route)
    elif args.output == "plain":
        print(plain(d))
    else:
        print(human(d))
    return 0


def list_command(args: argparse.Namespace) -> int:
    # In a function's directory, the API its last deploy went to (as describe, logs, delete).
    here = load(Path(".")) if (Path(".") / FUNC_YAML).is_file() else None
    kubeconfig = kubeconfig_of(here, args.kubeconfig)
    try:
        api = load_kubeconfig(kubeconfig)
        namespace = None if args.all_namespaces else (args.namespace or DEFAULT_NAMESPACE)
        services = api.list(KSERVICES, namespace, NAME_LABEL)
        port = ingress_port(api) if services else None
    except ApiFailure as err:
        raise ProjectError(str(err)) from None
    rows = sorted((describe(s, [], port) for s in services), key=lambda d: (d.namespace, d.name))
    if args.output == "json":
        print(json.dumps([d.as_json() for d in rows], indent=2))
        return 0
    if not rows:
        where = "any namespace" if namespace is None else f"namespace '{namespace}'"
        print(f"No functions found in {where}", file=sys.stderr)
        return 0
    table = [("NAME", "NAMESPACE", "RUNTIME", "DEPLOYER", "URL", "READY")]
    table += [(d.name, d.namespace, d.runtime, d.deployer, d.route, d.ready) for d in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


# -- delete / logs -------------------------------------------------------------------------------
def delete_command(args: argparse.Namespace) -> int:
    t = _target(args)
    try:
        _function_service(t)
        triggers = _triggers_of(t.api, t.namespace, t.name)
        for trigger in triggers:
            t.api.call("DELETE", TRIGGERS.path(t.namespace, str(trigger["metadata"]["name"])))
        t.api.call("DELETE", KSERVICES.path(t.namespace, t.name))
    except ApiFailure as err:
        raise ProjectError(str(err)) from None
    if t.project is not None:
        dep = read_deployment(t.project)
        if dep is not None and (dep.namespace, dep.name) == (t.namespace, t.name):
            forget(t.project)
    n = len(triggers)
    with_triggers = f" and {n} Trigger{'s' if n != 1 else ''}" if n else ""
    print(f"Removed function '{t.name}' (its Service{with_triggers}) from namespace "
          f"'{t.namespace}'")  # fmt: skip
    return 0


def logs_command(args: argparse.Namespace) -> int:
    from shared.podlogs import LogFollower, service_logs

    t = _target(args)

    def write_out(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    follower = LogFollower(
        api=t.api,
        state_dir=args.state_dir or t.kubeconfig.parent,
        namespace=t.namespace,
        service=t.name,
        container=None,
        write=write_out,
        prefix=args.prefix,
    )
    try:
        _function_service(t)
        return service_logs(follower, follow=args.follow, tail=args.tail)
    except ApiFailure as err:
        raise ProjectError(str(err)) from None
    except KeyboardInterrupt:
        return 130
