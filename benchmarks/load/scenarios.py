"""Knative's SLO scenarios (knative/serving test/performance/benchmarks), scaled to one machine.

Pure data: what to deploy, where to send requests and at what rate over time. ``run.py`` does
the I/O. Knative's originals and what changed here:

* **load-test**: Knative ramps a service from zero to thousands of requests a second in steps
  and holds. Here: a service at zero pods (``initial-scale: 0``), steps of 5, 10, 20 requests a
  second, then a hold at 20; each request holds the app for 200 ms and the concurrency target is
  2 a pod, so the autoscaler wants 20 x 0.2 / (2 x 0.7) = about 3 pods at the top.
* **dataplane-probe**: Knative sends a steady rate to a Deployment, a queue-proxy, the activator
  and the ingress, and compares the latencies. Here three targets at one rate each, side by side:
  ``queue-proxy`` (straight to a pod's queue-proxy port), ``ingress`` (ingress -> queue-proxy,
  target-burst-capacity 0 so the activator is only in the path at zero) and ``activator``
  (ingress -> activator -> queue-proxy, target-burst-capacity -1). One pod each (min = max 1).
* **rollout-probe**: Knative sends a steady rate while a new revision rolls out over
  ``serving.knative.dev/rollout-duration``. knpy has no rollout-duration, so the runner moves the
  traffic itself: at 20 % of the run a new revision is created at 0 % (traffic pinned by
  revisionName), then 25, 50, 75 and 100 % go to it in equal steps up to 80 % of the run. The
  achieved rate must stay within 1 % of the sent rate and no request may fail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[2]
SAMPLE_APP: Final = REPO / "examples" / "sampleapp" / "app.py"
NAMESPACE: Final = "default"
DEFAULT_DURATION_S: Final = 60.0

# Short autoscaler windows, so that a one-minute run shows the decisions: the smallest stable
# window Knative's validation allows (6 s; panic window 10 % of it) and a short grace.
AUTOSCALER_CONFIG: Final = """
apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {stable-window: 6s, scale-to-zero-grace-period: 2s, allow-zero-initial-scale: "true"}
"""


@dataclass(frozen=True, slots=True)
class Stage:
    """Hold ``rate_rps`` for ``fraction`` of the run (a step: load tools ramp within ~1 s)."""

    fraction: float
    rate_rps: float


@dataclass(frozen=True, slots=True)
class Target:
    """Where one stream of requests goes: through the ingress by Host, or straight to a pod.

    ``direct_to``: the service whose (single) pod's queue-proxy port is the URL's port; the
    Host header then still names the service, as the ingress would have sent it.
    """

    name: str
    service: str
    path: str = "/"
    direct_to: str | None = None

    @property
    def host(self) -> str:
        return f"{self.service}.{NAMESPACE}.localhost"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    services: dict[str, dict[str, str]]  # service -> its template's annotations
    targets: tuple[Target, ...]
    stages: tuple[Stage, ...]  # the same rate schedule for every target
    start_at_zero: bool = False
    rollout: bool = False
    container_concurrency: int = 0

    def stages_s(self, duration_s: float) -> list[tuple[float, float]]:
        """(seconds, rate) of each stage for a run of ``duration_s``."""
        return [(s.fraction * duration_s, s.rate_rps) for s in self.stages]

    def expected_requests(self, duration_s: float) -> float:
        per_target = sum(d * r for d, r in self.stages_s(duration_s))
        return per_target * len(self.targets)


def service_yaml(
    name: str,
    annotations: dict[str, str],
    *,
    version: str = "1",
    cc: int = 0,
    traffic: list[dict[str, Any]] | None = None,
) -> str:
    """The sample app as a Knative Service; ``version`` changes the template (a new revision)."""
    spec: dict[str, Any] = {
        "template": {
            "metadata": {"annotations": annotations},
            "spec": {
                "containerConcurrency": cc,
                "containers": [
                    {
                        "image": "knpy/sampleapp",
                        "command": ["python", str(SAMPLE_APP)],
                        "env": [{"name": "VERSION", "value": version}],
                    }
                ],
            },
        }
    }
    if traffic is not None:
        spec["traffic"] = traffic
    doc = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }
    return json.dumps(doc)


_ONE_POD: Final = {
    "autoscaling.knative.dev/min-scale": "1",
    "autoscaling.knative.dev/max-scale": "1",
}

SCENARIOS: Final = {
    s.name: s
    for s in (
        Scenario(
            name="load-test",
            summary="from zero pods, steps of 5, 10, 20 req/s, then a hold at 20",
            services={
                "load": {
                    "autoscaling.knative.dev/initial-scale": "0",
                    "autoscaling.knative.dev/target": "2",
                    "autoscaling.knative.dev/max-scale": "5",
                }
            },
            targets=(Target("ingress", "load", "/sleep?ms=200"),),
            stages=(Stage(1 / 6, 5), Stage(1 / 6, 10), Stage(1 / 6, 20), Stage(1 / 2, 20)),
            start_at_zero=True,
        ),
        Scenario(
            name="dataplane-probe",
            summary="10 req/s each: straight to a queue-proxy, via the ingress, via the activator",
            services={
                "probe-serve": {**_ONE_POD, "autoscaling.knative.dev/target-burst-capacity": "0"},
                "probe-proxy": {**_ONE_POD, "autoscaling.knative.dev/target-burst-capacity": "-1"},
            },
            targets=(
                Target("queue-proxy", "probe-serve", direct_to="probe-serve"),
                Target("ingress", "probe-serve"),
                Target("activator", "probe-proxy"),
            ),
            stages=(Stage(1.0, 10),),
        ),
        Scenario(
            name="rollout-probe",
            summary="20 req/s while a new revision takes 0 -> 100 % of the traffic",
            services={"rollout": {"autoscaling.knative.dev/min-scale": "1"}},
            targets=(Target("ingress", "rollout"),),
            stages=(Stage(1.0, 20),),
            rollout=True,
        ),
    )
}

# The rollout's schedule, as fractions of the run: the new revision at 0 %, then the steps.
ROLLOUT_CREATE_AT: Final = 0.2
ROLLOUT_STEPS: Final = ((0.35, 25), (0.5, 50), (0.65, 75), (0.8, 100))
