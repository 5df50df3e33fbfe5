"""A PingSource's cron schedule: parsing (with the webhook's messages) and the next fire time.

Knative's PingSource reads its ``schedule`` with robfig/cron's parser set to "seconds optional,
minute, hour, day of month, month, day of week, descriptors" (pkg/apis/sources/v1/
ping_validation.go) and prefixes ``CRON_TZ=<timezone>`` when ``timezone`` is set. This module
reads the same language, and behaves as robfig does where a user can tell:

- five fields, or six with seconds first; ``*``, ``?``, ``a-b``, ``/step``, lists, month and
  weekday names (``JAN``, ``MON``), weekday 0-6 with 0 = Sunday;
- the descriptors ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``,
  ``@hourly`` (``@every`` is refused, as Knative's webhook refuses it);
- day of month and day of week: when both are restricted (neither starts with ``*`` or
  ``?``) a day matches if either does, otherwise both must;
- times are wall-clock times in the timezone: a time that a DST jump skips does not fire, one it
  repeats fires once (its first occurrence).

Pure: ``Schedule.next_after(t)`` takes and returns Unix seconds, so tests drive it with any clock.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CronError", "Schedule", "parse_schedule"]

_MONTHS: Final = {
    n: i + 1
    for i, n in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}
_DAYS: Final = {n: i for i, n in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_DESCRIPTORS: Final = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
# (name, lowest, highest, names) of the six fields, seconds first.
_FIELDS: Final[tuple[tuple[str, int, int, dict[str, int]], ...]] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
_SEARCH_YEARS: Final = 5  # robfig gives up after five years (e.g. "0 0 30 2 *")
_TZ_PREFIX: Final = re.compile(r"^(?:CRON_)?TZ=(\S+)\s+")


class CronError(ValueError):
    """A schedule or timezone that cannot be read; ``field`` is ``schedule`` or ``timezone``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule: the allowed values of each field, and its timezone."""

    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_star: bool  # day of month was * or ?
    weekdays_star: bool
    tz: dt.tzinfo

    def _day_matches(self, d: dt.date) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def next_after(self, t: float) -> float | None:
        """The first fire time strictly after Unix time ``t``, or None within five years."""
        start = dt.datetime.fromtimestamp(t, self.tz).replace(tzinfo=None, microsecond=0)
        start += dt.timedelta(seconds=1)
        day = start.date()
        end = day.replace(year=day.year + _SEARCH_YEARS)
        first = True
        while day < end:
            if day.month in self.months and self._day_matches(day):
                found = self._first_in_day(day, start if first else None, t)
                if found is not None:
                    return found
            day += dt.timedelta(days=1)
            first = False
        return None

    def _first_in_day(self, day: dt.date, start: dt.datetime | None, t: float) -> float | None:
        for h in sorted(self.hours):
            if start is not None and h < start.hour:
                continue
            for m in sorted(self.minutes):
                if start is not None and (h, m) < (start.hour, start.minute):
                    continue
                for s in sorted(self.seconds):
                    wall = dt.datetime(day.year, day.month, day.day, h, m, s)
                    if start is not None and wall < start:
                        continue
                    at = _instant(wall, self.tz)
                    if at is not None and at > t:
                        return at
        return None


def _instant(wall: dt.datetime, tz: dt.tzinfo) -> float | None:
    """Unix time of a wall-clock time in ``tz``: None if a DST jump skips it; the first of
    two when it repeats."""
    aware = wall.replace(tzinfo=tz, fold=0)
    back = dt.datetime.fromtimestamp(aware.timestamp(), tz).replace(tzinfo=None)
    return aware.timestamp() if back == wall else None


def _zone(name: str) -> dt.tzinfo:
    """An IANA zone (Go's ``Local``, the process' zone, is not offered: knpy reads names)."""
    if name == "UTC":
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        message = f"provided bad location {name}: unknown time zone {name}"
        raise CronError("timezone", message) from None


def _value(text: str, names: dict[str, int]) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise CronError("schedule", f"failed to parse int from {text}: invalid syntax")
    return int(text)


def _field(expr: str, index: int) -> tuple[frozenset[int], bool]:
    """The values of one field and whether it was a bare ``*``/``?``."""
    _, lo, hi, names = _FIELDS[index]
    out: set[int] = set()
    star = False
    for part in expr.split(","):
        rng, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit():
                raise CronError("schedule", f"failed to parse int from {step_text}: invalid syntax")
            step = int(step_text)
            if step == 0:
                raise CronError("schedule", f"step of range should be a positive number: {part}")
        if rng in ("*", "?"):
            first, last = lo, hi
            star = star or step == 1
        else:
            a, dash, b = rng.partition("-")
            first = _value(a, names)
            last = _value(b, names) if dash else (hi if step_text else first)
        if first < lo:
            raise CronError(
                "schedule", f"beginning of range ({first}) below minimum ({lo}): {part}"
            )
        if last > hi:
            raise CronError("schedule", f"end of range ({last}) above maximum ({hi}): {part}")
        if first > last:
            raise CronError(
                "schedule", f"beginning of range ({first}) beyond end of range ({last}): {part}"
            )
        out.update(range(first, last + 1, step))
    return frozenset(out), star


def parse_schedule(schedule: str, timezone: str = "") -> Schedule:
    """The schedule as Knative's webhook reads it (``timezone``: an IANA name, "" for UTC).

    Raises:
        CronError: with the field (``schedule``/``timezone``) and robfig's kind of message.
    """
    text = schedule.strip()
    tz: dt.tzinfo = dt.UTC
    if m := _TZ_PREFIX.match(text):
        tz = _zone(m.group(1))
        text = text[m.end() :]
    if timezone:
        tz = _zone(timezone)
    if not text:
        raise CronError("schedule", "empty spec string")
    if text.startswith("@every"):
        raise CronError("schedule", "unsupported descriptor @every")
    if text.startswith("@"):
        if text not in _DESCRIPTORS:
            raise CronError("schedule", f"unrecognized descriptor: {text}")
        fields = _DESCRIPTORS[text].split()
    else:
        fields = text.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        elif len(fields) != 6:
            raise CronError(
                "schedule", f"expected 5 to 6 fields, found {len(fields)}: [{' '.join(fields)}]"
            )
    parsed = [_field(f, i) for i, f in enumerate(fields)]
    return Schedule(
        seconds=parsed[0][0],
        minutes=parsed[1][0],
        hours=parsed[2][0],
        days=parsed[3][0],
        months=parsed[4][0],
        weekdays=parsed[5][0],
        days_star=parsed[3][1],
        weekdays_star=parsed[5][1],
        tz=tz,
    )
