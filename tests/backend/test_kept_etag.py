"""A kept answer's ETag (``backend.kept.etag``) depends on the state's values, not on how a
driver spelled them: the event-loop lane (psycopg) and the ORM session may hand out the same
instant with different zone objects, and a client holding one process's tag must get 304
from the other."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from backend.kept import etag

instants = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                        timezones=st.just(UTC))
zones = st.sampled_from([UTC, ZoneInfo("Etc/UTC"), ZoneInfo("UTC"),
                         ZoneInfo("Europe/Amsterdam"), timezone(timedelta(hours=-7))])


@given(instants, zones, st.integers(), st.text(max_size=8))
def test_an_instant_gives_one_tag_whatever_its_zone(t: datetime, zone: tzinfo, n: int,
                                                   salt: str) -> None:
    assert etag((t, n, None), salt) == etag((t.astimezone(zone), n, None), salt)
    # SQLite keeps times without a zone, in UTC
    assert etag((t.replace(tzinfo=None), n), salt) == etag((t, n), salt)


@given(instants, st.integers(min_value=1, max_value=10**9), st.integers())
def test_another_instant_or_value_gives_another_tag(t: datetime, us: int, n: int) -> None:
    assert etag((t, n)) != etag((t + timedelta(microseconds=us), n))
    assert etag((t, n)) != etag((t, n + 1))
    assert etag((t, n)) != etag((t, n), "other session")
