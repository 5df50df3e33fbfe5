"""``knpy``: one command, a subcommand per component."""

from __future__ import annotations

import argparse
import runpy
import sys

_COMPONENTS = {
    "queue-proxy": ("queueproxy", "the per-pod sidecar (configured by Knative's environment)"),
    "activator": ("activator", "the shared buffering proxy"),
    "autoscaler": ("autoscaler", "stats collection and the KPA decider"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="knpy", description="Knative's serving data plane in Python."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in _COMPONENTS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    demo = sub.add_parser("demo", help="a sample app behind a queue-proxy, a short load, metrics")
    demo.add_argument("--seconds", type=float, default=5.0, help="length of the load")
    demo.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        from shared.demo import run_demo

        return run_demo(seconds=args.seconds, concurrency=args.concurrency)
    module = _COMPONENTS[args.command][0]
    sys.argv = [f"knpy {args.command}", *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
