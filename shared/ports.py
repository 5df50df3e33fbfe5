"""A free port on loopback, for the local platform's pods and for tests and benchmarks.

The local platform runs every pod, the activator and the autoscaler on one host, so each gets
ports of its own (Knative's fixed 8012/8022/9090 would collide). The port is bound once to
learn a free one, then released for the child to bind moments later: a race another process
could win, tolerable on loopback where only this machine's own processes take ports.
"""

from __future__ import annotations

import socket
from typing import Final

__all__ = ["LOOPBACK", "free_port"]

LOOPBACK: Final = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on at ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
