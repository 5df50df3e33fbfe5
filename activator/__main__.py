"""``python -m activator [--kubeconfig PATH | --cluster-file PATH]``: Knative's activator.

Revisions, Endpoints and ConfigMaps come from the Kubernetes API: in a pod when
KUBERNETES_SERVICE_HOST is set (the service account), otherwise ``--kubeconfig``, else
KUBECONFIG, else ~/.kube/config (``knpy serve`` writes one for its API). ``--cluster-file``
instead serves a fixed set of Kubernetes objects from a file (load_cluster_file in
activator/app.py), for benchmarks and hand runs. The environment is Knative's (POD_NAME,
POD_IP, SYSTEM_NAMESPACE, ...) plus knpy's ACTIVATOR_* knobs; see activator/config.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shared.envconfig import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="activator", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig outside a cluster")
    source.add_argument(
        "--cluster-file", type=Path, metavar="PATH", help="static Kubernetes objects instead"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="serve from N processes on one SO_REUSEPORT port, each an activator of the "
        "split (activator/workers.py); default ACTIVATOR_WORKERS, else 1",
    )
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be 1 or more, got {args.workers}")

    import uvloop

    from activator.app import StartupError, serve, serve_static
    from activator.config import ActivatorConfig
    from shared.kube.config import KubeConfigError

    env = dict(os.environ)
    if args.workers is not None:
        env["ACTIVATOR_WORKERS"] = str(args.workers)
    try:
        cfg = ActivatorConfig.from_env(env)
    except ConfigError as err:
        print(f"activator: invalid configuration: {err}", file=sys.stderr)
        return 2
    if cfg.workers > 1 and "ACTIVATOR_WORKER_INDEX" not in env:
        from activator.workers import run_workers

        child_argv = (
            ["--cluster-file", str(args.cluster_file)]
            if args.cluster_file is not None
            else ["--kubeconfig", args.kubeconfig]
            if args.kubeconfig is not None
            else []
        )
        return run_workers(cfg.workers, child_argv, env)
    try:
        if args.cluster_file is not None:
            uvloop.run(serve_static(cfg, args.cluster_file))
        else:
            uvloop.run(serve(cfg, env, args.kubeconfig))
    except ConfigError as err:
        print(f"activator: invalid configuration: {err}", file=sys.stderr)
        return 2
    except KubeConfigError as err:
        print(f"activator: {err}", file=sys.stderr)
        return 2
    except StartupError as err:
        print(f"activator: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
