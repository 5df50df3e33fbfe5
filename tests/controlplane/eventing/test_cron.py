"""PingSource schedules: robfig/cron's language and a fake clock across days, zones and DST."""

from __future__ import annotations

import datetime as dt

import pytest

from controlplane.cron import CronError, parse_schedule


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


def fires(schedule: str, start: float, n: int, tz: str = "") -> list[str]:
    """The next ``n`` fire times after ``start``, as UTC ISO strings: the clock only moves
    to each returned time, as the adapter's sleep would."""
    s = parse_schedule(schedule, tz)
    out, t = [], start
    for _ in range(n):
        nxt = s.next_after(t)
        assert nxt is not None
        out.append(dt.datetime.fromtimestamp(nxt, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        t = nxt
    return out


def test_every_minute_is_the_default_and_fires_on_the_minute() -> None:
    assert fires("* * * * *", utc(2026, 1, 1, 10, 0, 30), 3) == [
        "2026-01-01T10:01:00", "2026-01-01T10:02:00", "2026-01-01T10:03:00"]
    # exactly on a fire time: the next one, never the same one twice
    assert fires("* * * * *", utc(2026, 1, 1, 10, 1), 1) == ["2026-01-01T10:02:00"]


def test_steps_ranges_lists_and_names() -> None:
    assert fires("*/20 9-10 * * MON-FRI", utc(2026, 1, 2, 10, 30), 4) == [  # Friday
        "2026-01-02T10:40:00", "2026-01-05T09:00:00", "2026-01-05T09:20:00", "2026-01-05T09:40:00"]
    assert fires("0 12 1,15 JAN,jul *", utc(2026, 1, 10), 3) == [
        "2026-01-15T12:00:00", "2026-07-01T12:00:00", "2026-07-15T12:00:00"]
    assert fires("5/30 * * * *", utc(2026, 1, 1, 0, 0), 3) == [  # N/step = N-max/step
        "2026-01-01T00:05:00", "2026-01-01T00:35:00", "2026-01-01T01:05:00"]


def test_six_fields_have_seconds_first_and_descriptors() -> None:
    assert fires("*/10 * * * * *", utc(2026, 1, 1, 0, 0, 5), 2) == [
        "2026-01-01T00:00:10", "2026-01-01T00:00:20"]
    assert fires("@hourly", utc(2026, 1, 1, 0, 30), 1) == ["2026-01-01T01:00:00"]
    assert fires("@weekly", utc(2026, 1, 1), 1) == ["2026-01-04T00:00:00"]  # a Sunday
    assert fires("@yearly", utc(2026, 6, 1), 1) == ["2027-01-01T00:00:00"]


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # robfig: both restricted -> either matches; one of them * -> both must.
    assert fires("0 0 13 * FRI", utc(2026, 2, 1), 3) == [
        "2026-02-06T00:00:00", "2026-02-13T00:00:00", "2026-02-20T00:00:00"]
    assert fires("0 0 * * FRI", utc(2026, 2, 1), 1) == ["2026-02-06T00:00:00"]


def test_timezone_and_daylight_saving() -> None:
    # 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC once DST started (2026-03-29).
    assert fires("0 9 * * *", utc(2026, 3, 28, 12), 2, "Europe/Paris") == [
        "2026-03-29T07:00:00", "2026-03-30T07:00:00"]
    # 02:30 does not exist in Paris on 2026-03-29: skipped, as robfig skips it.
    assert fires("30 2 * * *", utc(2026, 3, 28, 12), 1, "Europe/Paris") == [
        "2026-03-30T00:30:00"]
    # 02:30 happens twice on 2026-10-25: it fires once.
    assert fires("30 2 * * *", utc(2026, 10, 24, 12), 2, "Europe/Paris") == [
        "2026-10-25T00:30:00", "2026-10-26T01:30:00"]
    assert fires("CRON_TZ=America/New_York 0 0 * * *", utc(2026, 1, 1), 1) == [
        "2026-01-01T05:00:00"]


def test_a_date_that_never_comes_gives_none() -> None:
    assert parse_schedule("0 0 30 2 *").next_after(utc(2026, 1, 1)) is None


@pytest.mark.parametrize(
    ("schedule", "timezone", "field", "message"),
    [
        ("61 * * * *", "", "schedule", "end of range (61) above maximum (59): 61"),
        ("* * * *", "", "schedule", "expected 5 to 6 fields, found 4: [* * * *]"),
        ("@every 1m", "", "schedule", "unsupported descriptor @every"),
        ("@sometimes", "", "schedule", "unrecognized descriptor: @sometimes"),
        ("x * * * *", "", "schedule", "failed to parse int from x: invalid syntax"),
        ("5-1 * * * *", "", "schedule", "beginning of range (5) beyond end of range (1): 5-1"),
        ("*/0 * * * *", "", "schedule", "step of range should be a positive number: */0"),
        ("* * * * *", "Mars/Olympus", "timezone",
         "provided bad location Mars/Olympus: unknown time zone Mars/Olympus"),
    ],
)
def test_bad_schedules_name_the_field(schedule: str, timezone: str, field: str,
                                      message: str) -> None:
    with pytest.raises(CronError) as info:
        parse_schedule(schedule, timezone)
    assert (info.value.field, str(info.value)) == (field, message)
