"""replication.core anti-entropy helpers, without a broker: who answers whom, and when tombstones
can expire (the resync tick skips the scan before then)."""

from __future__ import annotations

from replication import core
from replication.core import Slot
from replication.hlc import Version


def test_partner_is_the_first_online_node_other_than_itself() -> None:
    """R-REPL-6 (issue 10): one peer answers a digest; a lone node has no partner."""
    assert core.partner("n3", {"n2", "n3", "n1"}) == "n1"
    assert core.partner("n1", {"n2", "n3", "n1"}) == "n2"
    assert core.partner("n1", {"n1"}) is None
    assert core.partners("n1", "n3", {"n1", "n2", "n3"})
    assert not core.partners("n2", "n3", {"n1", "n2", "n3"})


def test_nothing_expires_before_the_earliest_tombstone() -> None:
    """R-REPL-9 retention: the earliest tombstone bounds what a purge can find."""
    index = {
        ("tomcat-trust", "a"): Slot(Version(5, 0, "x"), "s", None, None),
        ("tomcat-trust", "b"): Slot(None, None, Version(300, 0, "x"), None),
        ("tomcat-trust", "c"): Slot(None, None, Version(200, 0, "y"), None),
    }
    assert core.earliest_tombstone_ms(index) == 200
    assert core.expired_tombstones(index, 200) == []
    assert core.expired_tombstones(index, 201) == [("tomcat-trust", "c")]
    assert core.earliest_tombstone_ms({}) == float("inf")
