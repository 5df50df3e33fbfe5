"""The data plane's value types."""

from __future__ import annotations

from shared.seams import Endpoint, RevisionKey

KEY = RevisionKey("default", "hello-00001")


def test_revision_key_str() -> None:
    assert str(KEY) == "default/hello-00001"
    assert Endpoint("p", "10.0.0.1", 8012).address == "10.0.0.1:8012"


def test_revision_keys_order_by_namespace_then_name() -> None:
    keys = [RevisionKey("b", "a"), RevisionKey("a", "z"), RevisionKey("a", "b")]
    assert sorted(keys) == [RevisionKey("a", "b"), RevisionKey("a", "z"), RevisionKey("b", "a")]
