"""``knpy func <command>``: Knative's ``func`` CLI, shaped the same way.

This module builds the ``func`` parser and its subcommands and imports nothing heavy (``knpy``
starts fast whatever the command): each command is a ``*_command(args)`` of its own module
(functions/create.py, run.py, invoke.py, deploy.py, manage.py, build.py), imported when it runs.

Errors a developer can fix (``ProjectError``: outside a function directory, an unknown
template, a bad func.yaml) are one ``Error:`` line on stderr and exit status 1, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_commands", "path_option"]

Command = Callable[[argparse.Namespace], int]


def path_option(p: argparse.ArgumentParser) -> None:
    """Knative's ``-p/--path``: the function's directory (default: the current one)."""
    p.add_argument(
        "-p", "--path", type=Path, default=Path("."), help="the function's directory (default: .)"
    )


def _guarded(run: Command) -> Command:
    def guarded(args: argparse.Namespace) -> int:
        from functions.project import ProjectError

        try:
            return run(args)
        except ProjectError as err:
            print(f"Error: {err}", file=sys.stderr, flush=True)
            return 1

    return guarded


def kubeconfig_option(p: argparse.ArgumentParser) -> None:
    """knpy's ``--kubeconfig`` (what ``knpy serve`` wrote) and kn's ``-n/--namespace``."""
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="the kubeconfig knpy serve wrote (default: the last deploy's, else "
        ".knpy/kubeconfig)",
    )
    p.add_argument(
        "-n", "--namespace", default=None,
        help="default: func.yaml's deploy.namespace, else the last deploy's, else default",
    )  # fmt: skip


def _add_deploy_commands(cmds: Any) -> None:
    """deploy, subscribe, describe, list, delete, logs, build (functions/deploy.py,
    functions/manage.py, functions/build.py)."""
    deploy = cmds.add_parser(
        "deploy", help="the function as a Knative Service on knpy serve (Triggers too)"
    )
    path_option(deploy)
    kubeconfig_option(deploy)
    deploy.add_argument(
        "-i", "--image", default=None,
        help="the image to run where the target is a cluster (default: func.yaml's)",
    )  # fmt: skip
    deploy.add_argument(
        "--timeout", type=float, default=120.0, metavar="SECONDS",
        help="give up waiting for Ready after this long (default 120)",
    )  # fmt: skip
    deploy.set_defaults(run=_guarded(_later("functions.deploy", "deploy_command")))

    subscribe = cmds.add_parser(
        "subscribe", help="subscribe the function to a Broker's events (func.yaml; deploy applies)"
    )
    path_option(subscribe)
    subscribe.add_argument(
        "-f", "--filter", action="append", default=[], metavar="ATTRIBUTE=VALUE",
        help="a CloudEvent attribute the events must have (repeatable)",
    )  # fmt: skip
    subscribe.add_argument(
        "-s", "--source", default="default", help="the Broker (default: default)"
    )
    subscribe.set_defaults(run=_guarded(_later("functions.manage", "subscribe_command")))

    def named(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("name", nargs="?", help="the function (default: the one at --path)")
        path_option(parser)
        kubeconfig_option(parser)
        return parser

    describe = named(cmds.add_parser("describe", aliases=["info"], help="a deployed function"))
    describe.add_argument(
        "-o", "--output", choices=("human", "plain", "json", "yaml", "url"), default="human"
    )
    describe.set_defaults(run=_guarded(_later("functions.manage", "describe_command")))

    listing = cmds.add_parser("list", aliases=["ls"], help="the deployed functions")
    kubeconfig_option(listing)
    listing.add_argument(
        "-A", "--all-namespaces", action="store_true", help="in every namespace"
    )
    listing.add_argument("-o", "--output", choices=("human", "json"), default="human")
    listing.set_defaults(run=_guarded(_later("functions.manage", "list_command")))

    delete = named(
        cmds.add_parser("delete", aliases=["remove", "rm"], help="undeploy: Service and Triggers")
    )
    delete.set_defaults(run=_guarded(_later("functions.manage", "delete_command")))

    logs = named(cmds.add_parser("logs", help="what the deployed function printed (-f: follow)"))
    logs.add_argument("-f", "--follow", action="store_true", help="then print new lines")
    logs.add_argument("--tail", type=int, default=-1, metavar="N", help="the last N lines")
    logs.add_argument("--prefix", action="store_true", help="start lines with [pod/NAME/...]")
    logs.add_argument(
        "--state-dir", type=Path, default=None,
        help="knpy serve's state dir (default: the kubeconfig's directory)",
    )  # fmt: skip
    logs.set_defaults(run=_guarded(_later("functions.manage", "logs_command")))

    build = cmds.add_parser("build", help="an OCI image of the function (buildah or Docker)")
    path_option(build)
    build.add_argument(
        "-i", "--image", default=None,
        help="its name (default: func.yaml's image, else localhost/knpy-func/NAME:latest)",
    )  # fmt: skip
    build.add_argument(
        "--offline", action="store_true",
        help="on Debian's python3 made by images/build.sh --offline; pull nothing",
    )  # fmt: skip
    build.add_argument("--base", default=None, help="the base image (python3 3.11 with venv)")
    build.add_argument(
        "--engine", choices=("buildah", "docker"), default=None,
        help="default: Docker when its daemon answers, else buildah",
    )  # fmt: skip
    build.set_defaults(run=_guarded(_later("functions.build", "build_command")))


def _later(module: str, name: str) -> Command:
    """The command ``name`` of ``module``, imported when it runs (module doc)."""

    def run(args: argparse.Namespace) -> int:
        command: Command = getattr(importlib.import_module(module), name)
        return command(args)

    return run


def add_commands(sub: Any) -> None:
    """Add ``func`` and its subcommands to the ``knpy`` parser's subparsers ``sub``."""
    func = sub.add_parser("func", help="Knative Functions: create, run, invoke, deploy, build")
    cmds = func.add_subparsers(dest="func_command", metavar="COMMAND")

    def usage(_: argparse.Namespace) -> int:
        func.print_help(sys.stderr)
        return 2

    func.set_defaults(run=usage)

    create = cmds.add_parser(
        "create", aliases=["init"], help="a new function directory (Knative's Python layout)"
    )
    create.add_argument("path", type=Path, help="the directory to create; its name is the name")
    create.add_argument("-l", "--language", default="python", help="the language (python)")
    create.add_argument(
        "-t", "--template", default="http", help="http (default) or cloudevents"
    )
    create.set_defaults(run=_guarded(_later("functions.create", "create_command")))

    run = cmds.add_parser(
        "run", help="serve the function behind a queue-proxy, reloading on every change"
    )
    path_option(run)
    run.add_argument(
        "--port", type=int, default=8080, help="the queue-proxy's port (default 8080; 0: any)"
    )
    run.add_argument(
        "--address", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)"
    )
    run.add_argument(
        "-e", "--env", action="append", default=[], metavar="NAME=VALUE",
        help="an environment variable for the function (repeatable; over func.yaml's run.envs)",
    )  # fmt: skip
    run.add_argument("--no-reload", action="store_true", help="do not restart on file changes")
    run.add_argument(
        "--start-timeout", default=None, metavar="DURATION",
        help="how long the function may take to start, e.g. 2m (default: func.yaml's "
        "run.startTimeout, else 30s)",
    )  # fmt: skip
    run.set_defaults(run=_guarded(_later("functions.run", "run_command")))

    invoke = cmds.add_parser("invoke", help="send the function a request or a CloudEvent")
    path_option(invoke)
    invoke.add_argument(
        "-f", "--format", choices=("http", "cloudevent", "cloudevents"), default=None,
        help="http or cloudevent (default: func.yaml's invoke)",
    )  # fmt: skip
    invoke.add_argument(
        "-t", "--target", default=None,
        help="local, remote, or a URL (default: local if running, else remote)",
    )  # fmt: skip
    invoke.add_argument("--id", default=None, help="the event's id (default: a UUID)")
    invoke.add_argument("--source", default=None, help="the event's source (default /boson/fn)")
    invoke.add_argument("--type", default=None, help="the event's type (default boson.fn)")
    invoke.add_argument(
        "--content-type", default=None, help="the data's type (default application/json)"
    )
    invoke.add_argument(
        "--data", default=None, help='the data (default {"message":"Hello World"})'
    )
    invoke.add_argument("--file", type=Path, default=None, help="the data from a file")
    invoke.add_argument(
        "--request-type", choices=("POST", "GET"), default="POST", help="POST (default) or GET"
    )
    invoke.add_argument(
        "-e", "--extension", action="append", default=[], metavar="NAME=VALUE",
        help="a CloudEvent extension attribute (repeatable)",
    )  # fmt: skip
    invoke.set_defaults(run=_guarded(_later("functions.invoke", "invoke_command")))
    _add_deploy_commands(cmds)
