"""Functions under test: a function directory written by ``create`` and its host as a real
process on 127.0.0.1, with synchronous HTTP (the standard library) to talk to it."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.ports import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


def request(
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 5.0,
) -> Reply:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def wait_status(port: int, path: str, status: int = 200, deadline_s: float = 10.0) -> Reply:
    """Poll until ``path`` answers ``status``; the last reply or OSError ends in an assert."""
    end = time.monotonic() + deadline_s
    last: object = None
    while time.monotonic() < end:
        try:
            reply = request(port, path, timeout_s=1.0)
            if reply.status == status:
                return reply
            last = reply
        except OSError as err:
            last = err
        time.sleep(0.02)
    raise AssertionError(f"{path} on :{port} did not answer {status} in {deadline_s} s: {last}")


def knpy_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@contextmanager
def host(func_dir: Path, **env: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``python -m functions.host func_dir`` on a free port, until the block ends (SIGTERM)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "functions.host", str(func_dir)],
        env=knpy_env(LISTEN_ADDRESS=f"{LOOPBACK}:{port}", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
