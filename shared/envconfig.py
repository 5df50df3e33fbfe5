"""Typed reads from an environment mapping, with errors that name the variable.

Every component builds one frozen config from its environment at start-up (Knative's
queue-proxy does the same with envconfig.Process in pkg/queue/sharedmain/main.go). These
helpers take the mapping as an argument, so nothing here reads ``os.environ`` and tests pass
a plain dict.

Conventions, chosen to fail fast at start-up rather than misbehave later:

- A variable that is absent, or set to the empty string, takes its default: Kubernetes
  renders ``value: ""`` and a missing ``fieldRef`` the same way, and both mean "not set".
- Values are parsed as Go parses them (shared/gosyntax.py): numbers strictly (no
  underscores, no surrounding spaces, no ``inf``/``nan``), booleans in exactly
  strconv.ParseBool's spellings, since Knative writes them with strconv.FormatBool
  (pkg/reconciler/revision/resources/queue.go).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Literal, overload

from shared.gosyntax import NS_PER_S, parse_bool, parse_duration, parse_float, parse_int, quote

__all__ = [
    "ConfigError",
    "env_bool",
    "env_duration",
    "env_float",
    "env_int",
    "env_port",
    "env_str",
]

_PORT_MIN = 1
_PORT_MAX = 65535


class ConfigError(ValueError):
    """A configuration value is missing or invalid.

    The message always starts with the variable (or ConfigMap key) at fault, e.g.
    ``CONTAINER_CONCURRENCY: must be an integer >= 0, got "abc"``, so that an operator
    reading a crash-looping pod's log knows what to fix.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value else None


@overload
def env_str(env: Mapping[str, str], name: str, default: str, required: bool = False) -> str: ...
@overload
def env_str(
    env: Mapping[str, str], name: str, default: None = None, *, required: Literal[True]
) -> str: ...
@overload
def env_str(
    env: Mapping[str, str], name: str, default: None = None, required: bool = False
) -> str | None: ...
def env_str(
    env: Mapping[str, str], name: str, default: str | None = None, required: bool = False
) -> str | None:
    """Read a string variable.

    Raises:
        ConfigError: ``required`` is set and the variable is absent or empty.
    """
    value = _raw(env, name)
    if value is not None:
        return value
    if required:
        raise ConfigError(name, "required but not set")
    return default


def _range_text(kind: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"must be {kind} in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"must be {kind} >= {minimum}"
    if maximum is not None:
        return f"must be {kind} <= {maximum}"
    return f"must be {kind}"


def env_int(
    env: Mapping[str, str],
    name: str,
    default: int,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """Read a decimal integer within ``[minimum, maximum]`` (either bound optional).

    The default is returned as given, unchecked: it is the caller's constant, not input.
    """
    raw = _raw(env, name)
    if raw is None:
        return default
    with contextlib.suppress(ValueError):
        value = parse_int(raw)
        if (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
            return value
    raise ConfigError(name, f"{_range_text('an integer', minimum, maximum)}, got {quote(raw)}")


def env_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """Read a finite decimal number within ``[minimum, maximum]`` (either bound optional).

    Knative's durations in seconds are integers; knpy accepts fractions too so that tests
    can shorten its periods (e.g. ``QUEUE_DRAIN_PERIOD_SECONDS=0.1``).
    """
    raw = _raw(env, name)
    if raw is None:
        return default
    with contextlib.suppress(ValueError):
        value = parse_float(raw)
        if (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
            return value
    raise ConfigError(name, f"{_range_text('a number', minimum, maximum)}, got {quote(raw)}")


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """Read a boolean spelled as Go's strconv.ParseBool accepts (``true``, ``1``, ``F``...)."""
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        return parse_bool(raw)
    except ValueError:
        reason = f"must be a boolean (true/false/1/0/t/f), got {quote(raw)}"
        raise ConfigError(name, reason) from None


def env_port(env: Mapping[str, str], name: str, default: int) -> int:
    """Read a TCP port number in [1, 65535]."""
    return env_int(env, name, default, minimum=_PORT_MIN, maximum=_PORT_MAX)


def env_duration(env: Mapping[str, str], name: str, default: float) -> float:
    """Read a Go duration ("300ms", "1m30s") in seconds, as Knative's PROBE_* variables.

    Go's time.ParseDuration grammar, but for negative values, which no period can be.
    """
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        ns = parse_duration(raw)
    except ValueError:
        ns = -1
    if ns < 0:
        raise ConfigError(name, f'must be a Go duration such as "300ms", got {quote(raw)}')
    return ns / NS_PER_S
