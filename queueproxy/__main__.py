"""``python -m queueproxy``: the queue-proxy sidecar, configured by Knative's environment."""

from __future__ import annotations

import os
import sys

from shared.envconfig import ConfigError


def main() -> int:
    from queueproxy.config import QueueProxyConfig

    try:
        cfg = QueueProxyConfig.from_env(os.environ)
    except ConfigError as err:
        print(f"queue-proxy: invalid configuration: {err}", file=sys.stderr)
        return 2
    import uvloop

    from queueproxy.app import serve

    try:
        uvloop.run(serve(cfg))
    except ConfigError as err:
        # Settings checked as the servers are built (the request log template).
        print(f"queue-proxy: invalid configuration: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
