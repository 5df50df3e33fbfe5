"""Autoscaling configuration: Knative's config-autoscaler ConfigMap and revision annotations.

Two layers, as in Knative:

- ``AutoscalerConfig``: the cluster-wide ``config-autoscaler`` keys with Knative's defaults and
  validation (pkg/autoscaler/config/config.go), parsed once from the ConfigMap's data.
- ``RevisionAutoscaling``: one revision's ``autoscaling.knative.dev/*`` annotations, validated
  as Knative's webhook does (pkg/apis/autoscaling/annotation_validation.go); None means "not
  set, the cluster default applies".

The resolvers combine the two as Knative's PodAutoscaler reconciler does
(pkg/reconciler/autoscaling/resources and kpa/resources/decider.go). The target per pod is
``total * utilization``, at least 0.01:

- concurrency with containerConcurrency 0: total is container-concurrency-target-default,
  so 100 * 70 % = target 70 of 100; with containerConcurrency 10: 10 * 70 % = 7 of 10;
- rps: total is requests-per-second-target-default, 200 * 70 % = 140 of 200;
- a ``target`` annotation replaces the total, but never above a non-zero
  containerConcurrency (target 50 at containerConcurrency 10 stays 10 * 70 % = 7);
- ``target-utilization-percentage`` replaces the utilization (75 -> 0.75).

The panic window is the stable window times panic-window-percentage, rounded to whole
seconds and at least 1 s: 60 s at 10 % is 6 s; 10 s at 10 % is 1 s; 60 s at 51 % is 31 s.

Values are parsed as Go parses them (strconv, time.ParseDuration: "1m30s", "500ms"); every
error names the key at fault. Durations are float seconds here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

from autoscaler.scaling import DeciderSpec
from shared.envconfig import ConfigError, quote

__all__ = [
    "BUCKET_SIZE_S",
    "CONCURRENCY",
    "CONFIG_NAME",
    "CPU",
    "HPA",
    "KPA",
    "LINEAR",
    "MEMORY",
    "RPS",
    "TARGET_MIN",
    "WEIGHTED_EXPONENTIAL",
    "WINDOW_MAX_S",
    "WINDOW_MIN_S",
    "AnnotationError",
    "AutoscalerConfig",
    "RevisionAutoscaling",
    "decider_spec",
    "initial_scale",
    "panic_window",
    "parse_go_duration",
    "resolve_metric_target",
    "scale_bounds",
    "scale_to_zero_pod_retention",
    "stable_window",
]

_T = TypeVar("_T")

CONFIG_NAME = "config-autoscaler"
# Knative's BucketSize: the metric buckets' granularity, and the shortest panic window.
BUCKET_SIZE_S = 1.0

KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
CONCURRENCY = "concurrency"
RPS = "rps"
CPU = "cpu"
MEMORY = "memory"
LINEAR = "linear"
WEIGHTED_EXPONENTIAL = "weighted-exponential"
_WEIGHTED_EXPONENTIAL_ALT = "weightedExponential"

# The smallest target per pod: small containerConcurrency times a small utilization can
# go below 1 request, but not to 0, which would divide by zero.
TARGET_MIN = 0.01
# The decider ticks every 2 s, so a stable window under 6 s would see too few points;
# over an hour the decisions would lag too far behind.
WINDOW_MIN_S = 6.0
WINDOW_MAX_S = 3600.0
_WINDOW_MIN_TEXT, _WINDOW_MAX_TEXT = "6s", "1h0m0s"  # as Go prints them in messages
PANIC_WINDOW_PERCENTAGE_MIN, PANIC_WINDOW_PERCENTAGE_MAX = 1.0, 100.0
# Under 110 % the decider would panic at the target itself and never scale down.
PANIC_THRESHOLD_PERCENTAGE_MIN, PANIC_THRESHOLD_PERCENTAGE_MAX = 110.0, 1000.0
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_DEFAULT_TARGET_UTILIZATION = 0.7

GROUP = "autoscaling.knative.dev"
CLASS_KEY = f"{GROUP}/class"
METRIC_KEY = f"{GROUP}/metric"
TARGET_KEY = f"{GROUP}/target"
TARGET_UTILIZATION_PERCENTAGE_KEY = f"{GROUP}/target-utilization-percentage"
WINDOW_KEY = f"{GROUP}/window"
PANIC_WINDOW_PERCENTAGE_KEY = f"{GROUP}/panic-window-percentage"
PANIC_THRESHOLD_PERCENTAGE_KEY = f"{GROUP}/panic-threshold-percentage"
MIN_SCALE_KEY = f"{GROUP}/min-scale"
MAX_SCALE_KEY = f"{GROUP}/max-scale"
INITIAL_SCALE_KEY = f"{GROUP}/initial-scale"
ACTIVATION_SCALE_KEY = f"{GROUP}/activation-scale"
SCALE_DOWN_DELAY_KEY = f"{GROUP}/scale-down-delay"
TARGET_BURST_CAPACITY_KEY = f"{GROUP}/target-burst-capacity"
SCALE_TO_ZERO_POD_RETENTION_PERIOD_KEY = f"{GROUP}/scale-to-zero-pod-retention-period"
METRIC_AGGREGATION_ALGORITHM_KEY = f"{GROUP}/metric-aggregation-algorithm"

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

# --- Go's number and duration syntax -------------------------------------------------------

_NS_PER_S = 1_000_000_000
_INT_RE = re.compile(r"[+-]?[0-9]+")
# strconv.ParseFloat's decimal forms; hex floats and inf/nan are refused (see _parse_float).
_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_DURATION_PART_RE = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_DURATION_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # µ, micro sign
    "\u03bcs": 1_000,  # μ, Greek mu
    "ms": 1_000_000,
    "s": _NS_PER_S,
    "m": 60 * _NS_PER_S,
    "h": 3600 * _NS_PER_S,
}
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_duration(text: str) -> int:
    """Parse Go's time.ParseDuration syntax ("1h2m3.5s", "300ms", "0") into nanoseconds.

    Raises:
        ValueError: not a Go duration, or beyond Go's 292 years.
    """
    rest = text
    negative = rest[:1] == "-"
    if rest[:1] in ("-", "+"):
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"invalid duration {quote(text)}")
    total = Fraction(0)
    pos = 0
    while pos < len(rest):
        match = _DURATION_PART_RE.match(rest, pos)
        if match is None or not any(c.isdigit() for c in match.group(1)):
            raise ValueError(f"invalid duration {quote(text)}")
        number = match.group(1)
        total += (
            Fraction(number + "0" if number.endswith(".") else number)
            * (_DURATION_UNIT_NS[match.group(2)])
        )
        pos = match.end()
    ns = int(total)
    if ns > _INT64_MAX:
        raise ValueError(f"invalid duration {quote(text)}")
    return -ns if negative else ns


def _parse_float(text: str) -> float:
    """strconv.ParseFloat for decimal numbers, finite only (Go also takes "inf" and "NaN")."""
    if _FLOAT_RE.fullmatch(text) is None:
        raise ValueError(text)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


class _RangeError(ValueError):
    """A well-formed integer out of its type's range (Go's strconv.ErrRange)."""


def _parse_int(text: str, bits: int = 32) -> int:
    """strconv.ParseInt(text, 10, bits).

    Raises:
        _RangeError: a well-formed number out of range.
        ValueError: not a decimal integer.
    """
    if _INT_RE.fullmatch(text) is None:
        raise ValueError(text)
    value = int(text)
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise _RangeError(text)
    return value


def _parse_int64(text: str) -> int:
    return _parse_int(text, bits=64)


def _go_number(value: float) -> str:
    """A float as Go's %v prints it: 100.0 as "100", 0.5 as "0.5"."""
    return str(int(value)) if value.is_integer() else repr(value)


# --- config-autoscaler ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    """Knative's config-autoscaler, validated at construction. Durations in seconds."""

    enable_scale_to_zero: bool = True
    # container-concurrency-target-percentage as a fraction: "70" and "0.7" both give 0.7.
    container_concurrency_target_fraction: float = _DEFAULT_TARGET_UTILIZATION
    container_concurrency_target_default: float = 100.0
    # The utilization for metrics other than concurrency; not a ConfigMap key in Knative.
    target_utilization: float = _DEFAULT_TARGET_UTILIZATION
    rps_target_default: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    target_burst_capacity: float = 211.0
    panic_window_percentage: float = 10.0
    activator_capacity: float = 100.0
    panic_threshold_percentage: float = 200.0
    stable_window: float = 60.0
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0
    scale_down_delay: float = 0.0
    pod_autoscaler_class: str = KPA
    allow_zero_initial_scale: bool = False
    initial_scale: int = 1
    min_scale: int = 0
    max_scale: int = 0
    max_scale_limit: int = 0

    def __post_init__(self) -> None:
        """Knative's validate(), in its order, naming the ConfigMap key at fault.

        Raises:
            ConfigError: a value out of its range.
        """
        _validate(self)

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> AutoscalerConfig:
        """Build the config from a ``config-autoscaler`` ConfigMap's data.

        Absent keys take Knative's defaults; unknown keys (``_example``) are ignored. A
        present key must parse, even when empty, as in Knative.

        Raises:
            ConfigError: a value that does not parse or is out of range; names the key.
        """
        d = cls()
        fraction = _cm_float(
            data,
            "container-concurrency-target-percentage",
            d.container_concurrency_target_fraction,
        )
        # For legacy reasons both a fraction in (0, 1] and a percentage are accepted.
        if fraction > 1.0:
            fraction /= 100.0
        return cls(
            pod_autoscaler_class=data.get("pod-autoscaler-class", d.pod_autoscaler_class),
            enable_scale_to_zero=_cm_bool(data, "enable-scale-to-zero", d.enable_scale_to_zero),
            allow_zero_initial_scale=_cm_bool(
                data, "allow-zero-initial-scale", d.allow_zero_initial_scale
            ),
            max_scale_up_rate=_cm_float(data, "max-scale-up-rate", d.max_scale_up_rate),
            max_scale_down_rate=_cm_float(data, "max-scale-down-rate", d.max_scale_down_rate),
            container_concurrency_target_fraction=fraction,
            container_concurrency_target_default=_cm_float(
                data, "container-concurrency-target-default", d.container_concurrency_target_default
            ),
            rps_target_default=_cm_float(
                data, "requests-per-second-target-default", d.rps_target_default
            ),
            target_burst_capacity=_cm_float(data, "target-burst-capacity", d.target_burst_capacity),
            panic_window_percentage=_cm_float(
                data, "panic-window-percentage", d.panic_window_percentage
            ),
            activator_capacity=_cm_float(data, "activator-capacity", d.activator_capacity),
            panic_threshold_percentage=_cm_float(
                data, "panic-threshold-percentage", d.panic_threshold_percentage
            ),
            initial_scale=_cm_int32(data, "initial-scale", d.initial_scale),
            min_scale=_cm_int32(data, "min-scale", d.min_scale),
            max_scale=_cm_int32(data, "max-scale", d.max_scale),
            max_scale_limit=_cm_int32(data, "max-scale-limit", d.max_scale_limit),
            stable_window=_cm_duration(data, "stable-window", d.stable_window),
            scale_down_delay=_cm_duration(data, "scale-down-delay", d.scale_down_delay),
            scale_to_zero_grace_period=_cm_duration(
                data, "scale-to-zero-grace-period", d.scale_to_zero_grace_period
            ),
            scale_to_zero_pod_retention_period=_cm_duration(
                data, "scale-to-zero-pod-retention-period", d.scale_to_zero_pod_retention_period
            ),
        )


def _parse_bool(text: str) -> bool:
    """strconv.ParseBool."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(text)


def _parse_seconds(text: str) -> float:
    return parse_go_duration(text) / _NS_PER_S


def _cm_value(
    data: Mapping[str, str], key: str, default: _T, parse: Callable[[str], _T], expected: str
) -> _T:
    """The key's value parsed, or ``default`` when the key is absent (not when it is empty)."""
    raw = data.get(key)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ConfigError(key, f"must be {expected}, got {quote(raw)}") from None


def _cm_float(data: Mapping[str, str], key: str, default: float) -> float:
    return _cm_value(data, key, default, _parse_float, "a finite number")


def _cm_int32(data: Mapping[str, str], key: str, default: int) -> int:
    return _cm_value(data, key, default, _parse_int, "a 32-bit integer")


def _cm_bool(data: Mapping[str, str], key: str, default: bool) -> bool:
    return _cm_value(data, key, default, _parse_bool, "a boolean (true/false/1/0/t/f)")


def _cm_duration(data: Mapping[str, str], key: str, default: float) -> float:
    return _cm_value(data, key, default, _parse_seconds, 'a duration such as "30s" or "1m30s"')


def _whole_seconds(seconds: float) -> bool:
    return float(seconds).is_integer()


def _validate(c: AutoscalerConfig) -> None:
    """Knative's validate(): its checks in its order; the first failing one is raised."""

    def check(ok: bool, key: str, reason: str) -> None:
        if not ok:
            raise ConfigError(key, reason)

    check(
        c.scale_to_zero_grace_period > 0,
        "scale-to-zero-grace-period",
        f"must be positive, was: {c.scale_to_zero_grace_period}s",
    )
    check(
        c.scale_down_delay >= 0,
        "scale-down-delay",
        f"cannot be negative, was: {c.scale_down_delay}s",
    )
    check(
        _whole_seconds(c.scale_down_delay),
        "scale-down-delay",
        f"= {c.scale_down_delay}s, must be specified with at most second precision",
    )
    check(
        c.scale_to_zero_pod_retention_period >= 0,
        "scale-to-zero-pod-retention-period",
        f"cannot be negative, was: {c.scale_to_zero_pod_retention_period}s",
    )
    check(
        c.target_burst_capacity >= 0 or c.target_burst_capacity == -1,
        "target-burst-capacity",
        f"must be either non-negative or -1 (for unlimited), was: {c.target_burst_capacity}",
    )
    fraction = c.container_concurrency_target_fraction
    check(
        0 < fraction <= 1,
        "container-concurrency-target-percentage",
        f"= {fraction} is outside of valid range of (0, 100]",
    )
    target = fraction * c.container_concurrency_target_default
    check(
        target >= TARGET_MIN,
        "container-concurrency-target-default",
        f"with container-concurrency-target-percentage yields target concurrency of "
        f"{target}, can't be less than {TARGET_MIN}",
    )
    check(
        c.rps_target_default >= TARGET_MIN,
        "requests-per-second-target-default",
        f"must be at least {TARGET_MIN}, was: {c.rps_target_default}",
    )
    check(
        c.activator_capacity >= 1,
        "activator-capacity",
        f"= {c.activator_capacity}, must be at least 1",
    )
    check(
        c.max_scale_up_rate > 1.0,
        "max-scale-up-rate",
        f"= {c.max_scale_up_rate}, must be greater than 1.0",
    )
    check(
        c.max_scale_down_rate > 1.0,
        "max-scale-down-rate",
        f"= {c.max_scale_down_rate}, must be greater than 1.0",
    )
    check(
        WINDOW_MIN_S <= c.stable_window <= WINDOW_MAX_S,
        "stable-window",
        f"= {c.stable_window}s, must be in [{_WINDOW_MIN_TEXT}; {_WINDOW_MAX_TEXT}] range",
    )
    check(
        _whole_seconds(c.stable_window),
        "stable-window",
        f"= {c.stable_window}s, must be specified with at most second precision",
    )
    check(
        PANIC_WINDOW_PERCENTAGE_MIN <= c.panic_window_percentage <= PANIC_WINDOW_PERCENTAGE_MAX,
        "panic-window-percentage",
        f"= {c.panic_window_percentage}, must be in [1, 100] interval",
    )
    check(
        c.initial_scale > 0 or (c.initial_scale == 0 and c.allow_zero_initial_scale),
        "initial-scale",
        f"= {c.initial_scale}, must be at least 0 "
        "(or at least 1 when allow-zero-initial-scale is false)",
    )
    check(c.min_scale >= 0, "min-scale", f"= {c.min_scale}, must be at least 0")
    # With a max-scale-limit, a default max-scale (not "unlimited") is required.
    min_max_scale = 1 if c.max_scale_limit > 0 else 0
    check(
        c.max_scale >= min_max_scale
        and (c.max_scale_limit <= 0 or c.max_scale <= c.max_scale_limit),
        "max-scale",
        f"= {c.max_scale}, must be in "
        f"[{min_max_scale}, max-scale-limit({c.max_scale_limit})] range",
    )
    check(
        c.max_scale_limit >= 0,
        "max-scale-limit",
        f"= {c.max_scale_limit}, must be at least 0",
    )
    check(
        not (c.min_scale > c.max_scale > 0),
        "min-scale",
        f"({c.min_scale}) must be less than max-scale ({c.max_scale})",
    )


# --- autoscaling.knative.dev annotations ----------------------------------------------------


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
            value = _parse_int(raw)
        except _RangeError:
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
        found = self.parsed(_ACTIVATION_SCALE, _parse_int)
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
        found = self.parsed(keys, _parse_float)
        if found is None:
            return
        key, raw, value = found
        if not low <= value <= high:
            self.error(key, _out_of_bounds(raw, _go_number(low), _go_number(high)))

    def check_floats(self) -> None:
        self.float_in(
            _PANIC_WINDOW_PERCENTAGE, PANIC_WINDOW_PERCENTAGE_MIN, PANIC_WINDOW_PERCENTAGE_MAX
        )
        self.float_in(
            _PANIC_THRESHOLD_PERCENTAGE,
            PANIC_THRESHOLD_PERCENTAGE_MIN,
            PANIC_THRESHOLD_PERCENTAGE_MAX,
        )
        target = self.parsed(_TARGET, _parse_float)
        if target is not None and target[2] < TARGET_MIN:
            self.error(target[0], f"target {target[1]} should be at least {TARGET_MIN}")
        self.float_in(_TARGET_UTILIZATION, 1.0, 100.0)
        tbc = self.parsed(_TARGET_BURST_CAPACITY, _parse_float)
        if tbc is not None and tbc[2] < 0 and tbc[2] != -1:
            self.error(tbc[0], _invalid(tbc[1]))

    def check_window(self) -> None:
        found = self.parsed(_WINDOW, parse_go_duration)
        if found is None:
            return
        key, raw, ns = found
        if not WINDOW_MIN_S * _NS_PER_S <= ns <= WINDOW_MAX_S * _NS_PER_S:
            self.error(key, _out_of_bounds(raw, _WINDOW_MIN_TEXT, _WINDOW_MAX_TEXT))
        elif ns % _NS_PER_S:
            self.error(key, "must be specified with at most second precision")

    def check_duration(self, keys: tuple[str, ...], *, whole_seconds: bool) -> None:
        """Pod retention and scale-down delay: in [0, 1h], the delay in whole seconds."""
        found = self.parsed(keys, parse_go_duration)
        if found is None:
            return
        key, raw, ns = found
        if not 0 <= ns <= WINDOW_MAX_S * _NS_PER_S:
            self.error(key, _out_of_bounds(raw, "0s", _WINDOW_MAX_TEXT))
        elif whole_seconds and ns % _NS_PER_S:
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
        found = self.parsed(_INITIAL_SCALE, _parse_int64)
        if found is None:
            return
        key, raw, value = found
        if value < 0:
            self.error(key, f"{_invalid(raw)}, must be greater than 0")
        elif value == 0 and not self.cfg.allow_zero_initial_scale:
            self.error(key, f"{_invalid(raw)}, =0 not allowed by cluster")


_ALGORITHMS = frozenset({LINEAR, WEIGHTED_EXPONENTIAL, _WEIGHTED_EXPONENTIAL_ALT})


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
            return None if raw is None else _parse_float(raw)

        def integer(keys: tuple[str, ...]) -> int | None:
            raw = text(keys)
            return None if raw is None else _parse_int64(raw)

        def seconds(keys: tuple[str, ...]) -> float | None:
            raw = text(keys)
            return None if raw is None else parse_go_duration(raw) / _NS_PER_S

        autoscaler_class = text(_CLASS) or cfg.pod_autoscaler_class
        utilization = number(_TARGET_UTILIZATION)
        algorithm = text(_METRIC_AGGREGATION_ALGORITHM) or LINEAR
        if algorithm == _WEIGHTED_EXPONENTIAL_ALT:
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


# --- resolution: Knative's PodAutoscaler reconciler -----------------------------------------


def resolve_metric_target(
    cfg: AutoscalerConfig, ra: RevisionAutoscaling, container_concurrency: int
) -> tuple[float, float]:
    """Knative's ResolveMetricTarget: (target per pod, total per pod) of the scaling metric."""
    if ra.metric == RPS:
        total = cfg.rps_target_default
        utilization = cfg.target_utilization
    else:
        # Unlimited containerConcurrency targets the cluster default.
        total = float(container_concurrency) or cfg.container_concurrency_target_default
        utilization = cfg.container_concurrency_target_fraction
    if ra.target is not None:
        total = ra.target
        if ra.metric == CONCURRENCY and container_concurrency != 0:
            # Never aim above what the app can take at once.
            total = min(ra.target, float(container_concurrency))
    if ra.target_utilization is not None:
        utilization = ra.target_utilization
    return max(TARGET_MIN, total * utilization), total


def stable_window(cfg: AutoscalerConfig, ra: RevisionAutoscaling) -> float:
    """The revision's stable window in seconds: its window annotation, or the cluster's."""
    return cfg.stable_window if ra.window is None else ra.window


def panic_window(cfg: AutoscalerConfig, ra: RevisionAutoscaling) -> float:
    """The panic window in seconds: stable window x percentage, whole seconds, at least 1 s."""
    percentage = (
        cfg.panic_window_percentage
        if ra.panic_window_percentage is None
        else ra.panic_window_percentage
    )
    # As Go: a float product truncated to nanoseconds, then rounded half up to seconds.
    ns = int(float(round(stable_window(cfg, ra) * _NS_PER_S)) * percentage / 100.0)
    rounded = (ns + _NS_PER_S // 2) // _NS_PER_S * _NS_PER_S
    return max(rounded / _NS_PER_S, BUCKET_SIZE_S)


def scale_bounds(
    cfg: AutoscalerConfig, ra: RevisionAutoscaling, *, reachable: bool = True
) -> tuple[int, int]:
    """Knative's ScaleBounds: (min, max) pods, 0 meaning unbounded; no min when unreachable."""
    low = 0
    if reachable:
        low = cfg.min_scale if ra.min_scale is None else ra.min_scale
    high = cfg.max_scale if ra.max_scale is None else ra.max_scale
    return low, high


def initial_scale(cfg: AutoscalerConfig, ra: RevisionAutoscaling) -> int:
    """Knative's GetInitialScale: the annotation's, unless it is a 0 the cluster forbids."""
    if ra.initial_scale is None or (ra.initial_scale == 0 and not cfg.allow_zero_initial_scale):
        return cfg.initial_scale
    return ra.initial_scale


def scale_to_zero_pod_retention(cfg: AutoscalerConfig, ra: RevisionAutoscaling) -> float:
    """Seconds the last pod is kept after the decision to scale to zero."""
    if ra.scale_to_zero_pod_retention_period is None:
        return cfg.scale_to_zero_pod_retention_period
    return ra.scale_to_zero_pod_retention_period


def decider_spec(
    cfg: AutoscalerConfig,
    ra: RevisionAutoscaling,
    container_concurrency: int,
    *,
    reachable: bool = True,
) -> DeciderSpec:
    """Knative's MakeDecider: the revision's DeciderSpec from the cluster config and annotations.

    Args:
        reachable: whether a route points at the revision (Knative's PA reachability);
            an unreachable revision scales down without rate limit or delay.
    """
    target, total = resolve_metric_target(cfg, ra, container_concurrency)
    threshold_percentage = (
        cfg.panic_threshold_percentage
        if ra.panic_threshold_percentage is None
        else ra.panic_threshold_percentage
    )
    return DeciderSpec(
        target_value=target,
        total_value=total,
        target_burst_capacity=(
            cfg.target_burst_capacity
            if ra.target_burst_capacity is None
            else ra.target_burst_capacity
        ),
        panic_threshold=threshold_percentage / 100.0,
        max_scale_up_rate=cfg.max_scale_up_rate,
        max_scale_down_rate=cfg.max_scale_down_rate,
        stable_window=stable_window(cfg, ra),
        scale_down_delay=cfg.scale_down_delay
        if ra.scale_down_delay is None
        else ra.scale_down_delay,
        activator_capacity=cfg.activator_capacity,
        initial_scale=initial_scale(cfg, ra),
        reachable=reachable,
        activation_scale=0 if ra.activation_scale is None else ra.activation_scale,
        scaling_metric=ra.metric,
    )
