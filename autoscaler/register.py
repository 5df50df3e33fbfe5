"""Knative's autoscaling vocabulary: annotation keys, classes, metrics and their bounds.

The names of pkg/apis/autoscaling/register.go, shared by the config-autoscaler ConfigMap
(configmap.py), the annotation validator (annotations.py), the resolvers (resolve.py) and the
decider. Nothing here parses or decides.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACTIVATION_SCALE_KEY",
    "BUCKET_SIZE_S",
    "CLASS_KEY",
    "CONCURRENCY",
    "CPU",
    "GROUP",
    "HPA",
    "INITIAL_SCALE_KEY",
    "KPA",
    "LINEAR",
    "MAX_SCALE_KEY",
    "MEMORY",
    "METRIC_AGGREGATION_ALGORITHM_KEY",
    "METRIC_KEY",
    "MIN_SCALE_KEY",
    "PANIC_THRESHOLD_PERCENTAGE_KEY",
    "PANIC_THRESHOLD_PERCENTAGE_MAX",
    "PANIC_THRESHOLD_PERCENTAGE_MIN",
    "PANIC_WINDOW_PERCENTAGE_KEY",
    "PANIC_WINDOW_PERCENTAGE_MAX",
    "PANIC_WINDOW_PERCENTAGE_MIN",
    "RPS",
    "SCALE_DOWN_DELAY_KEY",
    "SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY",
    "TARGET_BURST_CAPACITY_KEY",
    "TARGET_KEY",
    "TARGET_MIN",
    "TARGET_UTILIZATION_PERCENTAGE_KEY",
    "WEIGHTED_EXPONENTIAL",
    "WEIGHTED_EXPONENTIAL_ALT",
    "WINDOW_KEY",
    "WINDOW_MAX_S",
    "WINDOW_MAX_TEXT",
    "WINDOW_MIN_S",
    "WINDOW_MIN_TEXT",
]

# Knative's BucketSize: the metric buckets' granularity, and the shortest panic window.
BUCKET_SIZE_S: Final = 1.0

# Autoscaler classes: knpy implements the KPA; a revision of another class is left alone.
KPA: Final = "kpa.autoscaling.knative.dev"
HPA: Final = "hpa.autoscaling.knative.dev"
# Scaling metrics.
CONCURRENCY: Final = "concurrency"
RPS: Final = "rps"
CPU: Final = "cpu"
MEMORY: Final = "memory"
# Metric aggregation algorithms (the camelCase spelling is the legacy one Knative still reads).
LINEAR: Final = "linear"
WEIGHTED_EXPONENTIAL: Final = "weighted-exponential"
WEIGHTED_EXPONENTIAL_ALT: Final = "weightedExponential"

# The smallest target per pod: small containerConcurrency times a small utilization can
# go below 1 request, but not to 0, which would divide by zero.
TARGET_MIN: Final = 0.01
# The decider ticks every 2 s, so a stable window under 6 s would see too few points;
# over an hour the decisions would lag too far behind.
WINDOW_MIN_S: Final = 6.0
WINDOW_MAX_S: Final = 3600.0
WINDOW_MIN_TEXT: Final = "6s"  # as Go prints them in messages
WINDOW_MAX_TEXT: Final = "1h0m0s"
PANIC_WINDOW_PERCENTAGE_MIN: Final = 1.0
PANIC_WINDOW_PERCENTAGE_MAX: Final = 100.0
# Under 110 % the decider would panic at the target itself and never scale down.
PANIC_THRESHOLD_PERCENTAGE_MIN: Final = 110.0
PANIC_THRESHOLD_PERCENTAGE_MAX: Final = 1000.0

GROUP: Final = "autoscaling.knative.dev"
CLASS_KEY: Final = f"{GROUP}/class"
METRIC_KEY: Final = f"{GROUP}/metric"
TARGET_KEY: Final = f"{GROUP}/target"
TARGET_UTILIZATION_PERCENTAGE_KEY: Final = f"{GROUP}/target-utilization-percentage"
WINDOW_KEY: Final = f"{GROUP}/window"
PANIC_WINDOW_PERCENTAGE_KEY: Final = f"{GROUP}/panic-window-percentage"
PANIC_THRESHOLD_PERCENTAGE_KEY: Final = f"{GROUP}/panic-threshold-percentage"
MIN_SCALE_KEY: Final = f"{GROUP}/min-scale"
MAX_SCALE_KEY: Final = f"{GROUP}/max-scale"
INITIAL_SCALE_KEY: Final = f"{GROUP}/initial-scale"
ACTIVATION_SCALE_KEY: Final = f"{GROUP}/activation-scale"
SCALE_DOWN_DELAY_KEY: Final = f"{GROUP}/scale-down-delay"
TARGET_BURST_CAPACITY_KEY: Final = f"{GROUP}/target-burst-capacity"
SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY: Final = f"{GROUP}/scale-to-zero-pod-retention-period"
METRIC_AGGREGATION_ALGORITHM_KEY: Final = f"{GROUP}/metric-aggregation-algorithm"
