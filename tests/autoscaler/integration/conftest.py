"""Real queue-proxies and sample apps on loopback; the autoscaler runs in-process around them.

The child-process fixtures are the queue-proxy suite's own (tests/queueproxy/integration),
re-exported here so both suites start children the same way.
"""

from __future__ import annotations

from tests.queueproxy.integration.conftest import (
    children,
    stack,
    start_app,
    start_queue_proxy,
)

__all__ = ["children", "stack", "start_app", "start_queue_proxy"]
