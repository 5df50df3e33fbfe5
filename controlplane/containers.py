"""Containers from knpy's built images, for ``knpy serve --images``.

Theory of operation. By default the local kubelet runs every container as a host process
(``python -m queueproxy`` ...). With ``--images``, a container whose ``image`` is one of knpy's
built images (``images/build.sh``: the queue-proxy sidecar, the activator, the autoscaler)
runs from that image instead, the way this machine can run one: ``buildah from`` makes a
working container, then ``buildah run --isolation chroot --network host`` runs the image's
entrypoint (podman, runc and crun cannot set rlimits in this sandbox). The process sees the
image's root filesystem, user (65532) and ``ENV``, and shares the host's network, so the
kubelet's localized ports, its httpGet and tcpSocket probes and the API on 127.0.0.1 work
unchanged (an exec probe would run on the host; knpy's Deployments have none). User
containers (a Service's app) still run as host processes: knpy pulls no images.

Kubernetes' rules pick the argv: ``command`` replaces the image's Entrypoint, ``args`` its Cmd.

Each such container is one host process that the kubelet supervises like any other,
``python -m controlplane.containers`` (``main`` below). It

* makes a fresh working container (a restarted container starts from the image again, as in
  Kubernetes), after removing one of the same name that a killed run left;
* copies the pod's ``hostPath`` volumes to their ``mountPath``, owned by the image's user (a
  bind mount keeps the host file's owner and mode, and the kubeconfig is root's, 0600);
* gives the entrypoint only the container's environment (the pod spec's, resolved by the
  kubelet, plus knpy serve's extra child environment and its state dir's mark, by which
  ``controlplane/supervision.py`` finds every process of a run), never the host's;
* forwards SIGTERM and SIGINT to the entrypoint itself, because ``buildah run`` answers
  SIGTERM by SIGKILLing its child, which would cut the queue-proxy's drain (so ``buildah run``
  has a session of its own: the kubelet signals the whole group of a container's process);
* drops the three lines ``buildah run`` adds when the entrypoint exits non-zero, so that the
  log's last line (Kubernetes' termination message) is the component's own;
* exits with the entrypoint's code once it has removed the working container, and after a
  forwarded stop says so in the log (``SIGTERM passed to the entrypoint; it exited 0``).

If it is SIGKILLed, ``buildah run`` gets SIGTERM (parent-death signal) and kills the
entrypoint; the working container is then removed at the next start (``remove_leftovers``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import IO, TYPE_CHECKING, Final

if TYPE_CHECKING:
    from shared.kube.resources import Obj

__all__ = ["DEFAULT_REGISTRY", "Image", "ImageRuntime", "KnpyImages", "main"]

BUILDAH: Final = "buildah"
# images/build.sh's default name prefix: a "localhost/" name is never pulled by mistake.
DEFAULT_REGISTRY: Final = "localhost/knpy"
# One buildah call that is not a run (from, copy, rm, inspect): well under 5 s when idle.
BUILDAH_CALL_S: Final = 60.0
# The entrypoint appears below ``buildah run`` within ~0.3 s; a SIGTERM that arrives earlier
# waits for it this long before ``buildah run`` itself is stopped.
ENTRYPOINT_WAIT_S: Final = 10.0
_POLL_S: Final = 0.05
# What ``buildah run`` writes to stderr when its child exits non-zero or is killed.
_BUILDAH_EXIT_LINE: Final = re.compile(
    rb"^(subprocess exited (with status \d+|on \w+)|Error: exit status \d+)\s*$"
)
# The process ``buildah run --isolation chroot`` execs the entrypoint from.
_CHROOT_EXEC: Final = b"buildah-chroot-exec"
_PROG: Final = "controlplane.containers"
# util-linux's setpriv sets the parent-death signal and execs, as controlplane/pods.py does for
# the kubelet's processes (this process stays lean: no asyncio to import on a cold start).
_SETPRIV: Final = shutil.which("setpriv")


@dataclass(frozen=True, slots=True)
class KnpyImages:
    """The image of each knpy component that ``knpy serve --images`` runs."""

    queue_proxy: str
    activator: str
    autoscaler: str

    @classmethod
    def named(cls, tag: str, registry: str = DEFAULT_REGISTRY) -> KnpyImages:
        """images/build.sh's names: ``<registry>/<component>:<tag>``."""
        return cls(
            queue_proxy=f"{registry}/queue-proxy:{tag}",
            activator=f"{registry}/activator:{tag}",
            autoscaler=f"{registry}/autoscaler:{tag}",
        )

    def refs(self) -> tuple[str, str, str]:
        return (self.queue_proxy, self.activator, self.autoscaler)


@dataclass(frozen=True, slots=True)
class Image:
    """What running an image needs from its OCI config."""

    ref: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    user: str  # "" = root

    def argv(self, container: Obj) -> list[str]:
        """Kubernetes' rule: ``command`` replaces Entrypoint, ``args`` replaces Cmd."""
        command = [str(a) for a in container.get("command") or []]
        args = [str(a) for a in container.get("args") or []]
        if command:
            return [*command, *args]
        return [*self.entrypoint, *(args or self.cmd)]


def inspect_image(ref: str) -> Image:
    """The image's entrypoint, cmd and user, from buildah's storage.

    Raises:
        OSError: buildah is missing or the image is not there (the message says how to fix it).
    """
    if shutil.which(BUILDAH) is None:
        raise OSError("--images needs buildah: bash images/ci-deps.sh installs it")
    proc = subprocess.run(
        [BUILDAH, "inspect", "--type", "image", ref],
        capture_output=True, text=True, timeout=BUILDAH_CALL_S, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise OSError(
            f"image {ref} not found ({proc.stderr.strip() or 'buildah inspect failed'}):"
            " build it with `bash images/build.sh --offline`"
        )
    config = (json.loads(proc.stdout).get("OCIv1") or {}).get("config") or {}
    entrypoint = tuple(config.get("Entrypoint") or ())
    cmd = tuple(config.get("Cmd") or ())
    if not entrypoint and not cmd:
        raise OSError(f"image {ref} has neither an entrypoint nor a command")
    return Image(ref, entrypoint, cmd, str(config.get("User") or ""))


@dataclass(frozen=True, slots=True)
class ImageRuntime:
    """Decides which containers run from an image, and the argv of their host process."""

    images: Mapping[str, Image]
    state_dir: Path
    python: str = sys.executable
    # knpy serve's extra child environment (tests shorten periods through it): passed into
    # every container, as it is to every host process.
    extra_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __repr__(self) -> str:
        return f"<ImageRuntime {sorted(self.images)} prefix={self.prefix!r}>"

    @classmethod
    def load(
        cls,
        refs: Iterable[str],
        state_dir: Path,
        *,
        python: str = sys.executable,
        extra_env: Mapping[str, str] | None = None,
    ) -> ImageRuntime:
        """Inspect every image now, so that a missing one stops ``knpy serve`` at start.

        Raises:
            OSError: as ``inspect_image``.
        """
        images = {ref: inspect_image(ref) for ref in refs}
        return cls(images, state_dir.resolve(), python, MappingProxyType(dict(extra_env or {})))

    @property
    def prefix(self) -> str:
        """Working containers of this state dir are ``knpy-<its hash>-<pod>-<container>``:
        two ``knpy serve`` runs on one machine never remove each other's."""
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:8]
        return f"knpy-{digest}-"

    def runs(self, container: Obj) -> bool:
        return str(container.get("image", "")) in self.images

    def argv(self, container: Obj, pod: Obj, env: Iterable[str]) -> list[str]:
        """The host process for ``container`` of ``pod``: ``python -m controlplane.containers``
        with the image, the working container's name, the names of the variables to pass in
        (their values come from that process's own environment) and the copies to make."""
        image = self.images[str(container["image"])]
        meta = pod.get("metadata") or {}
        name = f"{self.prefix}{meta.get('name', 'pod')}-{container.get('name', 'container')}"
        out = [self.python, "-m", "controlplane.containers", "--image", image.ref, "--name", name]
        if image.user:
            out += ["--user", image.user]
        for var in sorted({*env, *self.extra_env}):
            out += ["--env", var]
        for src, dest in host_paths(container, pod):
            out += ["--copy", src, dest]
        return [*out, "--", *image.argv(container)]

    def remove_leftovers(self) -> int:
        """Remove this state dir's working containers that a killed run left behind."""
        proc = subprocess.run(
            [BUILDAH, "containers", "--format", "{{.ContainerName}}"],
            capture_output=True, text=True, timeout=BUILDAH_CALL_S, check=False,
        )  # fmt: skip
        stale = [n for n in proc.stdout.split() if n.startswith(self.prefix)]
        for name in stale:
            _buildah_quiet("rm", name)
        return len(stale)


def host_paths(container: Obj, pod: Obj) -> list[tuple[str, str]]:
    """(host path, mount path) of the container's volumeMounts of ``hostPath`` volumes."""
    volumes = {
        str(v.get("name")): str(v["hostPath"]["path"])
        for v in (pod.get("spec") or {}).get("volumes") or []
        if isinstance(v.get("hostPath"), dict) and v["hostPath"].get("path")
    }
    return [
        (volumes[str(m.get("name"))], str(m["mountPath"]))
        for m in container.get("volumeMounts") or []
        if str(m.get("name")) in volumes and m.get("mountPath")
    ]


# -- the container's host process -----------------------------------------------------------------
def _buildah_quiet(*args: str) -> int:
    proc = subprocess.run(
        [BUILDAH, *args], capture_output=True, timeout=BUILDAH_CALL_S, check=False
    )
    return proc.returncode


def _buildah(*args: str) -> None:
    """One buildah call that must work. Raises OSError with buildah's message."""
    proc = subprocess.run(
        [BUILDAH, *args], capture_output=True, text=True, timeout=BUILDAH_CALL_S, check=False
    )
    if proc.returncode != 0:
        raise OSError(f"buildah {args[0]}: {proc.stderr.strip()}")


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc (parent pid is the 4th field of ``stat``)."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def entrypoint_pid(run_pid: int) -> int | None:
    """The entrypoint below ``buildah run``: the child of its ``buildah-chroot-exec``."""
    children = _children()
    stack = list(children.get(run_pid, ()))
    while stack:
        pid = stack.pop()
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if argv0 == _CHROOT_EXEC:
            kids = children.get(pid, [])
            return kids[0] if kids else None
        stack.extend(children.get(pid, ()))
    return None


def _copy_stderr(src: IO[bytes], dest: IO[bytes]) -> None:
    for line in iter(src.readline, b""):
        if not _BUILDAH_EXIT_LINE.match(line):
            dest.write(line)
            dest.flush()


@dataclass(slots=True)
class _Stopper:
    """Passes SIGTERM/SIGINT on to the entrypoint once ``buildah run`` has started it.

    ``wait`` blocks in ``waitpid`` (no polling while the container runs); a signal that comes
    before the entrypoint exists starts a thread that looks for it every 50 ms.
    """

    proc: subprocess.Popen[bytes] | None = None
    signum: int = 0
    since: float = 0.0
    forwarded: bool = False

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum
        self.since = time.monotonic()
        self.arm()

    def arm(self) -> None:
        """Forward now, or keep trying beside ``wait`` (call once ``proc`` is set)."""
        if self.signum and self.proc is not None and not self.forward():
            threading.Thread(target=self._forward_soon, daemon=True).start()

    def _forward_soon(self) -> None:
        while not self.forward():
            time.sleep(_POLL_S)

    def forward(self) -> bool:
        """True once nothing is left to do: passed on, or ``buildah run`` has ended."""
        proc = self.proc
        if self.forwarded or proc is None or proc.poll() is not None:
            return True
        pid = entrypoint_pid(proc.pid)
        if pid is not None:
            try:
                os.kill(pid, self.signum)
            except ProcessLookupError:
                return False
        elif time.monotonic() - self.since > ENTRYPOINT_WAIT_S:
            proc.terminate()  # no entrypoint to drain: buildah run kills what it has
        else:
            return False
        self.forwarded = True
        return True

    def wait(self) -> int:
        assert self.proc is not None
        self.arm()  # a signal that came while buildah run was being started
        return self.proc.wait()


def run_container(
    image: str,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    copies: Sequence[tuple[str, str]] = (),
    user: str = "",
) -> int:
    """Make the working container, run ``argv`` in it to the end, remove it; the exit code
    (128 + the signal when stopped before the entrypoint began)."""
    stopper = _Stopper()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stopper.on_signal)
    try:
        try:
            _buildah("from", "--quiet", "--pull-never", "--name", name, image)
        except OSError:
            # A restart of a container whose last run was killed before it removed its
            # working container: that name is taken. (Trying first saves a call per start.)
            if _buildah_quiet("rm", name) != 0:
                raise
            _buildah("from", "--quiet", "--pull-never", "--name", name, image)
        for src, dest in copies:
            _buildah("copy", *(["--chown", user] if user else []), name, src, dest)
        if stopper.signum:
            return 128 + stopper.signum
        cmd = [BUILDAH, "run", "--isolation", "chroot", "--network", "host"]
        cmd += [f"--env={k}={v}" for k, v in env.items()]
        cmd += [name, "--", *argv]
        if _SETPRIV is not None:  # if this process is killed, buildah run stops too
            cmd = [_SETPRIV, "--pdeathsig", "TERM", "--", *cmd]
        # A session of its own: the kubelet signals this process's whole group, and a SIGTERM
        # that reached buildah run would SIGKILL the entrypoint instead of letting it drain.
        stopper.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        assert stopper.proc.stderr is not None
        copier = threading.Thread(
            target=_copy_stderr, args=(stopper.proc.stderr, sys.stderr.buffer), daemon=True
        )
        copier.start()
        code = stopper.wait()
        copier.join(timeout=BUILDAH_CALL_S)
        if stopper.forwarded:
            # The log says the stop was a drain (exit 0), not buildah's SIGKILL (exit 1).
            signame = signal.Signals(stopper.signum).name
            print(f"{_PROG}: {signame} passed to the entrypoint; it exited {code}", file=sys.stderr)
        return code
    finally:
        _buildah_quiet("rm", name)


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Run a command in a fresh working container of an image (buildah, chroot).",
    )
    parser.add_argument("--image", required=True)
    parser.add_argument("--name", required=True, help="the working container's name")
    parser.add_argument("--user", default="", help="owner of the copies (the image's user)")
    parser.add_argument("--env", action="append", default=[], help="a variable to pass in")
    parser.add_argument(
        "--copy", nargs=2, action="append", default=[], metavar=("SRC", "DEST"),
        help="a host file to copy into the container before it runs",
    )  # fmt: skip
    parser.add_argument("argv", nargs="+", help="-- then the command")
    ns = parser.parse_args(args)
    env = {k: os.environ[k] for k in ns.env if k in os.environ}
    try:
        return run_container(
            ns.image, ns.name, ns.argv, env, [(src, dest) for src, dest in ns.copy], ns.user
        )
    except (OSError, subprocess.SubprocessError) as err:
        print(f"{_PROG}: {err}", file=sys.stderr, flush=True)
        return 128  # Kubernetes' StartError exit code: the runtime could not start it


if __name__ == "__main__":
    sys.exit(main())
