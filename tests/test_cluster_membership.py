"""A host's membership against a member table it does not own: who counts as up, what it claims.

The table here is a stand-in for PostgreSQL's (``runtime.store.postgres``, tested with a
real server in tests/test_store_postgres.py and tests/test_cluster.py): two other hosts
beat while the table is up; the table can be made to fail, as a store that restarts does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from confab.actors.cluster import Assignment, ClusterMembership, ClusterSettings, Peer, detail_of
from confab.actors.settings import HostIdentity
from confab.runtime.protocol.directory import ShardDirectory, ShardEndpoint
from confab.runtime.store import Lease, Member, MemberBeat, MemberConflict

SETTINGS = ClusterSettings(name="c", vshards=64, heartbeat_every_s=0.05, lost_after_s=0.4)


class Table:
    """Hosts b and c beat whenever the table is up, and a moment after it comes back;
    ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.down = False
        self.back_at = 0.0
        self.rows: dict[str, tuple[Member, float]] = {}
        self.lock = threading.Lock()
        for host in ("b", "c"):
            self._write(host, 2.0)

    def _write(self, host: str, started: float) -> None:
        detail = detail_of([ShardEndpoint(0, 0, f"tcp:{host}:1", host=host)], (), 0)
        self.rows[host] = (Member(host, "c", 1, "up", "", detail, 0.0, started), time.monotonic())

    def beat(self, beat: MemberBeat, stale_after_s: float, forget_after_s: float) -> list[Member]:
        if self.down:
            raise ConnectionError("the store is away")
        with self.lock:
            if time.monotonic() - self.back_at > 0.2:  # the others beat on their own schedule
                for host in ("b", "c"):
                    self._write(host, 2.0)
            self.rows[beat.host] = (
                Member(
                    beat.host, beat.cluster, beat.incarnation, beat.state, beat.edge, beat.detail, 0.0, 1.0
                ),
                time.monotonic(),
            )
            now = time.monotonic()
            return [
                Member(m.host, m.cluster, m.incarnation, m.state, m.edge, m.detail, now - at, m.started_at)
                for m, at in self.rows.values()
            ]

    def remove_member(self, host: str, incarnation: int) -> None:
        self.rows.pop(host, None)

    def leases(self) -> list[Lease]:
        if self.down:
            raise ConnectionError("the store is away")
        return []

    def close(self) -> None:
        pass


def membership(table: Table, assignments: list[Assignment]) -> ClusterMembership:
    member = ClusterMembership(
        HostIdentity("a", incarnation=1),
        SETTINGS,
        1,
        table,
        publish=lambda directory: None,
        assign=assignments.append,
        reach=lambda address: "",
    )
    member.local(ShardDirectory(1, (ShardEndpoint(0, 0, "tcp:a:1", host="a"),)))
    return member


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def share(assignment: Assignment) -> int:
    return len(assignment.wanted[0])


def test_a_host_claims_a_third_beside_two_live_hosts() -> None:
    assignments: list[Assignment] = []
    member = membership(Table(), assignments)
    member.start()
    try:
        wait_for(lambda: bool(assignments) and assignments[-1].claim and 20 <= share(assignments[-1]) <= 22)
    finally:
        member.close()


def test_after_the_store_was_away_a_host_does_not_take_the_others_for_lost() -> None:
    """Nobody could beat while the store was away: the others' old heartbeats say nothing."""
    table = Table()
    assignments: list[Assignment] = []
    member = membership(table, assignments)
    member.start()
    try:
        wait_for(lambda: bool(assignments) and assignments[-1].claim)
        table.down = True
        wait_for(lambda: not member.in_touch and not assignments[-1].claim)  # out of touch: no claims
        time.sleep(SETTINGS.lost_after_s)  # every heartbeat in the table is old now
        seen = len(assignments)
        table.back_at, table.down = time.monotonic(), False
        wait_for(lambda: member.in_touch and assignments[-1].claim)
        time.sleep(2 * SETTINGS.lost_after_s)
        assert max(share(a) for a in assignments[seen:]) <= 22, [share(a) for a in assignments[seen:]]
    finally:
        member.close()


def test_a_peer_silent_for_lost_after_s_is_lost_and_its_share_comes_here() -> None:
    table = Table()
    assignments: list[Assignment] = []
    member = membership(table, assignments)
    member.start()
    try:
        wait_for(lambda: bool(assignments) and 20 <= share(assignments[-1]) <= 22)
        with table.lock:
            table._write = lambda host, started: None  # type: ignore[method-assign]
        wait_for(lambda: share(assignments[-1]) == 64)
        hosts = {h.host: h.state for h in member.local(ShardDirectory(2, ())).hosts}
        assert hosts == {"a": "up", "b": "lost", "c": "lost"}
    finally:
        member.close()


def test_a_members_detail_round_trips() -> None:
    endpoint = ShardEndpoint(3, 7, "tcp:10.0.0.1:5000", pid=42, host="h")
    member = Member("h", "c", 9, "up", "", detail_of([endpoint], {"x"}, 11), 0.0, 0.0)
    peer = Peer.read(member)
    assert peer.shards == (endpoint,) and peer.unreachable == {"x"} and peer.pid == 11
    assert Peer.read(Member("h", "c", 9, "up", "", "not json", 0.0, 0.0)).shards == ()


def test_a_host_whose_id_is_still_taken_claims_nothing_until_its_first_heartbeat() -> None:
    """A restart within lost_after_s of a kill finds its old row young: it waits, claiming nothing."""
    table = Table()
    taken = threading.Event()
    taken.set()
    real_beat = table.beat

    def beat(beat: MemberBeat, stale_after_s: float, forget_after_s: float) -> list[Member]:
        if taken.is_set():
            raise MemberConflict("another host of the cluster already calls itself 'a' and is alive")
        return real_beat(beat, stale_after_s, forget_after_s)

    table.beat = beat  # type: ignore[method-assign]
    assignments: list[Assignment] = []
    member = membership(table, assignments)
    member.start()
    try:
        time.sleep(3 * SETTINGS.heartbeat_every_s)
        assert not any(a.claim for a in assignments), assignments
        taken.clear()
        wait_for(lambda: bool(assignments) and assignments[-1].claim)
        assert max(share(a) for a in assignments) <= 22
    finally:
        member.close()


def test_a_live_host_of_another_cluster_in_the_store_makes_this_one_claim_nothing() -> None:
    """One store, one cluster: the lease table is the database's, whatever the cluster's name."""
    table = Table()
    with table.lock:
        member, at = table.rows["b"]
        table.rows["b"] = (replace(member, cluster="other"), at)
        table._write = lambda host, started: None  # type: ignore[method-assign]
    assignments: list[Assignment] = []
    member_ = membership(table, assignments)
    member_.start()
    try:
        wait_for(lambda: bool(member_.fatal))
        assert "another cluster" in member_.fatal and not member_.in_touch
        time.sleep(3 * SETTINGS.heartbeat_every_s)
        assert not any(a.claim for a in assignments)
    finally:
        member_.close()


def test_a_host_with_another_number_of_virtual_shards_claims_nothing() -> None:
    table = Table()
    with table.lock:
        member, at = table.rows["b"]
        table.rows["b"] = (replace(member, detail=detail_of([], (), 0, 128)), at)
        table._write = lambda host, started: None  # type: ignore[method-assign]
    assignments: list[Assignment] = []
    member_ = membership(table, assignments)
    member_.start()
    try:
        wait_for(lambda: bool(member_.fatal))
        assert "cluster.vshards" in member_.fatal
        assert not any(a.claim for a in assignments)
    finally:
        member_.close()


def test_a_damaged_row_or_a_failing_probe_does_not_stop_the_membership() -> None:
    table = Table()
    with table.lock:
        member, at = table.rows["c"]
        table.rows["c"] = (replace(member, detail="null"), at)  # JSON, but not an object
        table._write = lambda host, started: None  # type: ignore[method-assign]

    def probe(address: str) -> str:
        raise RuntimeError("a probe that fails in a way nobody planned for")

    assignments: list[Assignment] = []
    member_ = ClusterMembership(
        HostIdentity("a", incarnation=1),
        SETTINGS,
        1,
        table,
        publish=lambda directory: None,
        assign=assignments.append,
        reach=probe,
    )
    member_.local(ShardDirectory(1, (ShardEndpoint(0, 0, "tcp:a:1", host="a"),)))
    member_.start()
    try:
        wait_for(lambda: bool(assignments) and assignments[-1].claim)
        seen = len(assignments)
        time.sleep(4 * SETTINGS.heartbeat_every_s)
        assert member_.in_touch and len(assignments) >= seen  # still beating
    finally:
        member_.close()
