"""Process and probe helpers of the local node's kubelet (``controlplane/kubelet.py``).

What Kubernetes' kubelet does to a container's process, as pure helpers and constants: the
CrashLoopBackOff delays, the exit code of a process killed by a signal, the last line of a
crashed container's log (Kubernetes' FallbackToLogsOnError), the readinessProbe's timings,
SIGTERM-then-SIGKILL, and the free loopback ports every local pod gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Protocol

from shared import lifeline
from shared.lifeline import Spawn

__all__ = [
    "LocalProcess",
    "ProbeSettings",
    "Process",
    "Spawn",
    "crash_backoff_s",
    "end_group",
    "exit_code",
    "last_log_line",
    "resolve_executable",
    "start_process",
    "terminate",
    "tied_to_parent",
]

_log = logging.getLogger(__name__)

LOOPBACK: Final = "127.0.0.1"
# The local endpoint watches propagate a removal in milliseconds, not the seconds of a
# cluster's Endpoints -> kube-proxy/ingress path, so the queue-proxy's drain period (its quiet
# period after SIGTERM, Knative's 30 s drainSleepDuration) can be much shorter here: 2 s covers
# a request that an ingress or activator picked this pod for just before the removal arrived.
DEFAULT_DRAIN_PERIOD_S: Final = 2.0
# After the queue-proxy exited, the user process gets SIGTERM and this long before SIGKILL
# (Kubernetes' terminationGracePeriodSeconds default is 30 s; the app has nothing left to serve).
USER_STOP_GRACE_S: Final = 10.0
# Margin over drain period + revision timeout before a queue-proxy that does not exit is killed.
QUEUE_STOP_MARGIN_S: Final = 5.0
# Kubernetes' probe defaults (periodSeconds 10, timeoutSeconds 1, failureThreshold 3).
KUBELET_PERIOD_S: Final = 10.0
KUBELET_FAILURE_THRESHOLD: Final = 3
# With periodSeconds 0 the queue-proxy polls aggressively for up to 10 s per call (its
# POLL_TIMEOUT_S); the kubelet call waits a little longer than that.
AGGRESSIVE_CALL_TIMEOUT_S: Final = 11.0
# While not ready a pod is polled again this soon; once ready, every KUBELET_PERIOD_S unless
# the probe says otherwise (a crash is noticed by the process exit, not by probes).
STARTING_POLL_S: Final = 0.05
# CrashLoopBackOff: 0.5 s, 1 s, 2 s ... at most 30 s between replacements of crashing pods.
CRASH_BACKOFF_FIRST_S: Final = 0.5
CRASH_BACKOFF_MAX_S: Final = 30.0
# A pod that ran this long before it crashed resets the back-off.
CRASH_BACKOFF_RESET_S: Final = 60.0
# How much of the end of a crashed container's log is read for its last line (Kubernetes'
# FallbackToLogsOnError, which Knative sets on user containers, keeps at most 2048 bytes).
TERMINATION_LOG_TAIL_BYTES: Final = 2048


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """The kubelet side of the user's readinessProbe (corev1.Probe timings)."""

    period_s: float = 0.0  # 0 = Knative's aggressive probing inside the queue-proxy
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = KUBELET_FAILURE_THRESHOLD
    initial_delay_s: float = 0.0

    @classmethod
    def from_probe(cls, probe: Mapping[str, object] | None) -> ProbeSettings:
        if not probe:
            return cls()

        def number(key: str, default: float) -> float:
            value = probe.get(key)
            return float(value) if isinstance(value, int | float) and value > 0 else default

        return cls(
            period_s=number("periodSeconds", 0.0),
            timeout_s=number("timeoutSeconds", 1.0),
            success_threshold=int(number("successThreshold", 1)),
            failure_threshold=int(number("failureThreshold", KUBELET_FAILURE_THRESHOLD)),
            initial_delay_s=number("initialDelaySeconds", 0.0),
        )


def exit_code(returncode: int) -> int:
    """Kubernetes' exit code of a process: killed by signal N is 128 + N (SIGKILL: 137)."""
    return returncode if returncode >= 0 else 128 - returncode


def last_log_line(path: Path) -> str:
    """The last non-blank line of a container's log ("" if there is none)."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - TERMINATION_LOG_TAIL_BYTES))
            tail = log.read()
    except OSError:
        return ""
    lines = [line.strip() for line in tail.decode(errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), "")


def crash_backoff_s(consecutive_crashes: int) -> float:
    """Delay before replacing a pod after this many crashes in a row (0 for none)."""
    if consecutive_crashes <= 0:
        return 0.0
    return float(min(CRASH_BACKOFF_MAX_S, CRASH_BACKOFF_FIRST_S * 2 ** (consecutive_crashes - 1)))


# -- processes ----------------------------------------------------------------------------------
def tied_to_parent(
    argv: Sequence[str], env: Mapping[str, str] | None, sig: signal.Signals = signal.SIGTERM
) -> Spawn:
    """The spawn of ``argv`` that ties the child's life to this process (shared/lifeline.py).

    Pods run in sessions of their own, so a signal to knpy serve's process group never reaches
    them; without this a SIGKILLed ``knpy serve`` (or a killed test run) left every pod and the
    activator and autoscaler running, orphaned to init. SIGTERM lets each drain as it would on
    a kubelet's stop.

    Raises:
        OSError: the command cannot be executed (not found, not executable), as the exec
            itself would have raised, so a wrapper never hides the OS error from the caller.
    """
    return lifeline.tied_to_parent([resolve_executable(argv[0], env), *argv[1:]], sig)


class LocalProcess:
    """A child started by Python's subprocess (vfork, then exec) and awaited through a pidfd.

    uvloop's ``subprocess_exec`` spawns with libuv's fork(), which copies knpy serve's page
    tables before the exec: 56 ms per process with 150 MB of Python objects, measured, against
    2 ms by vfork. knpy serve holds the API's objects, so every container of a cold start paid
    it. The spawn is synchronous (2 ms) and on the loop's thread on purpose: PR_SET_PDEATHSIG
    follows the thread that forked, and an executor thread may end before the child should.
    """

    __slots__ = ("_popen",)

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen

    def __repr__(self) -> str:
        return f"<LocalProcess pid={self.pid} returncode={self.returncode}>"

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int:
        """The exit status (negative: the signal), reaped; many may wait at once."""
        if (code := self._popen.poll()) is not None:
            return code
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:  # reaped by another waiter between the poll and here
            return self._popen.wait()
        try:
            loop.add_reader(fd, _settle, exited)
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return self._popen.wait()


def _settle(exited: asyncio.Future[None]) -> None:
    if not exited.done():
        exited.set_result(None)


def start_process(
    spawn: Spawn, *, cwd: str | None, env: Mapping[str, str], stdout: IO[bytes]
) -> LocalProcess:
    """Start ``spawn`` in a session of its own, stdin from /dev/null, stderr into stdout.

    Raises:
        OSError: the exec failed (the working directory is missing, ...).
    """
    popen = subprocess.Popen(
        spawn.argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=spawn.preexec_fn,
    )
    return LocalProcess(popen)


def resolve_executable(command: str, env: Mapping[str, str] | None) -> str:
    """``command`` as exec would find it: by the child's PATH when it has no slash.

    Raises:
        FileNotFoundError, PermissionError: with exec's errno and message.
    """
    if "/" in command:
        path: str | None = command
        if not os.path.exists(command):
            path = None
    else:
        search = (env if env is not None else os.environ).get("PATH", os.defpath)
        path = shutil.which(command, mode=os.F_OK, path=search)
    if path is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), command)
    return path


class Process(Protocol):
    """What ``terminate`` needs of a child: asyncio's Process or a ``LocalProcess``."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


async def terminate(
    proc: Process | None, grace_s: float, *, group: bool = False
) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL; always reaps the process.

    ``group``: the process leads a process group (a container: the kubelet starts each in a
    session of its own), and the whole group gets the signals, and SIGKILL once the leader is
    gone (``end_group``). A ``sh -c "python app.py; ..."`` container's app is the shell's
    child, which a signal to the shell alone left running with its port.
    """
    if proc is None or proc.returncode is not None:
        if proc is not None:
            await proc.wait()
            if group:
                end_group(proc.pid)
        return
    _signal(proc.pid, signal.SIGTERM, group)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        _signal(proc.pid, signal.SIGKILL, group)
        await proc.wait()
    if group:
        end_group(proc.pid)


def end_group(leader: int) -> None:
    """SIGKILL what is left of the process group ``leader`` led, once it has exited.

    Kubernetes' container runtime does the same when a container's main process exits: the
    rest of its PID namespace is killed. A group id stays allocated while any member lives, so
    this reaches only processes the container started.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
