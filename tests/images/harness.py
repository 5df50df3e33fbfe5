"""Build knpy's images and run them the way this machine can: buildah, chroot isolation.

``podman run``, runc and crun cannot start here (the sandbox may not set rlimits), so a
container is ``buildah from IMAGE`` then ``buildah run --isolation chroot`` of the image's own
entrypoint and user: no network namespace, so the container shares the host's loopback, and an
app, an API server or a WebSocket peer on 127.0.0.1 is reachable from both sides. ``buildah
run`` answers SIGTERM by killing its child, so a kubelet-like SIGTERM goes to the entrypoint's
process itself, found among the descendants of ``buildah run``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "images" / "build.sh"
COMPONENTS = ("queue-proxy", "activator", "autoscaler")
# A cold --offline build here: debootstrap about 70 s, base import 20 s, three images 80 s.
BUILD_TIMEOUT_S = 900.0
COMMAND_TIMEOUT_S = 120.0
_LINE = re.compile(r"^(?P<component>\S+)\s+(?P<image>\S+)\s+(?P<mb>[\d.]+) MB\s+(?P<s>[\d.]+)s$")


@dataclass(frozen=True)
class Built:
    """One image images/build.sh reported."""

    component: str
    image: str
    size_mb: float
    seconds: float


def require_tools() -> None:
    """Fails with the fix when buildah or debootstrap is missing (images/ci-deps.sh)."""
    missing = [t for t in ("buildah", "debootstrap") if not _which(t)]
    if missing:
        raise RuntimeError(
            f"missing {', '.join(missing)}: run `bash images/ci-deps.sh` (as root) first"
        )


def _which(tool: str) -> bool:
    return any(
        os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(":")
    )


def build(tag: str, archive: Path | None = None) -> dict[str, Built]:
    """``bash images/build.sh --offline --tag TAG [--archive DIR]``, every component."""
    cmd = ["bash", str(BUILD_SCRIPT), "--offline", "--engine", "buildah", "--tag", tag]
    if archive is not None:
        cmd += ["--archive", str(archive)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"images/build.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    built: dict[str, Built] = {}
    for line in proc.stdout.splitlines():
        m = _LINE.match(line.strip())
        if m:
            built[m["component"]] = Built(
                m["component"], m["image"], float(m["mb"]), float(m["s"])
            )
    return built


def buildah(*args: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """Runs buildah; its stdout. Raises RuntimeError with stderr on failure."""
    proc = subprocess.run(
        ["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def image_config(image: str) -> dict[str, Any]:
    """The image's OCI config (``config`` of the image configuration: User, Entrypoint, ...)."""
    info = json.loads(buildah("inspect", "--type", "image", image))
    config: dict[str, Any] = info["OCIv1"]["config"]
    return config


def remove_image(image: str) -> None:
    subprocess.run(["buildah", "rmi", "-f", image], capture_output=True, timeout=60, check=False)


class Container:
    """One image's entrypoint running under chroot isolation; a context manager that cleans up."""

    def __init__(self, image: str, log_dir: Path) -> None:
        self.image = image
        self.name = f"knpy-test-{uuid.uuid4().hex[:10]}"
        self.log_path = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.entrypoint: list[str] = list(image_config(image)["Entrypoint"])
        self.started_at = 0.0
        self.copied: set[str] = set()
        buildah("from", "--quiet", "--name", self.name, image)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Container({self.image!r}, name={self.name!r})"

    def copy_in(self, src: Path, dest: str) -> None:
        """Puts a host file into the container, owned by the image's user (65532)."""
        buildah("copy", "--chown", "65532:65532", self.name, str(src), dest)
        self.copied.add(dest)

    def written_files(self) -> set[str]:
        """Files the run created, changed or deleted in the container's root (copy_in's aside).

        Read from the overlay upper directory, so it needs buildah's overlay storage. Empty
        means the component runs on Knative's ``readOnlyRootFilesystem: true``.
        """
        merged = Path(buildah("mount", self.name).strip())
        try:
            upper = merged.parent / "diff"
            if merged.name != "merged" or not upper.is_dir():
                raise RuntimeError(f"{self}: not on overlay storage ({merged})")
            return {
                "/" + p.relative_to(upper).as_posix() for p in upper.rglob("*") if not p.is_dir()
            } - self.copied
        finally:
            buildah("umount", self.name)

    def exec(self, argv: Sequence[str]) -> str:
        """Runs a command in the container to completion, as the image's user; its stdout."""
        return buildah("run", "--isolation", "chroot", self.name, "--", *argv)

    def start(self, env: Mapping[str, str], args: Sequence[str] = ()) -> None:
        """Starts the image's entrypoint (plus ``args``) with ``env``, in the background."""
        cmd = ["buildah", "run", "--isolation", "chroot"]
        cmd += [f"--env={k}={v}" for k, v in env.items()]
        cmd += [self.name, "--", *self.entrypoint, *args]
        self.started_at = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def entrypoint_process(self, timeout_s: float = 10.0) -> psutil.Process:
        """The entrypoint's own process (uid 65532), below buildah run's chroot runtime."""
        assert self.proc is not None, "not started"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                try:
                    cmdline = child.cmdline()
                except psutil.NoSuchProcess:
                    continue
                if "python" in os.path.basename(cmdline[0] if cmdline else "") and (
                    self.entrypoint[0] in cmdline
                ):
                    return child
            time.sleep(0.05)
        raise TimeoutError(f"{self}: no entrypoint process under buildah run\n{self.logs()}")

    def sigterm(self) -> None:
        """What the kubelet does at pod deletion: SIGTERM to the entrypoint."""
        self.entrypoint_process().send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        """The entrypoint's exit code (buildah run passes it on)."""
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout=timeout_s)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    child.kill()
            except psutil.NoSuchProcess:
                pass
            self.proc.kill()
            self.proc.wait(timeout=30)
        subprocess.run(["buildah", "rm", self.name], capture_output=True, timeout=60, check=False)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 5.0) -> Reply:
    """One GET; any HTTP status is a Reply, connection errors raise OSError."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return Reply(resp.status, resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.read(), dict(err.headers))


def wait_for(
    check: Callable[[], bool], timeout_s: float, what: str, logs: Callable[[], str] = str
) -> float:
    """Polls ``check`` (connection errors count as False) until true; seconds it took."""
    start = time.monotonic()
    deadline = start + timeout_s
    while True:
        try:
            if check():
                return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s} s\n{logs()}")
        time.sleep(0.05)
