"""``knpy logs SERVICE``: what a service's pods printed, from the files knpy serve's kubelet writes.

The local kubelet appends each container's output to
``<state dir>/pods/<namespace>/<pod>/<container>.log`` (controlplane/kubelet.py) and keeps the file
after the pod ends, so unlike ``kubectl logs`` this also shows the pods a scale to zero removed.
A service's pods are those of its revisions' Deployments (label ``serving.knative.dev/service``),
named ``<deployment>-<template hash>-<suffix>`` as a ReplicaSet names them.

Following (``-f``) reads what each file gained every POLL_S and looks for new pods (a scale-up,
a new revision) every DISCOVER_S; a line is printed once complete, a truncated file is read
again from its start.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from shared.apiclient import Api, ApiFailure
from shared.kube.resources import DEPLOYMENTS, KSERVICES

__all__ = ["LogFollower", "PodLog", "service_logs"]

POLL_S: Final = 0.2
DISCOVER_S: Final = 1.0
QUEUE_PROXY: Final = "queue-proxy"
# Reading a file's end for --tail: this much at a time, backwards.
_TAIL_BLOCK_BYTES: Final = 64 * 1024


@dataclass(slots=True)
class PodLog:
    """One container's log file and how far it has been read."""

    pod: str
    container: str
    path: Path
    offset: int = 0
    partial: bytes = b""  # the start of a line not yet complete

    @property
    def prefix(self) -> bytes:
        return f"[pod/{self.pod}/{self.container}] ".encode()


@dataclass(slots=True)
class LogFollower:
    """Finds a service's container logs and prints what they hold and gain."""

    api: Api
    state_dir: Path
    namespace: str
    service: str
    container: str | None  # None: the app's container (the first one that is not queue-proxy)
    write: Callable[[bytes], None]
    prefix: bool = False
    logs: dict[Path, PodLog] = field(default_factory=dict)

    def discover(self) -> list[PodLog]:
        """The service's container logs not seen before, oldest pod first.

        Raises:
            ApiFailure: no such service, or a container name no pod of it has.
        """
        if self.api.get(KSERVICES, self.namespace, self.service) is None:
            raise ApiFailure(f'services.serving.knative.dev "{self.service}" not found')
        selector = f"serving.knative.dev/service={self.service}"
        found: list[tuple[float, PodLog]] = []
        names: set[str] = set()
        root = self.state_dir / "pods" / self.namespace
        for dep in self.api.list(DEPLOYMENTS, self.namespace, selector):
            containers = [
                str(c.get("name", ""))
                for c in ((dep.get("spec") or {}).get("template") or {})
                .get("spec", {})
                .get("containers")
                or []
            ]
            names.update(containers)
            want = self.container or next((c for c in containers if c != QUEUE_PROXY), "")
            pod_name = re.compile(re.escape(dep["metadata"]["name"]) + r"-[a-z0-9]+-[a-z0-9]+")
            for pod_dir in _children(root):
                path = pod_dir / f"{want}.log"
                if pod_name.fullmatch(pod_dir.name) and path not in self.logs and path.exists():
                    found.append((pod_dir.stat().st_mtime, PodLog(pod_dir.name, want, path)))
        if self.container and names and self.container not in names:
            raise ApiFailure(
                f'container "{self.container}" is not in the pods of service "{self.service}"'
                f" (they have {', '.join(sorted(names))})"
            )
        found.sort(key=lambda f: (f[0], f[1].pod))
        new = [log for _, log in found]
        self.logs.update((log.path, log) for log in new)
        return new

    def print_all(self, logs: Iterable[PodLog], tail: int = -1) -> None:
        """Every line each log holds now (its last ``tail`` when >= 0)."""
        for log in logs:
            try:
                with log.path.open("rb") as f:
                    end = f.seek(0, os.SEEK_END)
                    log.offset = _tail_start(f, end, tail) if tail >= 0 else 0
                    f.seek(log.offset)
                    data = f.read(end - log.offset)
            except OSError:  # gone with its state dir
                continue
            log.offset = end
            self._emit(log, data)

    def print_new(self) -> None:
        """What every known log gained since it was last read (complete lines only)."""
        for log in self.logs.values():
            try:
                with log.path.open("rb") as f:
                    end = f.seek(0, os.SEEK_END)
                    if end < log.offset:  # truncated: read again from its start
                        log.offset, log.partial = 0, b""
                    f.seek(log.offset)
                    data = f.read(end - log.offset)
            except OSError:
                continue
            log.offset = end
            self._emit(log, data, complete_only=True)

    def _emit(self, log: PodLog, data: bytes, complete_only: bool = False) -> None:
        data = log.partial + data
        if complete_only:
            cut = data.rfind(b"\n") + 1
            data, log.partial = data[:cut], data[cut:]
        else:
            log.partial = b""
            if data and not data.endswith(b"\n"):
                data += b"\n"
        if not data:
            return
        if self.prefix:
            lines = data.splitlines(keepends=True)
            data = b"".join(log.prefix + line for line in lines)
        self.write(data)


def service_logs(
    follower: LogFollower,
    *,
    follow: bool,
    tail: int = -1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the service's logs, then (``follow``) what they gain until interrupted."""
    first = follower.discover()
    follower.print_all(first, tail)
    if not first:
        hint = "; waiting for one" if follow else ""
        print(f"No pods of service '{follower.service}' yet{hint}.", file=sys.stderr)
    if not follow:
        return 0
    next_discovery = clock() + DISCOVER_S
    while True:
        sleep(POLL_S)
        follower.print_new()
        if clock() >= next_discovery:
            next_discovery = clock() + DISCOVER_S
            follower.print_all(follower.discover())


def _children(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        return []


def _tail_start(f: BinaryIO, end: int, lines: int) -> int:
    """Where the last ``lines`` lines of the file's first ``end`` bytes begin (an unterminated
    last line counts as one)."""
    if lines == 0:
        return end
    start = end
    data = b""
    while start > 0:
        start = max(0, start - _TAIL_BLOCK_BYTES)
        f.seek(start)
        data = f.read(end - start)
        if data.count(b"\n") > lines:  # more than enough: the first piece may be partial
            break
    kept = data.splitlines(keepends=True)[-lines:]
    return end - sum(len(line) for line in kept)
