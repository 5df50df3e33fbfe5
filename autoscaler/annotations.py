"""A revision's ``autoscaling.knative.dev/*`` annotations, validated as Knative's webhook does.

Knative's pkg/apis/autoscaling/annotation_validation.go: every annotation is checked, in
Knative's order, and all the errors are reported at once, each named by its key. A valid set
becomes a ``RevisionAutoscaling`` whose None fields mean "not set, the cluster default of
config-autoscaler applies" (resolve.py applies it). Values are parsed as Go parses them
(shared/gosyntax.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from autoscaler.configmap import AutoscalerConfig
from autoscaler.register import (
    ACTIVATION_SCALE_KEY,
    CLASS_KEY,
    CONCURRENCY,
    CPU,
    GROUP,
    HPA,
    INITIAL_SCALE_KEY,
    KPA,
    LINEAR,
    MAX_SCALE_KEY,
    METRIC_AGGREGATION_ALGORITHM_KEY,
    METRIC_KEY,
    MIN_SCALE_KEY,
    PANIC_THRESHOLD_PERCENTAGE_KEY,
    PANIC_THRESHOLD_PERCENTAGE_MAX,
    PANIC_THRESHOLD_PERCENTAGE_MIN,
    PANIC_WINDOW_PERCENTAGE_KEY,
    PANIC_WINDOW_PERCENTAGE_MAX,
    PANIC_WINDOW_PERCENTAGE_MIN,
    RPS,
    SCALE_DOWN_DELAY_KEY,
    SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY,
    TARGET_BURST_CAPACITY_KEY,
    TARGET_KEY,
    TARGET_MIN,
    TARGET_UTILIZATION_PERCENTAGE_KEY,
    WEIGHTED_EXPONENTIAL,
    WEIGHTED_EXPONENTIAL_ALT,
    WINDOW_KEY,
    WINDOW_MAX_S,
    WINDOW_MAX_TEXT,
    WINDOW_MIN_S,
    WINDOW_MIN_TEXT,
)
from shared.envconfig import ConfigError
from shared.gosyntax import (
    NS_PER_S,
    RangeError,
    format_number,
    parse_duration,
    parse_float,
    parse_int,
    parse_int32,
)

__all__ = ["AnnotationError", "RevisionAutoscaling"]

_T = TypeVar("_T")

_INT32_MAX: Final = 2**31 - 1

# Knative's kmap.KeyPriority lists: the first key present wins; the camelCase spellings are
# the legacy ones Knative still reads.
_CLASS = (CLASS_KEY,)
_METRIC = (METRIC_KEY,)
_TARGET = (TARGET_KEY,)
_TARGET_UTILIZATION = (TARGET_UTILIZATION_PERCENTAGE_KEY, f"{GROUP}/targetUtilizationPercentage")
_WINDOW = (WINDOW_KEY,)
_PANIC_WINDOW_PERCENTAGE = (PANIC_WINDOW_PERCENTAGE_KEY, f"{GROUP}/panicWindowPercentage")
_PANIC_THRESHOLD_PERCENTAGE = (
    PANIC_THRESHOLD_PERCENTAGE_KEY,
    f"{GROUP}/panicThresholdPercentage",
)
_MIN_SCALE = (MIN_SCALE_KEY, f"{GROUP}/minScale")
_MAX_SCALE = (MAX_SCALE_KEY, f"{GROUP}/maxScale")
_INITIAL_SCALE = (INITIAL_SCALE_KEY, f"{GROUP}/initialScale")
_ACTIVATION_SCALE = (ACTIVATION_SCALE_KEY,)
_SCALE_DOWN_DELAY = (SCALE_DOWN_DELAY_KEY, f"{GROUP}/scaleDownDelay")
_TARGET_BURST_CAPACITY = (TARGET_BURST_CAPACITY_KEY, f"{GROUP}/targetBurstCapacity")
_SCALE_TO_ZERO_POD_RETENTION = (
    SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY,
    f"{GROUP}/scaleToZeroPodRetentionPeriod",
)
_METRIC_AGGREGATION_ALGORITHM = (
    METRIC_AGGREGATION_ALGORITHM_KEY,
    f"{GROUP}/metricAggregationAlgorithm",
)


class AnnotationError(ConfigError):
    """One or more revision annotations are invalid.

    ``name``/``reason`` are the first error's; ``errors`` holds all of them, and the message
    lists them one per line, as Knative's webhook reports every bad annotation at once.
    """

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        super().__init__(*errors[0])
        self.errors: tuple[tuple[str, str], ...] = tuple(errors)
        self.args = ("\n".join(f"{key}: {reason}" for key, reason in self.errors),)


def _get(annotations: Mapping[str, str], keys: tuple[str, ...]) -> tuple[str, str] | None:
    """Knative's KeyPriority.Get: the first of ``keys`` present, with its value."""
    for key in keys:
        if key in annotations:
            return key, annotations[key]
    return None


def _invalid(value: str) -> str:
    return f"invalid value: {value}"


def _out_of_bounds(value: object, low: object, high: object) -> str:
    return f"expected {low} <= {value} <= {high}"


class _Validator:
    """Knative's ValidateAnnotations, collecting (key, reason) pairs in its order."""

    def __init__(self, annotations: Mapping[str, str], cfg: AutoscalerConfig) -> None:
        self.annotations = annotations
        self.cfg = cfg
        self.errors: list[tuple[str, str]] = []

    def error(self, key: str, reason: str) -> None:
        self.errors.append((key, reason))

    def parsed(
        self, keys: tuple[str, ...], parse: Callable[[str], _T]
    ) -> tuple[str, str, _T] | None:
        """(key, raw, value) of the annotation; None when absent or invalid (recorded)."""
        found = _get(self.annotations, keys)
        if found is None:
            return None
        key, raw = found
        try:
            return key, raw, parse(raw)
        except ValueError:
            self.error(key, _invalid(raw))
            return None

    def run(self) -> list[tuple[str, str]]:
        self.check_class()
        self.check_min_max_scale()
        self.check_floats()
        self.check_window()
        self.check_duration(_SCALE_TO_ZERO_POD_RETENTION, whole_seconds=False)
        self.check_duration(_SCALE_DOWN_DELAY, whole_seconds=True)
        self.check_metric()
        self.check_algorithm()
        self.check_initial_scale()
        return self.errors

    def check_class(self) -> None:
        found = _get(self.annotations, _CLASS)
        # Other domains' classes are other autoscalers' business.
        if found and found[1].endswith(".knative.dev") and found[1] not in (KPA, HPA):
            self.error(found[0], _invalid(found[1]))

    def int_ge0(self, keys: tuple[str, ...]) -> int:
        found = _get(self.annotations, keys)
        if found is None:
            return 0
        key, raw = found
        try:
            value = parse_int32(raw)
        except RangeError:
            self.error(key, _out_of_bounds(raw, 0, _INT32_MAX))
            return 0
        except ValueError:
            self.error(key, _invalid(raw))
            return 0
        if value < 0:
            self.error(key, _out_of_bounds(raw, 0, _INT32_MAX))
            return 0
        return value

    def check_min_max_scale(self) -> None:
        low = self.int_ge0(_MIN_SCALE)
        high = self.int_ge0(_MAX_SCALE)
        if high != 0 and high < low:
            self.error(
                f"{MAX_SCALE_KEY}, {MIN_SCALE_KEY}",
                f"max-scale={high} is less than min-scale={low}",
            )
        found_max = _get(self.annotations, _MAX_SCALE)
        limit = self.cfg.max_scale_limit
        if found_max is not None and limit != 0:
            if high > limit:
                self.error(found_max[0], _out_of_bounds(high, 1, limit))
            if high == 0:
                self.error(found_max[0], f"max-scale=0 (unlimited), must be less than {limit}")
        found = self.parsed(_ACTIVATION_SCALE, parse_int32)
        if found is None:
            return
        key, _, activation = found
        if low > activation:
            self.error(key, f"min-scale={low} is greater than activation-scale={activation}")
        elif high != 0 and high < activation:
            self.error(key, f"max-scale={high} is less than activation-scale={activation}")
        elif activation < 2:
            self.error(key, f"activation-scale={activation} must be greater than 1")

    def float_in(self, keys: tuple[str, ...], low: float, high: float) -> None:
        found = self.parsed(keys, parse_float)
        if found is None:
            return
        key, raw, value = found
        if not low <= value <= high:
            self.error(key, _out_of_bounds(raw, format_number(low), format_number(high)))

    def check_floats(self) -> None:
        self.float_in(
            _PANIC_WINDOW_PERCENTAGE, PANIC_WINDOW_PERCENTAGE_MIN, PANIC_WINDOW_PERCENTAGE_MAX
        )
        self.float_in(
            _PANIC_THRESHOLD_PERCENTAGE,
            PANIC_THRESHOLD_PERCENTAGE_MIN,
            PANIC_THRESHOLD_PERCENTAGE_MAX,
        )
        target = self.parsed(_TARGET, parse_float)
        if target is not None and target[2] < TARGET_MIN:
            self.error(target[0], f"target {target[1]} should be at least {TARGET_MIN}")
        self.float_in(_TARGET_UTILIZATION, 1.0, 100.0)
        tbc = self.parsed(_TARGET_BURST_CAPACITY, parse_float)
        if tbc is not None and tbc[2] < 0 and tbc[2] != -1:
            self.error(tbc[0], _invalid(tbc[1]))

    def check_window(self) -> None:
        found = self.parsed(_WINDOW, parse_duration)
        if found is None:
            return
        key, raw, ns = found
        if not WINDOW_MIN_S * NS_PER_S <= ns <= WINDOW_MAX_S * NS_PER_S:
            self.error(key, _out_of_bounds(raw, WINDOW_MIN_TEXT, WINDOW_MAX_TEXT))
        elif ns % NS_PER_S:
            self.error(key, "must be specified with at most second precision")

    def check_duration(self, keys: tuple[str, ...], *, whole_seconds: bool) -> None:
        """Pod retention and scale-down delay: in [0, 1h], the delay in whole seconds."""
        found = self.parsed(keys, parse_duration)
        if found is None:
            return
        key, raw, ns = found
        if not 0 <= ns <= WINDOW_MAX_S * NS_PER_S:
            self.error(key, _out_of_bounds(raw, "0s", WINDOW_MAX_TEXT))
        elif whole_seconds and ns % NS_PER_S:
            self.error(key, "must be specified with at most second precision")

    def check_metric(self) -> None:
        found = _get(self.annotations, _METRIC)
        if found is None:
            return
        metric = found[1]
        found_class = _get(self.annotations, _CLASS)
        autoscaler_class = found_class[1] if found_class else self.cfg.pod_autoscaler_class
        if (autoscaler_class == KPA and metric not in (CONCURRENCY, RPS)) or (
            autoscaler_class == HPA and metric == ""
        ):
            self.error(METRIC_KEY, _invalid(metric))

    def check_algorithm(self) -> None:
        # Only the KPA's algorithms are known; other autoscalers may have their own.
        found_class = _get(self.annotations, _CLASS)
        if found_class is None or found_class[1] != KPA:
            return
        found = _get(self.annotations, _METRIC_AGGREGATION_ALGORITHM)
        if found and found[1] and found[1] not in _ALGORITHMS:
            self.error(found[0], _invalid(found[1]))

    def check_initial_scale(self) -> None:
        found = self.parsed(_INITIAL_SCALE, parse_int)
        if found is None:
            return
        key, raw, value = found
        if value < 0:
            self.error(key, f"{_invalid(raw)}, must be greater than 0")
        elif value == 0 and not self.cfg.allow_zero_initial_scale:
            self.error(key, f"{_invalid(raw)}, =0 not allowed by cluster")


_ALGORITHMS = frozenset({LINEAR, WEIGHTED_EXPONENTIAL, WEIGHTED_EXPONENTIAL_ALT})


def _default_metric(autoscaler_class: str) -> str:
    """Knative's defaultMetric: concurrency for the KPA, CPU for the HPA, else none."""
    return {KPA: CONCURRENCY, HPA: CPU}.get(autoscaler_class, "")


@dataclass(frozen=True, slots=True)
class RevisionAutoscaling:
    """One revision's validated autoscaling annotations; None: the cluster default applies."""

    autoscaler_class: str
    metric: str
    container_concurrency: int = 0
    target: float | None = None
    # target-utilization-percentage as a fraction: "75" is 0.75.
    target_utilization: float | None = None
    window: float | None = None
    panic_window_percentage: float | None = None
    panic_threshold_percentage: float | None = None
    min_scale: int | None = None
    max_scale: int | None = None
    initial_scale: int | None = None
    activation_scale: int | None = None
    scale_down_delay: float | None = None
    target_burst_capacity: float | None = None
    scale_to_zero_pod_retention_period: float | None = None
    # LINEAR or WEIGHTED_EXPONENTIAL for the KPA (camelCase normalised), else as written.
    metric_aggregation_algorithm: str = LINEAR

    @classmethod
    def from_annotations(
        cls,
        annotations: Mapping[str, str] | None,
        container_concurrency: int,
        cfg: AutoscalerConfig,
    ) -> RevisionAutoscaling:
        """Validate and parse a revision's annotations, as Knative's webhook would.

        Args:
            annotations: the revision's annotations; other keys are ignored.
            container_concurrency: the revision's containerConcurrency (0 = unlimited).
            cfg: the cluster config, for its class, max-scale-limit and initial-scale rules.

        Raises:
            AnnotationError: every invalid annotation, each named by its key.
        """
        m: Mapping[str, str] = annotations or {}
        errors = _Validator(m, cfg).run()
        if container_concurrency < 0:
            errors.append(
                ("containerConcurrency", f"must be at least 0, got {container_concurrency}")
            )
        if errors:
            raise AnnotationError(errors)

        def text(keys: tuple[str, ...]) -> str | None:
            found = _get(m, keys)
            return None if found is None else found[1]

        def number(keys: tuple[str, ...]) -> float | None:
            raw = text(keys)
            return None if raw is None else parse_float(raw)

        def integer(keys: tuple[str, ...]) -> int | None:
            raw = text(keys)
            return None if raw is None else parse_int(raw)

        def seconds(keys: tuple[str, ...]) -> float | None:
            raw = text(keys)
            return None if raw is None else parse_duration(raw) / NS_PER_S

        autoscaler_class = text(_CLASS) or cfg.pod_autoscaler_class
        utilization = number(_TARGET_UTILIZATION)
        algorithm = text(_METRIC_AGGREGATION_ALGORITHM) or LINEAR
        if algorithm == WEIGHTED_EXPONENTIAL_ALT:
            algorithm = WEIGHTED_EXPONENTIAL
        return cls(
            autoscaler_class=autoscaler_class,
            metric=text(_METRIC) or _default_metric(autoscaler_class),
            container_concurrency=container_concurrency,
            target=number(_TARGET),
            target_utilization=None if utilization is None else utilization / 100,
            window=seconds(_WINDOW),
            panic_window_percentage=number(_PANIC_WINDOW_PERCENTAGE),
            panic_threshold_percentage=number(_PANIC_THRESHOLD_PERCENTAGE),
            min_scale=integer(_MIN_SCALE),
            max_scale=integer(_MAX_SCALE),
            initial_scale=integer(_INITIAL_SCALE),
            activation_scale=integer(_ACTIVATION_SCALE),
            scale_down_delay=seconds(_SCALE_DOWN_DELAY),
            target_burst_capacity=number(_TARGET_BURST_CAPACITY),
            scale_to_zero_pod_retention_period=seconds(_SCALE_TO_ZERO_POD_RETENTION),
            metric_aggregation_algorithm=algorithm,
        )


