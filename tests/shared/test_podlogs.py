"""``knpy logs``' reading of log files: the last N lines, complete lines only while following,
a truncated file read again (the pod discovery runs against a real knpy serve in
tests/controlplane/test_cli.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.apiclient import Api
from shared.podlogs import LogFollower, PodLog


def follower(out: list[bytes], *, prefix: bool = False) -> LogFollower:
    return LogFollower(
        api=Api("http://127.0.0.1:9"), state_dir=Path("."), namespace="default",
        service="hello", container=None, write=out.append, prefix=prefix,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("content", "tail", "printed"),
    [
        pytest.param(b"a\nb\nc\n", -1, b"a\nb\nc\n", id="all"),
        pytest.param(b"a\nb\nc\n", 2, b"b\nc\n", id="last-two"),
        pytest.param(b"a\nb\nc\n", 5, b"a\nb\nc\n", id="more-than-there-are"),
        pytest.param(b"a\nb\nc\n", 0, b"", id="none"),
        pytest.param(b"a\nb\nc", 1, b"c\n", id="unterminated-last-line-counts"),
        pytest.param(b"", 3, b"", id="empty"),
        pytest.param(b"x" * 100_000 + b"\n" + b"y\n" * 3, 2, b"y\ny\n", id="past-a-block"),
        pytest.param(b"x" * 100_000 + b"\ny\n", 2, b"x" * 100_000 + b"\ny\n",
                     id="a-line-longer-than-a-block"),
    ],
)  # fmt: skip
def test_print_all_with_tail(tmp_path: Path, content: bytes, tail: int, printed: bytes) -> None:
    path = tmp_path / "user-container.log"
    path.write_bytes(content)
    out: list[bytes] = []
    follower(out).print_all([PodLog("p", "user-container", path)], tail)
    assert b"".join(out) == printed


def test_following_prints_complete_lines_and_rereads_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "user-container.log"
    path.write_bytes(b"old\n")
    out: list[bytes] = []
    f = follower(out, prefix=True)
    log = PodLog("hello-00001-deployment-abc-xyz12", "user-container", path)
    f.logs[path] = log
    f.print_all([log])
    with path.open("ab") as w:
        w.write(b"one\ntw")
    f.print_new()
    with path.open("ab") as w:
        w.write(b"o\n")
    f.print_new()
    path.write_bytes(b"new\n")  # truncated and written again (a shorter file)
    f.print_new()
    tag = b"[pod/hello-00001-deployment-abc-xyz12/user-container] "
    assert out == [tag + b"old\n", tag + b"one\n", tag + b"two\n", tag + b"new\n"]
