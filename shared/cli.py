"""``knpy``: one command, a subcommand per component, and the local platform's commands.

``knpy serve`` runs the platform in the foreground (controlplane/serve.py); ``apply``, ``get``,
``delete`` and ``logs`` talk to its Kubernetes API with the kubeconfig it writes
(``--kubeconfig``, ``.knpy/kubeconfig`` by default) through ``shared/apiclient.py``, so they
start fast and need no event loop.

What a kn user expects: ``apply`` waits, as ``kn service create`` does, until each Service (any
serving.knative.dev object) it wrote is Ready or has failed (shared/readiness.py): progress on
stderr, the URL on stdout, the failing condition's message and exit 1 otherwise (``--no-wait``,
``--wait-timeout``). ``get -w`` prints a row each time an object changes, as ``kubectl get -w``.
``logs SERVICE`` prints what the service's pods printed, and ``-f`` follows them and the pods to
come (shared/podlogs.py).

``get revisions`` joins what Knative spreads over several objects: the Revision (replicas,
conditions), the Routes (traffic percent and tags), the ServerlessService (Serve or
Proxy mode) and the ingress's cold-start figures (the ``knative-serving/knpy-cold-starts``
ConfigMap).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared.apiclient import Api, ApiFailure, WatchExpired, execute, load_kubeconfig, plan_text
from shared.eventing_cli import EVENTING_ALIASES, add_commands, eventing_choices, get_eventing
from shared.kube.resources import (
    CONFIGMAPS,
    KSERVICES,
    PODAUTOSCALERS,
    REVISIONS,
    ROUTES,
    SERVERLESSSERVICES,
    SYSTEM_NAMESPACE,
    Resource,
)
from shared.readiness import DEFAULT_TIMEOUT_S, Outcome, wait_ready, waited_for

_COMPONENTS = {
    "queue-proxy": ("queueproxy", "the per-pod sidecar (configured by Knative's environment)"),
    "activator": ("activator", "the shared buffering proxy"),
    "autoscaler": ("autoscaler", "stats collection and the KPA decider"),
}
DEFAULT_KUBECONFIG = Path(".knpy") / "kubeconfig"
COLD_STARTS_CONFIGMAP = "knpy-cold-starts"
# Plural resource names of the API, by every name a person may type (kubectl's and kn's).
KINDS = {
    "services": "services",
    "service": "services",
    "ksvc": "services",
    "revisions": "revisions",
    "revision": "revisions",
    "rev": "revisions",
    "routes": "routes",
    "route": "routes",
}

RESOURCES: dict[str, Resource] = {"services": KSERVICES, "revisions": REVISIONS, "routes": ROUTES}

Json = dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C ends a watch or a follow with 130 even when the shell or a test runner started us
    # with SIGINT ignored (CPython keeps an inherited SIG_IGN instead of KeyboardInterrupt).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(
        prog="knpy", description="Knative's serving data plane in Python."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in _COMPONENTS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    demo = sub.add_parser("demo", help="a sample app behind a queue-proxy, a short load, metrics")
    demo.add_argument("--seconds", type=float, default=5.0, help="length of the load")
    demo.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    _platform_commands(sub)
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        from shared.demo import run_demo

        return run_demo(seconds=args.seconds, concurrency=args.concurrency)
    if args.command in _COMPONENTS:
        module = _COMPONENTS[args.command][0]
        sys.argv = [f"knpy {args.command}", *rest]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except ApiFailure as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C ends `get -w`, `logs -f` or a wait: no traceback
        return 130
    except BrokenPipeError:
        # `knpy get ... | head`: the reader left. Exit quietly as a killed-by-SIGPIPE tool does
        # (128 + 13); stdout goes to /dev/null so the interpreter's flush at exit cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _platform_commands(sub: Any) -> None:
    serve = sub.add_parser("serve", help="the local platform: Knative Service YAML on one machine")
    serve.add_argument("--port", type=int, default=8080, help="the ingress port")
    serve.add_argument("--api-port", type=int, default=9080, help="the Kubernetes API port")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="the ingress on N processes sharing its port (SO_REUSEPORT)",
    )
    serve.add_argument(
        "--state-dir", type=Path, default=Path(".knpy"), help="resources, revision history, logs"
    )
    serve.add_argument("-f", "--filename", action="append", default=[], type=Path, help="apply")
    serve.add_argument(
        "--images",
        action="store_true",
        help="run the queue-proxies, activator and autoscaler from images/build.sh's images",
    )
    serve.add_argument(
        "--image-tag", default=None, help="their tag (default: knpy's version, as build.sh)"
    )
    serve.add_argument(
        "--image-registry", default="localhost/knpy", help="their name prefix (as build.sh)"
    )
    serve.add_argument(
        "--rabbitmq",
        metavar="URL",
        default="",
        help="run the RabbitMQBroker class's data plane on this RabbitMQ "
        "(amqp://USER:PASSWORD@HOST:5672/); or set KNPY_RABBITMQ_URL, which ps does not show",
    )
    serve.set_defaults(run=_serve)

    def with_api(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--kubeconfig",
            type=Path,
            default=DEFAULT_KUBECONFIG,
            help="the kubeconfig knpy serve wrote (default: .knpy/kubeconfig)",
        )
        return p

    apply = with_api(sub.add_parser("apply", help="create or update resources from YAML/JSON"))
    apply.add_argument("-f", "--filename", action="append", required=True, help="file, or -")
    apply.add_argument(
        "--no-wait", action="store_true", help="return once written, not once Ready (as kn)"
    )
    apply.add_argument(
        "--wait-timeout",
        type=int,
        default=int(DEFAULT_TIMEOUT_S),
        metavar="SECONDS",
        help=f"give up waiting for Ready after this long (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    apply.set_defaults(run=_apply)

    get = with_api(sub.add_parser("get", help="show services, revisions or routes"))
    get.add_argument(
        "kind",
        choices=sorted([*KINDS, *eventing_choices()]),
        metavar="services|revisions|routes|brokers|triggers|...",
    )
    get.add_argument("name", nargs="?")
    get.add_argument("-n", "--namespace", default=None, help="default: every namespace")
    get.add_argument("-o", "--output", choices=("json", "yaml"), default=None)
    get.add_argument(
        "-w", "--watch", action="store_true", help="then print each change until Ctrl-C"
    )
    get.set_defaults(run=_get)

    delete = with_api(sub.add_parser("delete", help="delete a service and what it owns"))
    delete.add_argument("kind", choices=("service", "services", "ksvc"), metavar="service")
    delete.add_argument("name")
    delete.add_argument("-n", "--namespace", default="default")
    delete.set_defaults(run=_delete)

    logs = with_api(sub.add_parser("logs", help="what a service's pods printed (-f: follow)"))
    logs.add_argument("service")
    logs.add_argument("-n", "--namespace", default="default")
    logs.add_argument(
        "-c",
        "--container",
        default=None,
        help="default: the app's container (user-container); queue-proxy for the sidecar",
    )
    logs.add_argument(
        "-f", "--follow", action="store_true", help="then print new lines and new pods' lines"
    )
    logs.add_argument(
        "--tail",
        type=int,
        default=-1,
        metavar="N",
        help="the last N lines of each pod (default: all)",
    )
    logs.add_argument(
        "--prefix", action="store_true", help="start each line with [pod/NAME/CONTAINER]"
    )
    logs.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="knpy serve's state dir, where the logs are (default: the kubeconfig's directory)",
    )
    logs.set_defaults(run=_logs)

    add_commands(sub, with_api)  # send, listen (shared/eventing_cli.py)
    # knpy func create|run|invoke|... (lazy: shared/ imports no component at module level).
    # The images ship only their component's packages (images/deps.py), not functions/: there
    # the console script runs the component and has no func command.
    try:
        from functions.cli import add_commands as add_func_commands
    except ModuleNotFoundError as err:
        if err.name != "functions":
            raise
    else:
        add_func_commands(sub)


# -- the commands --------------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    import importlib.metadata

    from controlplane.containers import KnpyImages
    from controlplane.control import RABBITMQ_URL_ENV
    from controlplane.serve import ServeConfig, run_serve

    images = None
    if args.images:
        tag = args.image_tag or importlib.metadata.version("knpy")
        images = KnpyImages.named(tag, args.image_registry)
    elif args.image_tag is not None:
        print("knpy serve: --image-tag needs --images", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"knpy serve: --workers must be 1 or more, got {args.workers}", file=sys.stderr)
        return 2
    # A command line is in every user's ps listing: the URL's password can come from the
    # environment instead (read by this user only).
    rabbitmq = args.rabbitmq or os.environ.get(RABBITMQ_URL_ENV, "")
    if rabbitmq and not rabbitmq.startswith(("amqp://", "amqps://")):
        scheme = rabbitmq.partition("://")[0] if "://" in rabbitmq else "no scheme"
        # Not the value: it may hold a password, and this goes to terminals and CI logs.
        print(f"knpy serve: --rabbitmq must be an amqp:// or amqps:// URL, got {scheme!r}",
              file=sys.stderr)
        return 2
    return run_serve(
        ServeConfig(
            port=args.port,
            api_port=args.api_port,
            workers=args.workers,
            state_dir=args.state_dir,
            files=tuple(args.filename),
            images=images,
            rabbitmq_url=rabbitmq,
        )
    )


def _apply(args: argparse.Namespace) -> int:
    api = load_kubeconfig(args.kubeconfig)
    waits: dict[tuple[Resource, str | None, str], None] = {}  # in order, each object once
    for name in args.filename:
        text = sys.stdin.read() if name == "-" else _read(Path(name))
        planned = plan_text(api, text)
        for line in execute(api, planned):
            print(line, flush=True)
        waits.update(((p.resource, p.namespace, p.name), None) for p in planned)
    if args.no_wait:
        return 0
    deadline = time.monotonic() + args.wait_timeout
    failed = 0
    for resource, ns, name in waits:
        if waited_for(resource):
            failed += not _wait_ready(api, resource, ns, name, deadline, args.wait_timeout)
    return 1 if failed else 0


def _wait_ready(
    api: Api, resource: Resource, ns: str | None, name: str, deadline: float, timeout_s: int
) -> bool:
    """kn's wait for one object: progress on stderr, the URL on stdout, or the reason why not."""
    kind = resource.kind.lower()
    where = f" in namespace '{ns}'" if ns else ""
    print(f"Waiting for {kind} '{name}'{where} to be ready:", file=sys.stderr, flush=True)
    wait = wait_ready(
        api, resource, ns, name, deadline=deadline,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    if wait.outcome is Outcome.READY:
        status = wait.latest.get("status") or {}
        revision = status.get("latestReadyRevisionName")
        with_revision = f" with latest revision '{revision}'" if revision else ""
        if wait.url:
            print(f"{resource.kind} '{name}'{with_revision} is ready at URL:\n{wait.url}")
        else:
            print(f"{resource.kind} '{name}'{with_revision} is ready.")
        return True
    if wait.outcome is Outcome.FAILED:
        why = f"is not ready: {wait.failure}"
    elif wait.outcome is Outcome.DELETED:
        why = "was deleted while waiting for it"
    else:
        why = f"is not ready after {timeout_s} s (--wait-timeout)"
    print(f"Error: {kind} '{name}'{where} {why}", file=sys.stderr, flush=True)
    return False


def _get(args: argparse.Namespace) -> int:
    if args.kind in EVENTING_ALIASES:
        return get_eventing(args)
    kind = KINDS[args.kind]
    api = load_kubeconfig(args.kubeconfig)
    resource = RESOURCES[kind]
    if args.name:
        item = api.get(resource, args.namespace or "default", args.name)
        if item is None:
            raise ApiFailure(f'{kind} "{args.name}" not found')
        items = [item]
        version = str(item["metadata"].get("resourceVersion", ""))
    else:
        listed = api.call("GET", resource.path(args.namespace)) or {}
        version = str((listed.get("metadata") or {}).get("resourceVersion", ""))
        items = sorted(
            listed.get("items") or [],
            key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"]),
        )
    if kind == "revisions":
        cold = api.get(CONFIGMAPS, SYSTEM_NAMESPACE, COLD_STARTS_CONFIGMAP) or {}
        items = [with_live_status(api, r, cold.get("data") or {}) for r in items]
    if args.output == "json":
        doc = items[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": items}
        print(json.dumps(doc, indent=2))
    elif args.output == "yaml":
        import yaml

        doc = items[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": items}
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    elif not items:
        print(f"No {kind} found.", file=sys.stderr if args.watch else sys.stdout)
    else:
        print(render_table(kind, items), flush=True)
    if args.watch:
        _watch(api, args, kind, items, version)
    return 0


def _watch(api: Api, args: argparse.Namespace, kind: str, listed: list[Json], version: str) -> None:
    """kubectl get -w: a row (or a document) for each change after the first listing, the
    rows aligned with the table above them, until Ctrl-C."""
    resource = RESOURCES[kind]
    ns = (args.namespace or "default") if args.name else args.namespace
    # The latest state of each object shown (for the column widths) and its row's cells.
    shown = {(_meta(i, "namespace"), _meta(i, "name")): i for i in listed}
    rows = render_table(kind, listed).splitlines()[1:] if listed else []
    last = {key: row.split() for key, row in zip(shown, rows, strict=True)}
    while True:
        try:
            for event, obj in api.watch(
                resource, ns, name=args.name or "", resource_version=version
            ):
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if event == "BOOKMARK":
                    continue
                if kind == "revisions" and event != "DELETED":
                    cold = api.get(CONFIGMAPS, SYSTEM_NAMESPACE, COLD_STARTS_CONFIGMAP) or {}
                    obj = with_live_status(api, obj, cold.get("data") or {})
                if args.output == "json":
                    print(json.dumps(obj, indent=2), flush=True)
                elif args.output == "yaml":
                    import yaml

                    print("---\n" + yaml.safe_dump(obj, sort_keys=False), end="", flush=True)
                else:
                    key = (_meta(obj, "namespace"), _meta(obj, "name"))
                    table = render_table(kind, [*shown.values(), obj]).splitlines()
                    cells = table[-1].split()
                    if last.get(key) == cells:
                        continue  # a change of no shown column (kubectl prints it again)
                    print("\n".join(table if not last else table[-1:]), flush=True)
                    last[key] = cells
                    shown[key] = obj
        except WatchExpired:  # older than the server keeps: every object again, as ADDED
            version = ""


def with_live_status(api: Api, rev: Json, cold_starts: dict[str, str]) -> Json:
    """A Revision with knpy's view added to its status: ``trafficPercent`` and ``tags`` from
    the Routes, ``mode`` from its ServerlessService, replicas from its PodAutoscaler when the
    Revision has none yet, and ``coldStarts`` from the ingress's ConfigMap."""
    meta = rev.get("metadata") or {}
    ns, name = meta.get("namespace", "default"), meta["name"]
    status: Json = rev.setdefault("status", {})
    percent, tags = 0, []
    for route in api.list(ROUTES, ns):
        for t in (route.get("status") or {}).get("traffic") or []:
            if t.get("revisionName") == name:
                percent += int(t.get("percent") or 0)
                tags += [t["tag"]] if t.get("tag") else []
    status["trafficPercent"] = percent
    status["tags"] = tags
    sks = api.get(SERVERLESSSERVICES, ns, name)
    if sks is not None:
        status["mode"] = (sks.get("spec") or {}).get("mode", "")
    pa = api.get(PODAUTOSCALERS, ns, name)
    pa_status = (pa or {}).get("status") or {}
    status.setdefault("actualReplicas", pa_status.get("actualScale", 0))
    status.setdefault("desiredReplicas", pa_status.get("desiredScale", 0))
    cold = cold_starts.get(f"{ns}.{name}")
    if cold:
        try:
            figures = json.loads(cold)
        except ValueError:
            figures = None
        if isinstance(figures, dict):
            figures["count"] = int(figures.get("count", 0))
            status["coldStarts"] = figures
    return rev


def _delete(args: argparse.Namespace) -> int:
    api = load_kubeconfig(args.kubeconfig)
    if api.get(KSERVICES, args.namespace, args.name) is None:
        raise ApiFailure(f'services.serving.knative.dev "{args.name}" not found')
    api.call("DELETE", KSERVICES.path(args.namespace, args.name))
    print(f"Service '{args.name}' deleted in namespace '{args.namespace}'.")
    return 0


def _logs(args: argparse.Namespace) -> int:
    from shared.podlogs import LogFollower, service_logs

    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    follower = LogFollower(
        api=load_kubeconfig(args.kubeconfig),
        state_dir=args.state_dir or args.kubeconfig.parent,
        namespace=args.namespace,
        service=args.service,
        container=args.container,
        write=write,
        prefix=args.prefix,
    )
    return service_logs(follower, follow=args.follow, tail=args.tail)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise ApiFailure(f"cannot read {path}: {err.strerror}") from None


# -- output --------------------------------------------------------------------------------------
def render_table(kind: str, items: Sequence[Json]) -> str:
    """kn's columns for each kind (cold start figures for revisions when there are some)."""
    rows: list[list[str]]
    if kind == "services":
        header = ["NAMESPACE", "NAME", "URL", "LATEST", "READY"]
        rows = [
            [
                _meta(i, "namespace"),
                _meta(i, "name"),
                _status(i, "url"),
                _status(i, "latestReadyRevisionName"),
                _ready(i),
            ]
            for i in items
        ]
    elif kind == "routes":
        header = ["NAMESPACE", "NAME", "URL", "READY"]
        rows = [
            [_meta(i, "namespace"), _meta(i, "name"), _status(i, "url"), _ready(i)] for i in items
        ]
    else:
        header = ["NAMESPACE", "NAME", "SERVICE", "TRAFFIC", "TAGS", "ACTUAL", "DESIRED", "MODE"]
        header += ["READY"]
        header += ["COLD STARTS", "COLD P50", "COLD P99"]
        rows = []
        for i in items:
            labels = i.get("metadata", {}).get("labels", {})
            cold = i.get("status", {}).get("coldStarts") or {}
            rows.append(
                [
                    _meta(i, "namespace"),
                    _meta(i, "name"),
                    labels.get("serving.knative.dev/service", ""),
                    _percent(i),
                    ",".join(i.get("status", {}).get("tags", [])),
                    _status(i, "actualReplicas", "0"),
                    _status(i, "desiredReplicas", "0"),
                    _status(i, "mode"),
                    _ready(i),
                    str(cold.get("count", "")),
                    _secs(cold, "p50_s"),
                    _secs(cold, "p99_s"),
                ]
            )
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )


def _meta(item: Json, key: str) -> str:
    return str(item.get("metadata", {}).get(key, ""))


def _status(item: Json, key: str, default: str = "") -> str:
    value = item.get("status", {}).get(key)
    return default if value is None else str(value)


def _ready(item: Json) -> str:
    for cond in item.get("status", {}).get("conditions", []):
        if cond.get("type") == "Ready":
            return str(cond.get("status", "Unknown"))
    return "Unknown"


def _percent(item: Json) -> str:
    percent = item.get("status", {}).get("trafficPercent")
    return f"{percent}%" if percent else ""


def _secs(cold: Json, key: str) -> str:
    value = cold.get(key)
    return f"{value:.2f}s" if isinstance(value, int | float) else ""


if __name__ == "__main__":
    sys.exit(main())
