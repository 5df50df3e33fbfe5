"""The state dir's lock, the mark every process of a run carries, and the watchdog, on real
processes: what ``knpy serve`` relies on so that nothing of a killed run outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controlplane.supervision import (
    MARK_ENV,
    StateDirBusy,
    Watchdog,
    end_marked,
    lock_state_dir,
    mark,
    marked,
)

WAIT_S = 10.0
# A shell that does not exec its last command: the sleep is its child, in its process group,
# as a `sh -c "python app.py; ..."` container's app is.
SHELL_TREE = ["sh", "-c", "sleep 60; echo done"]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def spawn(
    procs: list[subprocess.Popen[bytes]], argv: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(argv, env={**os.environ, **env}, start_new_session=True)
    procs.append(p)
    return p


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    lock = lock_state_dir(tmp_path)
    code = (
        "import sys; from pathlib import Path; from controlplane.supervision import *\n"
        "try:\n    lock_state_dir(Path(sys.argv[1]))\n"
        "except StateDirBusy as e:\n    print(e); sys.exit(3)\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert other.returncode == 3, other.stderr
    assert f"in use by another knpy serve (pid {os.getpid()})" in other.stdout
    lock.release()
    # Released (as the kernel releases it when the holder dies): the next one gets it.
    again = lock_state_dir(tmp_path)
    again.release()


def test_the_same_process_cannot_lock_twice(tmp_path: Path) -> None:
    lock = lock_state_dir(tmp_path)
    with pytest.raises(StateDirBusy):
        lock_state_dir(tmp_path)
    lock.release()


def test_end_marked_ends_groups_and_spares_the_unmarked(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    mine = spawn(procs, SHELL_TREE, mark(tmp_path))
    other_dir = spawn(procs, SHELL_TREE, mark(tmp_path / "other"))
    unmarked = spawn(procs, SHELL_TREE, {})
    until(lambda: len(marked(tmp_path)) == 2, "the shell and its sleep to carry the mark")
    assert mine.pid in marked(tmp_path)
    assert end_marked(tmp_path, grace_s=5.0) == 2
    assert marked(tmp_path) == []
    assert mine.wait(WAIT_S) == -signal.SIGTERM
    assert other_dir.poll() is None and unmarked.poll() is None


def test_end_marked_kills_what_ignores_sigterm(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    stubborn = spawn(procs, ["sh", "-c", "trap '' TERM; sleep 60; echo done"], mark(tmp_path))
    until(lambda: len(marked(tmp_path)) == 2, "the stubborn tree")
    began = time.monotonic()
    assert end_marked(tmp_path, grace_s=0.5) == 2
    assert time.monotonic() - began < 3.0
    assert stubborn.wait(WAIT_S) == -signal.SIGKILL
    assert marked(tmp_path) == []


def test_the_watchdog_ends_the_run_once_its_pipe_closes(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    watchdog = Watchdog(tmp_path)
    tree = spawn(procs, SHELL_TREE, mark(tmp_path))
    until(lambda: len(marked(tmp_path)) == 2, "the tree")
    time.sleep(0.3)
    assert tree.poll() is None  # nothing happens while knpy serve lives
    assert MARK_ENV not in (Path(f"/proc/{watchdog.proc.pid}/environ").read_bytes().decode())
    watchdog.close()  # what the kernel does to the pipe when knpy serve is SIGKILLed
    assert watchdog.proc.returncode == 0
    assert tree.wait(WAIT_S) == -signal.SIGTERM
    assert marked(tmp_path) == []


def test_a_marked_process_never_takes_a_group_it_does_not_lead(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """An exec probe is marked but runs in knpy serve's own group (a shell's job, a test
    runner's): ending it must leave the rest of that group alone."""
    leader = spawn(
        procs, ["sh", "-c", f"env {MARK_ENV}={tmp_path.resolve()} sleep 60; sleep 60"], {}
    )
    until(lambda: len(marked(tmp_path)) == 1, "the marked child")
    (child,) = marked(tmp_path)
    assert os.getpgid(child) == leader.pid != child
    assert end_marked(tmp_path, grace_s=5.0) == 1
    assert marked(tmp_path) == []
    time.sleep(0.2)
    assert leader.poll() is None  # the unmarked leader of the group lives on
