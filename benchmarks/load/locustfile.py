"""Locust's side of ``run.py``: one user class per target, the plan's rate steps as a shape.

Locust is a closed model: a user sends its next request only after the last one answered.
Each user here paces itself to one request a second (``constant_throughput(1)``), so N users
per target make N requests a second while answers take under a second; a cold start holds the
first users for its length, and the rate dips there where k6's open model keeps sending. The
plan comes from ``run.py`` in LOAD_PLAN (JSON, as for k6.js); every request is written to
LOAD_SAMPLES as ``start_unix_s,target,latency_ms,status`` (status 0: no response).
"""

from __future__ import annotations

import json
import os
from typing import Any

from locust import FastHttpUser, LoadTestShape, constant_throughput, events, task

PLAN: dict[str, Any] = json.loads(os.environ["LOAD_PLAN"])
_samples = open(os.environ["LOAD_SAMPLES"], "w")  # noqa: SIM115 (closed at quitting)


@events.request.add_listener
def _record(
    name: str,
    response_time: float,
    response: Any,
    exception: BaseException | None,
    start_time: float,
    **_kw: Any,
) -> None:
    status = getattr(response, "status_code", 0) or 0
    if exception is not None and not status:
        status = 0
    _samples.write(f"{start_time:.6f},{name},{response_time:.3f},{status}\n")


@events.quitting.add_listener
def _close(**_kw: Any) -> None:
    _samples.close()


def _user_class(target: dict[str, str]) -> type[FastHttpUser]:
    url: str = target["url"]
    scheme, rest = url.split("://", 1)
    base, _, path = rest.partition("/")

    class TargetUser(FastHttpUser):
        host = f"{scheme}://{base}"
        wait_time = constant_throughput(1.0)
        network_timeout = float(PLAN["timeout_s"])
        connection_timeout = float(PLAN["timeout_s"])

        @task
        def hit(self) -> None:
            self.client.get("/" + path, headers={"Host": target["host"]}, name=target["name"])

    TargetUser.__name__ = "User_" + target["name"].replace("-", "_")
    return TargetUser


for _t in PLAN["targets"]:
    _cls = _user_class(_t)
    globals()[_cls.__name__] = _cls
del _t, _cls


class Steps(LoadTestShape):
    """The plan's stages: rate r on n targets is r x n users (one request a second each)."""

    def tick(self) -> tuple[int, float] | None:
        elapsed = 0.0
        run_time = self.get_run_time()
        for seconds, rate in PLAN["stages"]:
            elapsed += seconds
            if run_time < elapsed:
                users = max(1, round(rate)) * len(PLAN["targets"])
                return users, float(users)  # all of a step's users within ~1 s
        return None
