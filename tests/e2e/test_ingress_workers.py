"""``knpy serve --workers 2``: a second ingress process on the ingress port (SO_REUSEPORT)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import psutil
import pytest

from .harness import EXAMPLES, Serve

pytestmark = pytest.mark.timeout(90)

HELLO = "hello.default.localhost"


def _get(port: int) -> bytes:
    """One request on a new connection (so that the kernel may pick either worker)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {HELLO}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


async def test_two_ingress_workers_route_and_stop(serve: Callable[..., Serve]) -> None:
    s = serve(EXAMPLES / "hello" / "service.yaml", args=["--workers", "2"])
    workers = [
        p
        for p in psutil.Process(s.proc.pid).children(recursive=True)
        if "controlplane.ingress_workers" in " ".join(p.cmdline())
    ]
    assert len(workers) == 1, "one worker beside knpy serve's own ingress"
    await s.answers(HELLO, "hello-00001")
    answers = [_get(s.port) for _ in range(40)]
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), answers
    # 20 connections held open: the kernel spreads them over both listeners (all 20 on one
    # side by chance: 2 in a million).
    held = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(20)]
    try:
        for sock in held:  # accepted by now: one answered request each
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {HELLO}\r\n\r\n".encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        by_worker = _accepted(workers[0], s.port)
        by_serve = _accepted(psutil.Process(s.proc.pid), s.port)
        # (>= 20: the kept-alive connection of the answers() check may still be open)
        assert by_worker + by_serve >= 20 and by_worker and by_serve, (by_worker, by_serve)
    finally:
        for sock in held:
            sock.close()
    assert await s.stop() == 0
    assert not workers[0].is_running()


def _accepted(proc: psutil.Process, port: int) -> int:
    """Established client connections the process holds on the ingress port."""
    return sum(
        1
        for c in proc.net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def test_a_killed_serve_takes_its_ingress_workers_along(serve: Callable[..., Serve]) -> None:
    """SIGKILL of knpy serve and of its watchdog (so the mark cannot help): the parent-death
    signal alone must end the worker, or it keeps serving the port for nobody."""
    s = serve(args=["--workers", "2"])
    tree = psutil.Process(s.proc.pid).children(recursive=True)
    workers = [p for p in tree if "controlplane.ingress_workers" in " ".join(p.cmdline())]
    watchdog = [p for p in tree if "controlplane.supervision" in " ".join(p.cmdline())]
    assert len(workers) == 1 and len(watchdog) == 1
    for p in (*watchdog, psutil.Process(s.proc.pid)):
        p.kill()
    s.proc.wait(timeout=10)
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, "the ingress worker outlived knpy serve"
