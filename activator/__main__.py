"""``python -m activator [--kubeconfig PATH]``: Knative's activator, by Knative's contract.

Revisions, Endpoints and ConfigMaps come from the Kubernetes API: in a pod when
KUBERNETES_SERVICE_HOST is set (the service account), otherwise ``--kubeconfig``, else
KUBECONFIG, else ~/.kube/config (``knpy serve`` writes one for its API). The environment is
Knative's (POD_NAME, POD_IP, SYSTEM_NAMESPACE, ...) plus knpy's ACTIVATOR_* knobs; see
activator/config.py.
"""

from __future__ import annotations

import argparse
import os
import sys

from shared.envconfig import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="activator", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig outside a cluster")
    args = parser.parse_args(argv)

    import uvloop

    from activator.config import ActivatorConfig
    from activator.serve import StartupError, serve
    from shared.kube.config import KubeConfigError

    try:
        cfg = ActivatorConfig.from_env(os.environ)
    except ConfigError as err:
        print(f"activator: invalid configuration: {err}", file=sys.stderr)
        return 2
    try:
        uvloop.run(serve(cfg, dict(os.environ), args.kubeconfig))
    except KubeConfigError as err:
        print(f"activator: {err}", file=sys.stderr)
        return 2
    except StartupError as err:
        print(f"activator: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
