"""Knative's ForwardedShimHandler cases (pkg/queue/forwarded_shim_test.go)."""

from __future__ import annotations

import pytest

from queueproxy.forwarded import generate_forwarded


@pytest.mark.parametrize(
    ("xff", "xfh", "xfp", "want"),
    [
        pytest.param("127.0.0.1, ::1", "h", "p", 'for=127.0.0.1;host=h;proto=p, for="[::1]"',
                     id="multiple xff"),
        pytest.param("127.0.0.1", "h", "p", "for=127.0.0.1;host=h;proto=p", id="single xff"),
        pytest.param("127.0.0.1, ::1", None, None, 'for=127.0.0.1, for="[::1]"',
                     id="multiple xff, no xfh, no xfp"),
        pytest.param("127.0.0.1, ::1", None, "p", 'for=127.0.0.1;proto=p, for="[::1]"',
                     id="multiple xff, no xfh"),
        pytest.param("127.0.0.1, ::1", "h", None, 'for=127.0.0.1;host=h, for="[::1]"',
                     id="multiple xff, no xfp"),
        pytest.param(None, "h", None, "host=h", id="only xfh"),
        pytest.param(None, None, "p", "proto=p", id="only xfp"),
        pytest.param(None, "h", "p", "host=h;proto=p", id="only xfp and xfh"),
        pytest.param(",,,", None, None, "for=, for=, for=", id="broken for"),
        pytest.param("a, ", None, None, "for=a, for=", id="blank last node"),
    ],
)
def test_generate_forwarded(xff: str | None, xfh: str | None, xfp: str | None, want: str) -> None:
    def enc(v: str | None) -> bytes | None:
        return v.encode() if v is not None else None

    assert generate_forwarded(enc(xff), enc(xfp), enc(xfh)).decode() == want
