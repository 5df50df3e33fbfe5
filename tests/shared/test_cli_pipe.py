"""``knpy ... | head``: the reader leaving is a quiet exit 141, not a BrokenPipeError traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `knpy logs` with its body replaced by a long print: the pipe closes while it writes.
_CODE = """
import sys
import shared.cli as cli
def chatty(_args):
    for i in range(1_000_000):
        print(f"line {i}")
    return 0
cli._logs = chatty
sys.exit(cli.main(["logs", "hello"]))
"""


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CODE], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"line 0\n"
    proc.stdout.close()  # as `head -1` does
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(timeout=30) == 141
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
