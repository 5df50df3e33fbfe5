"""Which of a revision's pods this activator sends to, and how much it may send at once.

Theory of operation (Knative's pkg/activator/net/throttler.go: inferIndex, pickIndices,
assignSlice, calculateCapacity):

- Every activator sees the same sorted list of the revision's pod addresses and the same
  sorted list of the revision's activators (its public Endpoints; activator/cluster.py
  activator_share), so each can work out its own share with no coordination. This
  activator's *index* is its place in the sorted activator list; -1 means it is not in that
  list yet (it just started, or the endpoints have not caught up) and then
  it takes every pod, as Knative does: too much capacity for a moment beats none.
- With P pods and A activators (P >= A) each activator takes a contiguous slice of
  P // A pods, and the P % A leftover pods at the tail go one each to the first activators.
  E.g. 5 pods, 2 activators: activator 0 takes pods 0, 1 and the leftover pod 4 (3 pods),
  activator 1 takes pods 2, 3 (2 pods). Each pod belongs to exactly one activator.
- With fewer pods than activators (P < A) activator i takes pod i % P alone, so some pods
  serve two activators. E.g. 2 pods, 3 activators: pods 0, 1, 0.
- Capacity is containerConcurrency x assigned pods: every assigned pod is this activator's
  alone, so it may fill all of its slots. containerConcurrency 0 means no per-pod limit and
  the revision gets MAX_BREAKER_CAPACITY whenever it has a pod.

Pure functions of their arguments: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.breaker import MAX_BREAKER_CAPACITY

__all__ = ["assign_slice", "pick_indices", "revision_capacity", "worker_part", "worker_share"]


def pick_indices(num_pods: int, activator_index: int, num_activators: int) -> tuple[int, int, int]:
    """Begin and end of this activator's slice of the sorted pods, and the leftover count.

    Knative's pickIndices. Needs num_pods >= 1, num_activators >= 1 and
    0 <= activator_index < num_activators (assign_slice checks them).
    """
    if num_activators > num_pods:
        # Fewer pods than activators: one pod each, round robin. E.g. 3 pods, 5 activators:
        # activator 3 takes pod 0, activator 4 takes pod 1.
        begin = activator_index % num_pods
        return begin, begin + 1, 0
    slice_size = num_pods // num_activators
    begin = activator_index * slice_size
    return begin, begin + slice_size, num_pods % num_activators


def assign_slice(
    pod_addresses: Sequence[str], activator_index: int, num_activators: int
) -> list[str]:
    """The pods this activator sends to, sorted (Knative's assignSlice).

    Args:
        pod_addresses: the revision's ready pods, in any order; they are sorted here.
        activator_index: this activator's index (activator_index()), or -1 when unknown.
        num_activators: how many activators there are; ignored when the index is -1.

    Returns:
        Every pod when the index is -1, there is one activator, or at most one pod;
        otherwise a contiguous slice plus at most one leftover pod.

    Raises:
        ValueError: activator_index is neither -1 nor in [0, num_activators).
    """
    pods = sorted(pod_addresses)
    if activator_index == -1 or len(pods) <= 1 or num_activators == 1:
        return pods
    if not 0 <= activator_index < num_activators:
        raise ValueError(
            f"activator index {activator_index} is outside [0, {num_activators}) and not -1"
        )
    begin, end, leftovers = pick_indices(len(pods), activator_index, num_activators)
    assigned = pods[begin:end]
    if activator_index < leftovers:
        # The leftovers are the last pods; the first activators take one each, exclusively.
        # E.g. 20 pods, 3 activators: slices of 6, and activators 0 and 1 take pods 18, 19.
        assigned.append(pods[len(pods) - leftovers + activator_index])
    return assigned


def revision_capacity(
    container_concurrency: int,
    assigned_pods: int,
    num_activators: int,
    total_ready_pods: int,
) -> int:
    """How many requests this activator lets through to the revision at once.

    Knative's calculateCapacity(backendCount=total_ready_pods, numTrackers=assigned_pods,
    activatorCount=num_activators):

    - with pods assigned (direct pod routing): containerConcurrency x assigned pods;
    - with none assigned but ready pods behind a shared address (Knative's ClusterIP
      routing): containerConcurrency x ready pods, split evenly across the activators and
      never below 1. E.g. cc 10, 10 pods, 200 activators: 100 // 200 = 0, so 1;
    - containerConcurrency 0 (no per-pod limit), or a product past the breaker's limit, with
      any ready pod: MAX_BREAKER_CAPACITY. With no ready pod: 0, and requests queue.

    Raises:
        ValueError: container_concurrency < 0.
    """
    if container_concurrency < 0:
        raise ValueError(f"container concurrency must be 0 or greater, got {container_concurrency}")
    if assigned_pods > 0:
        capacity = container_concurrency * assigned_pods
    else:
        capacity = container_concurrency * total_ready_pods
        if capacity > 0:
            capacity = max(1, capacity // max(1, num_activators))
    if total_ready_pods > 0 and (container_concurrency == 0 or capacity > MAX_BREAKER_CAPACITY):
        capacity = MAX_BREAKER_CAPACITY
    return capacity


def worker_share(
    share: tuple[int, int] | None, worker: int, workers: int
) -> tuple[int, int] | None:
    """This worker's place in the split when the activator runs ``workers`` processes.

    Each worker (``python -m activator --workers N``, activator/workers.py) is an activator of
    Knative's split: activator i of A with W workers each is activators i*W .. i*W+W-1 of
    A*W, so the pods (and their slots) are divided among the workers exactly as among
    activators. E.g. 4 pods, 1 activator, 2 workers: worker 0 takes pods 0, 1, worker 1 pods
    2, 3. Not listed yet (None): the workers split among themselves, (worker, workers), rather
    than each taking every pod as a lone unlisted activator would.
    """
    if workers == 1:
        return share
    if share is None:
        return worker, workers
    index, count = share
    return index * workers + worker, count * workers


def worker_part(total: int, worker: int, workers: int) -> int:
    """This worker's part of a limit divided among ``workers`` (the parts sum to ``total``;
    the first ``total % workers`` workers take one more), never below 1."""
    return max(1, total // workers + (1 if worker < total % workers else 0))
