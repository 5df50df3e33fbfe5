"""A free port on loopback, for the local platform's pods and for tests and benchmarks.

The local platform runs every pod, the activator and the autoscaler on one host, so each gets
ports of its own (Knative's fixed 8012/8022/9090 would collide). The port is bound once to
learn a free one, then released for the child to bind moments later: a race another process
could win, tolerable on loopback where only this machine's own processes take ports.

``KNPY_PORT_RANGE=LO-HI`` narrows the choice to a range, walked from a random start so one
process does not hand out a port twice before the range wraps. The test suite gives each
pytest-xdist worker a range of its own below the kernel's ephemeral ports (32768 and up, where
``bind(0)`` and every outgoing connection take theirs), so two workers' processes never pick
the same port between the probe and the bind.
"""

from __future__ import annotations

import os
import random
import socket
from typing import Final

__all__ = ["LOOPBACK", "PORT_RANGE_ENV", "free_port", "port_range"]

LOOPBACK: Final = "127.0.0.1"
PORT_RANGE_ENV: Final = "KNPY_PORT_RANGE"

_cursor: dict[tuple[int, int], int] = {}


def port_range(value: str | None) -> tuple[int, int] | None:
    """``LO-HI`` parsed (inclusive, 1024 <= LO <= HI <= 65535), or None when unset or empty."""
    if not value:
        return None
    lo_s, sep, hi_s = value.partition("-")
    try:
        lo, hi = int(lo_s), int(hi_s)
    except ValueError:
        lo = hi = -1
    if not sep or not 1024 <= lo <= hi <= 65535:
        raise ValueError(f"{PORT_RANGE_ENV}={value!r}: want LO-HI with 1024 <= LO <= HI <= 65535")
    return lo, hi


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on at ``host`` now (from ``KNPY_PORT_RANGE`` when set)."""
    bounds = port_range(os.environ.get(PORT_RANGE_ENV))
    if bounds is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
            return port
    lo, hi = bounds
    size = hi - lo + 1
    start = _cursor.get(bounds)
    if start is None:
        start = random.randint(lo, hi)
    for step in range(size):
        candidate = lo + (start - lo + step) % size
        if _bindable(host, candidate):
            _cursor[bounds] = lo + (candidate - lo + 1) % size
            return candidate
    raise OSError(f"no free port on {host} in {PORT_RANGE_ENV}={lo}-{hi}")
