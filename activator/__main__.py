"""``python -m activator [--cluster-file PATH]``: the activator, configured by Knative's env.

Revisions and endpoints come from ``--cluster-file`` (JSON or YAML, see
activator/cluster_file.py) until the local platform serves them; without it the activator
knows no revision and answers 404.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shared.envconfig import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="activator", description=__doc__.splitlines()[0])
    parser.add_argument("--cluster-file", type=Path, help="static revisions and endpoints")
    args = parser.parse_args(argv)

    from activator.config import ActivatorConfig

    try:
        cfg = ActivatorConfig.from_env(os.environ)
    except ConfigError as err:
        print(f"activator: invalid configuration: {err}", file=sys.stderr)
        return 2
    import uvloop

    from activator.serve import serve

    try:
        uvloop.run(serve(cfg, args.cluster_file))
    except ConfigError as err:
        print(f"activator: invalid configuration: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
