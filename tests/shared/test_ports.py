"""shared.ports: the kernel's choice by default, a range of its own when KNPY_PORT_RANGE says."""

from __future__ import annotations

import random
import socket

import pytest

from shared.ports import LOOPBACK, PORT_RANGE_ENV, free_port, port_range


def test_unset_or_empty_means_no_range() -> None:
    assert port_range(None) is None
    assert port_range("") is None


@pytest.mark.parametrize("value", ["20000", "20000-", "a-b", "30000-20000", "80-90", "20000-70000"])
def test_a_bad_range_names_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match=PORT_RANGE_ENV):
        port_range(value)


def test_without_a_range_the_kernel_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_RANGE_ENV, raising=False)
    port = free_port()
    with socket.socket() as s:
        s.bind((LOOPBACK, port))  # free, as promised


def _five_free_ports() -> int:
    """The first of five consecutive free ports below the kernel's ephemeral range."""
    for lo in range(random.randrange(12_000, 30_000, 5), 32_000, 5):
        if all(_bindable(p) for p in range(lo, lo + 5)):
            return lo
    raise AssertionError("no five consecutive free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def test_a_range_is_walked_without_repeats_and_skips_taken_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lo = _five_free_ports()
    with socket.socket() as taken:
        taken.bind((LOOPBACK, lo + 2))
        taken.listen()
        monkeypatch.setenv(PORT_RANGE_ENV, f"{lo}-{lo + 4}")
        got = [free_port() for _ in range(4)]
        assert lo + 2 not in got
        assert sorted(got) == [lo, lo + 1, lo + 3, lo + 4]
        # The fifth call wraps around the range, past the one taken port again.
        assert free_port() in got


def test_a_full_range_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        busy = taken.getsockname()[1]
        monkeypatch.setenv(PORT_RANGE_ENV, f"{busy}-{busy}")
        with pytest.raises(OSError, match=PORT_RANGE_ENV):
            free_port()
