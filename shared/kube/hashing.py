"""Knative's consistent subsetting (knative/pkg ``hash``) and the autoscaler's bucket names.

Theory of operation (knative/pkg hash/hash.go, ``ChooseSubset``): every candidate is placed on a
ring of ``UNIVERSE`` = 2048 slots at FNV-64a(candidate + target) mod 2048; two candidates on one
slot are separated by appending the colliding hash in hex and hashing again. The target picks a
start angle FNV-64a(target + "start-angle-salt") and a step FNV-64a(target + "step-angle-salt")
(both mod 2048). From the start angle, take the first candidate at or after the angle (wrapping),
or the next free one if already taken, then advance by the step; repeat until ``n`` are chosen.
Candidates are placed in sorted order (``sets.List``), so collisions resolve the same way on
every replica, in Go or here.

Knative uses it twice: the autoscaler's bucket ownership (``BucketSet.Owner`` = the subset of 1
of the bucket names for the key ``namespace/name``, hash/bucketer.go) and the SKS reconciler's
choice of ``numActivators`` activators for a revision. Python and Go replicas must agree byte for
byte, which the test vectors from knative/pkg pin down.

Pure: no asyncio, no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Final

__all__ = [
    "AUTOSCALER_BUCKET_PREFIX",
    "UNIVERSE",
    "autoscaler_bucket_name",
    "autoscaler_bucket_names",
    "bucket_owner",
    "choose_subset",
    "extract_pod_name_and_ip",
    "fnv64a",
    "is_bucket_host",
]

START_SALT: Final = b"start-angle-salt"
STEP_SALT: Final = b"step-angle-salt"
# The ring's size; a power of two so 2**64 hashes spread evenly over it.
UNIVERSE: Final = 1 << 11

_FNV64_OFFSET: Final = 0xCBF29CE484222325
_FNV64_PRIME: Final = 0x100000001B3
_MASK64: Final = (1 << 64) - 1

AUTOSCALER_BUCKET_PREFIX: Final = "autoscaler-bucket"


def fnv64a(data: bytes) -> int:
    """FNV-1a, 64 bit (Go's hash/fnv New64a)."""
    h = _FNV64_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV64_PRIME) & _MASK64
    return h


def _place(candidates: list[str], target: bytes) -> tuple[list[int], dict[int, str]]:
    """Ring slots of the (sorted) candidates: the sorted slots and slot -> candidate."""
    owner: dict[int, str] = {}
    for c in candidates:
        buf = c.encode() + target
        h = fnv64a(buf)
        slot = h % UNIVERSE
        while slot in owner:  # a collision: salt with the hash itself, in hex
            buf += format(h, "x").encode()
            h = fnv64a(buf)
            slot = h % UNIVERSE
        owner[slot] = c
    return sorted(owner), owner


def choose_subset(candidates: Iterable[str], n: int, target: str) -> set[str]:
    """``n`` of ``candidates`` chosen consistently for ``target`` (all of them when n >= len).

    E.g. of {sun, moon, mars, mercury}, 2 for "a target!" are {mercury, moon}.
    """
    pool = sorted(set(candidates))
    if n >= len(pool):
        return set(pool)
    t = target.encode()
    slots, owner = _place(pool, t)
    angle = fnv64a(t + START_SALT) % UNIVERSE
    step = fnv64a(t + STEP_SALT) % UNIVERSE
    chosen: set[int] = set()
    while len(chosen) < n:
        i = bisect.bisect_left(slots, angle)
        if i == len(slots):
            i = 0
        while i in chosen:
            i = (i + 1) % len(slots)
        chosen.add(i)
        angle = (angle + step) % UNIVERSE
    return {owner[slots[i]] for i in chosen}


def bucket_owner(buckets: Iterable[str], key: str) -> str:
    """The bucket that owns ``key`` (``namespace/name``): knative/pkg ``BucketSet.Owner``."""
    (owner,) = choose_subset(buckets, 1, key)
    return owner


def autoscaler_bucket_name(ordinal: int, total: int) -> str:
    """``autoscaler-bucket-NN-of-MM`` (knative/serving pkg/autoscaler/bucket)."""
    return f"{AUTOSCALER_BUCKET_PREFIX}-{ordinal:02d}-of-{total:02d}".lower()


def autoscaler_bucket_names(total: int) -> list[str]:
    """Every bucket's name (and Lease name) for ``total`` buckets, in ordinal order."""
    return [autoscaler_bucket_name(i, total) for i in range(total)]


def is_bucket_host(host: str) -> bool:
    """A request addressed to a bucket's Service (the stat server refuses it unless it owns the
    bucket); Knative checks the prefix only."""
    return host.startswith(AUTOSCALER_BUCKET_PREFIX)


def extract_pod_name_and_ip(identity: str) -> tuple[str, str]:
    """Split a Lease holder identity ``<POD_NAME>_<POD_IP>``.

    Raises:
        ValueError: the identity has no ``_``.
    """
    name, sep, ip = identity.partition("_")
    if not sep:
        raise ValueError(f"Failed to extract pod name and IP from {identity}")
    return name, ip
