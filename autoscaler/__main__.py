"""``python -m autoscaler [--kubeconfig PATH]``: Knative's autoscaler, against the Kubernetes API.

In a pod (``KUBERNETES_SERVICE_HOST`` set) it uses the service account; otherwise
``--kubeconfig``, ``$KUBECONFIG`` or ``~/.kube/config`` (shared/kube/config.py). ``knpy serve``
starts it with the kubeconfig it writes for its own API.

The environment is Knative's (POD_NAME, POD_IP, SYSTEM_NAMESPACE, ...) plus knpy's
AUTOSCALER_* ports, listed in autoscaler/config.py, and AUTOSCALER_LOG_LEVEL (DEBUG, INFO by
default, WARNING, ERROR). Configuration comes from the cluster, as Knative's: the
``config-autoscaler`` ConfigMap (followed) and ``config-leader-election`` (read at start) in
SYSTEM_NAMESPACE.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from shared.envconfig import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autoscaler", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="kubeconfig file (out of cluster)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    logging.basicConfig(
        level=env.get("AUTOSCALER_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import uvloop

    from autoscaler.app import serve
    from autoscaler.config import ProcessConfig
    from shared.kube.config import KubeConfigError

    try:
        cfg = ProcessConfig.from_env(env)
        uvloop.run(serve(cfg, env, args.kubeconfig))
    except (ConfigError, KubeConfigError) as err:
        print(f"autoscaler: invalid configuration: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
