"""``knpy func <command>``: Knative's ``func`` CLI, shaped the same way.

Each command module registers its own subcommand through ``add_commands``; this module only
builds the ``func`` parser and imports nothing heavy (``knpy`` starts fast whatever the
command), so each command's module is imported when it runs.

Errors a developer can fix (``ProjectError``: outside a function directory, an unknown
template, a bad func.yaml) are one ``Error:`` line on stderr and exit status 1, no traceback.
"""

from __future__ import annotations

import argparse
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


def add_commands(sub: Any) -> None:
    """Add ``func`` and its subcommands to the ``knpy`` parser's subparsers ``sub``."""
    func = sub.add_parser("func", help="Knative Functions: create, run, invoke a function")
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
    create.set_defaults(run=_guarded(_create))



def _create(args: argparse.Namespace) -> int:
    from functions.create import create

    written = create(args.path, language=args.language, template=args.template)
    root = args.path.resolve()
    print(f"Created {args.language} function ({args.template}) in {root}:")
    for path in written:
        print(f"  {path.relative_to(root)}")
    return 0
