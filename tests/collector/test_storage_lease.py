"""The scoring lease: one holder at a time, renewable by its holder, taken over once it lapses."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from farmwatch.collector.storage import Storage

T0 = datetime(2026, 11, 28, 5, 0, tzinfo=timezone.utc)


def test_lease_holder_renewal_lapse_and_release(tmp_path: Path) -> None:
    storage = Storage.open(f"sqlite:///{tmp_path / 'lease.db'}")
    try:
        assert storage.take_lease("scoring", "a", T0, 30)
        assert not storage.take_lease("scoring", "b", T0 + timedelta(seconds=10), 30)
        assert storage.take_lease("scoring", "a", T0 + timedelta(seconds=20), 30)  # renewed until T0+50
        assert not storage.take_lease("scoring", "b", T0 + timedelta(seconds=40), 30)
        assert storage.take_lease("scoring", "b", T0 + timedelta(seconds=51), 30)  # lapsed: b takes over
        assert not storage.take_lease("scoring", "a", T0 + timedelta(seconds=52), 30)
        storage.release_lease("scoring", "a")  # not a's to release: nothing changes
        assert not storage.take_lease("scoring", "a", T0 + timedelta(seconds=53), 30)
        storage.release_lease("scoring", "b")
        assert storage.take_lease("scoring", "a", T0 + timedelta(seconds=54), 30)
    finally:
        storage.close()
