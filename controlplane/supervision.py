"""Supervision of ``knpy serve``'s processes: one run per state dir, and nothing outlives it.

Theory of operation. A kubelet's containers live in cgroups, so a node agent that crashes and
comes back finds them and a killed pod leaves nothing behind. Here a pod is a process group (the
kubelet starts every container in a session of its own) and ``knpy serve`` is the node agent,
so three things stand in for the cgroup (issue 10: a SIGKILLed ``knpy serve`` left every child
running, and a restart then had two autoscalers fighting over the same Deployments):

* **The mark.** Every process ``knpy serve`` starts carries ``KNPY_SERVE_STATE=<state dir>`` in
  its environment, and so does whatever those start (``sh -c`` apps, their children), because
  children inherit the environment. ``/proc/<pid>/environ`` is fixed at ``exec``, so the mark
  names a process of this state dir and nothing else: a recycled pid does not carry it, and no
  pid file can go stale. ``marked`` finds them; ``end_marked`` ends them, group by group.
* **The lock.** ``lock_state_dir`` takes ``flock`` on ``<state dir>/serve.lock`` (released by the
  kernel however the process ends) and writes its pid there, so a second ``knpy serve`` on the
  same dir is refused with the first one's pid instead of sharing its store. Whoever holds the
  lock owns every marked process, so a new run first ends what the last one left.
* **The watchdog.** ``python -m controlplane.supervision`` runs beside ``knpy serve`` in its own
  session, reading a pipe from it. When the pipe closes, ``knpy serve`` has ended (drained, or
  killed with no chance to drain), and the watchdog ends every marked process: the children had
  a parent-death SIGTERM already (``pods.die_with_parent``), but grandchildren such as the app
  of ``sh -c "python app.py; ..."`` had none. It carries no mark itself.

Linux only where it reads ``/proc``; elsewhere ``marked`` finds nothing and the lock still holds.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

__all__ = [
    "MARK_ENV",
    "StateDirBusy",
    "StateLock",
    "Watchdog",
    "end_marked",
    "lock_state_dir",
    "mark",
    "marked",
    "write_private",
]

MARK_ENV: Final = "KNPY_SERVE_STATE"
LOCK_FILE: Final = "serve.lock"
# A marked process gets SIGTERM, then this long before SIGKILL: a queue-proxy drains for its
# 2-s period locally and the activator for 1 s (controlplane/pods.py, system.py).
END_GRACE_S: Final = 10.0
_POLL_S: Final = 0.05
_PROC: Final = Path("/proc")


class StateDirBusy(Exception):
    """Another live ``knpy serve`` holds the state dir's lock."""


def mark(state_dir: Path) -> dict[str, str]:
    """The environment entry every process of this run carries."""
    return {MARK_ENV: str(state_dir.resolve())}


# -- the lock -----------------------------------------------------------------------------------
@dataclass(slots=True)
class StateLock:
    """The open, locked ``serve.lock`` (the kernel drops the lock when the process ends)."""

    path: Path
    file: IO[str]

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()


def lock_state_dir(state_dir: Path) -> StateLock:
    """Lock ``state_dir`` for this process, or say who has it.

    Raises:
        StateDirBusy: another process holds the lock (its pid in the message).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    file = path.open("a+")  # not truncated before the lock is ours: it names the holder
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = _holder(file.read())
        file.close()
        raise StateDirBusy(
            f"the state dir {state_dir} is in use by another knpy serve"
            f"{f' (pid {holder})' if holder else ''}; stop it first or choose another --state-dir"
        ) from None
    file.seek(0)
    file.truncate()
    file.write(json.dumps({"pid": os.getpid(), "started": time.time()}) + "\n")
    file.flush()
    return StateLock(path, file)


def _holder(text: str) -> int | None:
    try:
        pid = json.loads(text).get("pid")
    except (ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


# -- the marked processes -----------------------------------------------------------------------
def marked(state_dir: Path) -> list[int]:
    """The live processes carrying this state dir's mark (never this process)."""
    needle = "=".join(next(iter(mark(state_dir).items()))).encode()
    own = os.getpid()
    found = []
    for pid in _pids():
        if pid == own:
            continue
        try:
            environ = (_PROC / str(pid) / "environ").read_bytes()
        except OSError:  # gone, a zombie's empty environ reads fine; another user's: EACCES
            continue
        if needle in environ.split(b"\0"):
            found.append(pid)
    return found


def _pids() -> Iterator[int]:
    try:
        entries = os.listdir(_PROC)
    except OSError:
        return
    for name in entries:
        if name.isdigit():
            yield int(name)


def _signal_groups(pids: Iterable[int], sig: signal.Signals) -> None:
    """``sig`` to each marked process's group when the group's leader carries the mark too (a
    pod container leads one: its ``sh -c`` children go with it), else to the process alone.

    A marked process in a group it does not lead (an exec probe, in knpy serve's own group,
    which is a shell's job or a test runner's) must never take that group with it.
    """
    marked_pids = set(pids)
    for pid in marked_pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group in marked_pids:
                os.killpg(group, sig)
            else:
                os.kill(pid, sig)


def end_marked(state_dir: Path, grace_s: float = END_GRACE_S) -> int:
    """End every marked process: SIGTERM to its group, SIGKILL after ``grace_s``.

    Returns:
        How many marked processes there were.
    """
    found = marked(state_dir)
    if not found:
        return 0
    _signal_groups(found, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (left := marked(state_dir)) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    if left:
        _signal_groups(left, signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        while marked(state_dir) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
    return len(found)


# -- the watchdog -------------------------------------------------------------------------------
class Watchdog:
    """The process that ends the marked processes once ``knpy serve`` is gone."""

    def __init__(self, state_dir: Path, python: str = sys.executable) -> None:
        env = {k: v for k, v in os.environ.items() if k != MARK_ENV}
        self.proc = subprocess.Popen(
            [python, "-m", "controlplane.supervision", "--state-dir", str(state_dir.resolve())],
            stdin=subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C reaches knpy serve, not the watchdog
        )

    def __repr__(self) -> str:
        return f"<Watchdog pid={self.proc.pid}>"

    def close(self, timeout_s: float = 2 * END_GRACE_S) -> None:
        """Tell it ``knpy serve`` is done (it ends what is left) and reap it."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _watch(state_dir: Path, grace_s: float) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    ended = end_marked(state_dir, grace_s)
    if ended:
        print(f"knpy serve watchdog: ended {ended} processes left running", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controlplane.supervision", description=__doc__)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--grace", type=float, default=END_GRACE_S, help="seconds before SIGKILL")
    args = p.parse_args(argv)
    return _watch(args.state_dir, args.grace)


if __name__ == "__main__":
    sys.exit(main())


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), replaced atomically: the
    state dir's secrets (a token, a URL with a password) are not for the machine's other
    users."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
