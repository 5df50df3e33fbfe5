"""Knative's DeliverySpec: parsed, validated, and the retry schedule it implies.

Theory of operation. A delivery is ``retry + 1`` attempts; an attempt succeeds on a 2xx only.
After a failed attempt the next one happens only if the outcome is retriable (no response, 5xx,
404, 408, 409, 429: Knative's ``SelectiveRetry`` in pkg/kncloudevents/retries.go) and attempts
are left; otherwise the event goes to the dead-letter sink, if there is one.

The wait before retry ``k`` (``k = 1`` for the first retry) is, with ``d = backoffDelay``::

    linear:       k * d          PT1S: 1 s, 2 s, 3 s, ...
    exponential:  2**(k-1) * d   PT0.2S: 0.2 s, 0.4 s, 0.8 s, ... (10 retries: 204.6 s in all)

Knative's own sources disagree here: its API comment says ``d * k`` and ``d * 2**k``, its
dispatcher (go-retryablehttp counts retries from 0) waits ``d * (k-1)`` and ``d * 2**(k-1)``
(so a linear policy's first retry is immediate), and knative/specs says a linear policy waits
``d`` every time. knpy keeps the running code's exponential schedule, which Knative's broker
default (``config-br-defaults``: 10 retries, exponential, PT0.2S) was tuned on, and the API
comment's linear one, so that no retry is ever immediate when a delay is set. Without both a
policy and a delay every retry is immediate, as in Knative.

``Retry-After`` (429 and 503 only) counts only when ``retryAfterMax`` is set, as Knative's
opt-in ``delivery-retryafter`` feature: the wait is ``max(backoff, min(Retry-After,
retryAfterMax))``, and ``retryAfterMax: PT0S`` ignores the header.

A trigger's ``delivery`` replaces its broker's wholesale (no field is merged:
pkg/reconciler/broker/trigger/trigger.go); a broker without one gets the cluster default.

Pure: no I/O, and the clock (for an HTTP-date ``Retry-After``) is an argument.
"""

from __future__ import annotations

import email.utils
import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from eventing.errors import FieldError, join_path

__all__ = [
    "CLUSTER_DEFAULT",
    "BackoffPolicy",
    "DeliveryError",
    "DeliverySpec",
    "effective_delivery",
    "is_success",
    "parse_delivery",
    "parse_duration_s",
    "parse_retry_after_s",
    "should_retry",
    "validate_delivery",
]

Format = Literal["json", "binary"]


class BackoffPolicy(enum.StrEnum):
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


class DeliveryError(ValueError):
    """A DeliverySpec that cannot be used; ``errors`` name every bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class DeliverySpec:
    """One resolved delivery policy, durations in seconds (None: not set).

    ``dead_letter_sink`` is the Destination as written (``uri`` and/or ``ref``); the URL it
    resolves to comes from the object's status (``deadLetterSinkUri``), written by the control
    plane.
    """

    retry: int = 0
    backoff_policy: BackoffPolicy | None = None
    backoff_delay_s: float | None = None
    timeout_s: float | None = None
    retry_after_max_s: float | None = None
    dead_letter_sink: Mapping[str, object] | None = None
    format: Format | None = None

    @property
    def attempts(self) -> int:
        """``retry`` is the number of retries: one first attempt more."""
        return self.retry + 1

    def backoff_s(self, k: int) -> float:
        """The wait before retry ``k`` (1-based) by the policy alone (see the module doc)."""
        if k < 1:
            raise ValueError(f"retries count from 1, got {k}")
        d = self.backoff_delay_s
        if self.backoff_policy is None or d is None:
            return 0.0
        if self.backoff_policy is BackoffPolicy.LINEAR:
            return k * d
        return d * 2.0 ** min(k - 1, 62)

    def wait_s(self, k: int, status: int | None, retry_after: str | None, now: float) -> float:
        """The wait before retry ``k`` after an attempt answered ``status`` (None: no answer)
        with ``retry_after`` (the header, if any), ``now`` on the wall clock (Unix seconds)."""
        wait = self.backoff_s(k)
        cap = self.retry_after_max_s
        if cap and status in (429, 503) and retry_after:
            asked = parse_retry_after_s(retry_after, now)
            if asked is not None:
                wait = max(wait, min(asked, cap))
        return wait


# Knative's config-br-defaults (config/core/configmaps/default-broker.yaml).
CLUSTER_DEFAULT: Final = DeliverySpec(
    retry=10, backoff_policy=BackoffPolicy.EXPONENTIAL, backoff_delay_s=0.2
)


def is_success(status: int | None) -> bool:
    """Only a 2xx is a delivered event (a 3xx is a failure, and not retried)."""
    return status is not None and 200 <= status < 300


def should_retry(status: int | None) -> bool:
    """Knative's SelectiveRetry: no response, 5xx, 404, 408, 409 and 429 are retried."""
    return status is None or status >= 500 or status in (404, 408, 409, 429)


# ISO-8601 durations as rickb777/date/period reads them: PnYnMnWnDTnHnMnS, each part optional,
# a decimal fraction (point or comma) allowed, a leading sign on the whole.
_DURATION: Final = re.compile(
    r"([-+]?)P(?:([\d.,]+)Y)?(?:([\d.,]+)M)?(?:([\d.,]+)W)?(?:([\d.,]+)D)?"
    r"(?:T(?:([\d.,]+)H)?(?:([\d.,]+)M)?(?:([\d.,]+)S)?)?"
)
# period.Duration's calendar approximations: a year of 365.2425 days, a month of a twelfth.
_DAY_S: Final = 86400.0
_UNITS_S: Final = (365.2425 * _DAY_S, 365.2425 * _DAY_S / 12, 7 * _DAY_S, _DAY_S, 3600.0, 60.0, 1.0)


def parse_duration_s(text: str) -> float:
    """An ISO-8601 duration (``PT0.2S``, ``PT1M30S``, ``P1D``) in seconds.

    Raises:
        ValueError: not such a duration (``"1s"``, ``"P"``, ``"PT"``, ``"P1.5.2S"``).
    """
    m = _DURATION.fullmatch(text.strip().upper())
    if m is None or text.strip().upper().endswith("T") or not any(m.groups()[1:]):
        raise ValueError(f"not an ISO-8601 duration: {text!r}")
    total = 0.0
    for part, unit_s in zip(m.groups()[1:], _UNITS_S, strict=True):
        if part:
            value = float(part.replace(",", "."))  # ValueError on "1.2.3"
            total += value * unit_s
    if not math.isfinite(total):
        raise ValueError(f"duration out of range: {text!r}")
    return -total if m.group(1) == "-" else total


def parse_retry_after_s(value: str, now: float) -> float | None:
    """A ``Retry-After`` header in seconds from ``now``: delay-seconds or an HTTP-date (RFC
    9110 section 10.2.3); None when it is neither (then it is ignored, as Knative does)."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def validate_delivery(spec: object, path: str = "spec.delivery") -> list[FieldError]:
    """Every problem of a DeliverySpec as written, with its field path (Knative's
    ``DeliverySpec.Validate``, with the ``delivery-timeout`` and ``delivery-retryafter``
    features on). None or ``{}`` is valid."""
    if spec is None:
        return []
    if not isinstance(spec, Mapping):
        return [FieldError(path, f"expected an object, got {type(spec).__name__}")]
    errs: list[FieldError] = []
    known = {"deadLetterSink", "retry", "backoffPolicy", "backoffDelay", "timeout",
             "retryAfterMax", "format"}
    errs += [FieldError(join_path(path, k), "unknown field") for k in spec if k not in known]
    dls = spec.get("deadLetterSink")
    if dls is not None:
        errs += _validate_destination(dls, join_path(path, "deadLetterSink"))
    retry = spec.get("retry")
    if retry is not None and (
        isinstance(retry, bool) or not isinstance(retry, int) or not 0 <= retry <= 2**31 - 1
    ):
        errs.append(FieldError(join_path(path, "retry"), f"invalid value: {retry}"))
    policy = spec.get("backoffPolicy")
    if policy is not None and policy not in ("linear", "exponential"):
        errs.append(FieldError(join_path(path, "backoffPolicy"), f"invalid value: {policy}"))
    fmt = spec.get("format")
    if fmt is not None and fmt not in ("json", "binary"):
        errs.append(FieldError(join_path(path, "format"), f"invalid value: {fmt}"))
    for name, positive in (("backoffDelay", False), ("timeout", True), ("retryAfterMax", False)):
        value = spec.get(name)
        if value is None:
            continue
        try:
            seconds = parse_duration_s(value) if isinstance(value, str) else None
        except ValueError:
            seconds = None
        if seconds is None or seconds < 0 or (positive and seconds == 0):
            errs.append(FieldError(join_path(path, name), f"invalid value: {value}"))
    return errs


def _validate_destination(dest: object, path: str) -> list[FieldError]:
    """Knative's Destination: a ``ref`` or a ``uri`` (or both: uri relative to ref)."""
    if not isinstance(dest, Mapping):
        return [FieldError(path, f"expected an object, got {type(dest).__name__}")]
    ref, uri = dest.get("ref"), dest.get("uri")
    if ref is None and uri is None:
        return [FieldError(path, "expected exactly one, got neither: ref, uri")]
    errs: list[FieldError] = []
    if uri is not None and (not isinstance(uri, str) or not uri):
        errs.append(FieldError(join_path(path, "uri"), f"invalid value: {uri}"))
    elif isinstance(uri, str) and ref is None and "://" not in uri:
        errs.append(
            FieldError(join_path(path, "uri"), "Relative URI is not allowed when Ref is absent")
        )
    if ref is not None:
        if not isinstance(ref, Mapping):
            errs.append(FieldError(join_path(path, "ref"), "expected an object"))
        else:
            errs += [
                FieldError(join_path(join_path(path, "ref"), key), "missing field(s)")
                for key in ("kind", "name", "apiVersion")
                if not ref.get(key)
            ]
    return errs


def parse_delivery(spec: object, path: str = "spec.delivery") -> DeliverySpec | None:
    """A DeliverySpec from its JSON form; None when absent.

    Raises:
        DeliveryError: every field validate_delivery refuses.
    """
    errs = validate_delivery(spec, path)
    if errs:
        raise DeliveryError(errs)
    if spec is None:
        return None
    assert isinstance(spec, Mapping)

    def seconds(name: str) -> float | None:
        value = spec.get(name)
        return None if value is None else parse_duration_s(str(value))

    policy = spec.get("backoffPolicy")
    fmt = spec.get("format")
    dls = spec.get("deadLetterSink")
    return DeliverySpec(
        retry=int(spec.get("retry") or 0),
        backoff_policy=BackoffPolicy(policy) if policy else None,
        backoff_delay_s=seconds("backoffDelay"),
        timeout_s=seconds("timeout"),
        retry_after_max_s=seconds("retryAfterMax"),
        dead_letter_sink=dls if isinstance(dls, Mapping) else None,
        format="json" if fmt == "json" else ("binary" if fmt == "binary" else None),
    )


def effective_delivery(trigger: object, broker: object) -> DeliverySpec:
    """The policy a trigger's deliveries follow: its own ``delivery`` when set, else its
    broker's, else the cluster default; wholesale, never merged field by field.

    Raises:
        DeliveryError: the chosen spec is invalid (the webhook should have refused it).
    """
    for spec, path in ((trigger, "trigger.spec.delivery"), (broker, "broker.spec.delivery")):
        parsed = parse_delivery(spec, path)
        if parsed is not None:
            return parsed
    return CLUSTER_DEFAULT
