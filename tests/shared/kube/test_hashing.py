"""ChooseSubset and the bucket names match Knative's own test vectors byte for byte.

Vectors: knative/pkg hash/hash_test.go (TestChooseSubset, TestCollisionHandling),
hash/bucketer_test.go (TestBucketSetOwner, TestBucketHas), knative/serving
pkg/autoscaler/bucket/bucket_test.go.
"""

from __future__ import annotations

import pytest

from shared.kube.hashing import (
    UNIVERSE,
    _place,
    autoscaler_bucket_name,
    autoscaler_bucket_names,
    bucket_owner,
    choose_subset,
    extract_pod_name_and_ip,
    fnv64a,
    is_bucket_host,
)

PLANETS = {"sun", "moon", "mars", "mercury"}
RAIN = {"monsoon", "chubasco", "aguacero", "chaparrón"}


@pytest.mark.parametrize(
    ("candidates", "n", "target", "want"),
    [
        pytest.param(PLANETS, 4, "a target!", PLANETS, id="return-all"),
        pytest.param(PLANETS, 9, "a target!", PLANETS, id="more-than-all"),
        pytest.param(PLANETS, 2, "a target!", {"mercury", "moon"}, id="subset-1"),
        pytest.param(PLANETS, 2, "something else entirely", {"mercury", "mars"}, id="subset-2"),
        pytest.param(
            PLANETS, 3, "something else entirely", {"mars", "mercury", "sun"}, id="select-3"
        ),
    ],
)
def test_choose_subset(candidates: set[str], n: int, target: str, want: set[str]) -> None:
    assert choose_subset(candidates, n, target) == want
    assert choose_subset(sorted(candidates, reverse=True), n, target) == want  # order-free


@pytest.mark.parametrize(
    ("key", "want"),
    [
        pytest.param("hagel", "monsoon", id="known-key"),
        pytest.param("snow", "chubasco", id="unknown-key"),
        pytest.param("snow/hail", "monsoon", id="namespaced-name"),
    ],
)
def test_bucket_owner(key: str, want: str) -> None:
    assert bucket_owner(RAIN, key) == want


def test_bucket_owner_moves_when_its_bucket_goes() -> None:
    assert bucket_owner(RAIN - {"chubasco"}, "snow") != "chubasco"
    assert bucket_owner(RAIN - {"chubasco"}, "hagel") == "monsoon"


def test_collision_resolved() -> None:
    key1 = "b08006d4-81f9-42ee-808b-ea18a39cbd83"
    key2 = "c9dc8df4-8c8d-4077-8750-6d2c2113a23b"
    target = "e68a64e1-19d8-4855-9ffa-04f49223a059"
    h1 = fnv64a((key1 + target).encode()) % UNIVERSE
    assert h1 == fnv64a((key2 + target).encode()) % UNIVERSE  # the baseline: they collide
    slots, owner = _place(sorted([key1, key2]), target.encode())
    assert len(slots) == 2 and set(owner.values()) == {key1, key2}
    assert owner[h1] == key1  # the first in sorted order keeps the slot


@pytest.mark.parametrize(
    ("data", "want"),
    [
        pytest.param(b"", 0xCBF29CE484222325, id="empty"),
        pytest.param(b"a", 0xAF63DC4C8601EC8C, id="a"),
        pytest.param(b"foobar", 0x85944171F73967E8, id="foobar"),
    ],
)
def test_fnv64a(data: bytes, want: int) -> None:
    assert fnv64a(data) == want


@pytest.mark.parametrize(
    ("ordinal", "total", "want"),
    [
        pytest.param(0, 10, "autoscaler-bucket-00-of-10", id="first-of-10"),
        pytest.param(10, 10, "autoscaler-bucket-10-of-10", id="ten-of-10"),
        pytest.param(10, 1, "autoscaler-bucket-10-of-01", id="ten-of-1"),
    ],
)
def test_bucket_name(ordinal: int, total: int, want: str) -> None:
    assert autoscaler_bucket_name(ordinal, total) == want


def test_bucket_names_and_hosts() -> None:
    assert autoscaler_bucket_names(0) == []
    assert autoscaler_bucket_names(1) == ["autoscaler-bucket-00-of-01"]
    assert autoscaler_bucket_names(3) == [
        "autoscaler-bucket-00-of-03",
        "autoscaler-bucket-01-of-03",
        "autoscaler-bucket-02-of-03",
    ]
    assert is_bucket_host("autoscaler-bucket-00-of-03")
    assert is_bucket_host("autoscaler-bucket-non-exits")
    assert not is_bucket_host("autoscaler")
    assert extract_pod_name_and_ip("as_1.2.3.4") == ("as", "1.2.3.4")
    with pytest.raises(ValueError, match=r"from 1\.2\.3\.4"):
        extract_pod_name_and_ip("1.2.3.4")
