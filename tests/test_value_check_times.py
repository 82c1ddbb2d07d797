"""The value check of verification (value_stats.py) compares timestamps and dates as the same instant however a
store hands them back: naive (read as UTC) or with an offset, Python datetimes or the Neo4j driver's types with
their nanoseconds. A timestamp stored one hour or one nanosecond off is a different value."""

import datetime as dt

import neo4j.time as nt
import pytest

from bluegreen_dagster.value_stats import comparable

UTC = dt.UTC
PLUS_ONE = dt.timezone(dt.timedelta(hours=1))


@pytest.mark.parametrize(("value", "nanos"), [
    (dt.datetime(1970, 1, 1, 0, 0, 1), 10**9),  # naive: read as UTC
    (dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), 10**9),
    (dt.datetime(1970, 1, 1, 1, 0, 1, tzinfo=PLUS_ONE), 10**9),  # the same instant, written with an offset
    (dt.datetime(1970, 1, 1, 1, 0, 1), 3601 * 10**9),  # naive 01:00:01 is not 00:00:01
    (dt.datetime(1970, 1, 1, 0, 0, 0, 5, tzinfo=UTC), 5000),  # microseconds
    (dt.datetime(1970, 1, 2, tzinfo=UTC), 86_400 * 10**9),
    (dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), -(10**9)),
    (nt.DateTime(1970, 1, 1, 0, 0, 1, 123456789, tzinfo=UTC), 1_123_456_789),  # Neo4j keeps nanoseconds
    (nt.DateTime(1970, 1, 1, 1, 0, 1, 7, tzinfo=PLUS_ONE), 10**9 + 7),
])
def test_a_timestamp_is_its_instant_in_nanoseconds(value, nanos: int) -> None:
    assert comparable(value) == nanos


@pytest.mark.parametrize(("value", "expected"), [
    (dt.date(1970, 1, 11), 10), (dt.date(1969, 12, 31), -1), (nt.Date(1970, 1, 11), 10),
    (3, 3), (2.5, 2.5), (0, 0),
    (True, None), (None, None), ("2026-01-01", None),  # not ranged: counted, not compared
])
def test_dates_count_days_and_other_values_are_compared_only_when_numbers(value, expected) -> None:
    assert comparable(value) == expected
