"""``python -m activator --workers N``: N activator processes on one serving port.

Why processes: one Python process serves from one core, and an activator given four cores
should use them. Why this design: every worker is a whole activator (its own informers, its
own connections to the pods, its own stat link), listening on the serving port with
SO_REUSEPORT, so the kernel spreads the client connections over the workers with no hop
between them and no shared state. The limits stay exact because the workers take part in
Knative's activator split as activators of their own (activator/split.py ``worker_share``):
each worker sends only to its slice of the revision's pods, and a pod's slots belong to the
one worker that has it, as they belong to one activator in Knative. (With fewer pods than
activator workers a pod is shared, as Knative shares it among activators; the pod's own
queue-proxy breaker still holds containerConcurrency.) The queue depth is divided among the
workers (``worker_part``), so that the activator as a whole queues no more than
ACTIVATOR_QUEUE_DEPTH. Each worker reports its concurrency to the autoscaler under its own
name (``<pod>-w<i>``), so that the autoscaler sums them as it sums activators.

This module is the parent: it starts the workers (the same command, with
ACTIVATOR_WORKER_INDEX and ACTIVATOR_WORKERS set), passes SIGTERM and SIGINT on, and when one
worker exits, stops the others and exits with its status: a partial activator would hold
its pods' slots with nobody serving them. The workers die with the parent, too: when it is
killed outright (SIGKILL, the OOM killer), the kernel sends each worker SIGTERM
(shared/lifeline.py), so no worker outlives the activator orphaned, still serving the port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from shared.lifeline import tied_to_parent

# How long the workers get to finish after the first one exited, before SIGKILL.
STOP_GRACE_S = 60.0


def run_workers(workers: int, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run ``workers`` copies of ``python -m activator argv`` until one exits; its status."""
    base = dict(os.environ if env is None else env)
    spawn = tied_to_parent([sys.executable, "-m", "activator", *argv])
    procs = [
        subprocess.Popen(
            spawn.argv,
            env={**base, "ACTIVATOR_WORKERS": str(workers), "ACTIVATOR_WORKER_INDEX": str(i)},
            preexec_fn=spawn.preexec_fn,
        )
        for i in range(workers)
    ]

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    status = 0
    try:
        while True:
            done = [p for p in procs if p.poll() is not None]
            if done:
                status = done[0].returncode
                break
            time.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return status if status >= 0 else 128 - status
