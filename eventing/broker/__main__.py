"""``python -m eventing.broker [--kubeconfig PATH] [--state-dir DIR] [--backend sqlite|rabbitmq]
[--role all|ingress|dispatcher] [--rabbitmq-url URL]``: the broker data plane.

By default one process runs the ingress (``POST /<namespace>/<broker>``, ``GET /healthz``) and
the dispatcher over the default backend, the durable event log in the state dir. With
``--backend rabbitmq`` it serves the ``RabbitMQBroker`` class on RabbitMQ, and ``--role``
splits the ingress and the dispatcher into processes of their own, each with replicas. Brokers and
Triggers come from the Kubernetes API: in a pod when KUBERNETES_SERVICE_HOST is set, otherwise
``--kubeconfig``, else KUBECONFIG, else ~/.kube/config (``knpy serve`` writes one). The
environment is described in eventing/broker/config.py and docs/eventing.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from shared.envconfig import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eventing.broker", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig outside a cluster")
    parser.add_argument("--state-dir", metavar="DIR", help="the event log's directory")
    parser.add_argument(
        "--backend", choices=("sqlite", "rabbitmq"), help="the event log (BROKER_BACKEND)"
    )
    parser.add_argument(
        "--role", choices=("all", "ingress", "dispatcher"), help="what runs here (BROKER_ROLE)"
    )
    parser.add_argument("--rabbitmq-url", metavar="URL", help="amqp://... (RABBITMQ_URL)")
    args = parser.parse_args(argv)

    import uvloop

    from eventing.broker.app import serve
    from eventing.broker.backend import StoreError
    from eventing.broker.config import BrokerConfig
    from shared.kube.config import KubeConfigError

    try:
        cfg = BrokerConfig.from_env(
            os.environ,
            args.state_dir,
            backend=args.backend,
            role=args.role,
            rabbitmq_url=args.rabbitmq_url,
        )
        uvloop.run(serve(cfg, dict(os.environ), args.kubeconfig))
    except ConfigError as err:
        print(f"broker: invalid configuration: {err}", file=sys.stderr)
        return 2
    except KubeConfigError as err:
        print(f"broker: {err}", file=sys.stderr)
        return 2
    except (OSError, StoreError) as err:
        print(f"broker: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
