"""A host's view of its cluster, kept from the store: who is up, who should hold what, who does.

No host leads. The store every host already shares (PostgreSQL) is the one source of
cluster truth: each host writes its row of the member table every
``heartbeat_every_s`` (its shards' data-plane addresses, whether it is leaving, and
which other hosts it cannot reach), stamped with the database's clock, and reads
every row back in the same round trip. From the same rows every host computes the
same things by itself:

- **who is up**: a row whose heartbeat is younger than ``lost_after_s`` (the
  database's clock, so no two hosts' clocks are compared);
- **who is cut off from the others**: a host that most of the other live hosts
  cannot reach on the data plane (:func:`excluded_hosts`; youngest first, so of two
  hosts that cannot reach each other, the older stays). Such a host still reaches the
  store, so its heartbeat alone would keep it in; it reads its own exclusion, gives
  its virtual shards up at once and claims nothing until it is reachable again;
- **the placement**: ``actors.placement.place`` over the shards of the hosts that
  are up, not leaving and not excluded: a pure function, so every host agrees
  without asking anyone, and a restarted host gets its fair share back, never all.

Which shard *does* hold a virtual shard is the lease table (read every ``TICK_S``)
patched with this host's own shards' holdings, which are fresher. The leases and
their epochs stay the safety mechanism: the placement only says what each shard
should try to claim, so hosts that briefly disagree (one has read a row the other
has not yet) cost a retry, never a second writer.

A host alone (an SQLite store) runs the same code over a member table of one
(:class:`SoloTable`). Nothing here touches Thespian: this runs on a thread of the
host's edge process, and hands the supervisor its shards' assignments through the
host (``actors.system.host``).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

from confab.actors.placement import place
from confab.actors.settings import HostIdentity
from confab.runtime.inspection import HostView
from confab.runtime.protocol.directory import NOBODY, Owner, ShardDirectory, ShardEndpoint, shard_id
from confab.runtime.store import Lease, Member, MemberBeat, MemberConflict

log = logging.getLogger(__name__)

TICK_S = 0.25  # how often the lease table is read and the placement looked at
PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """What every host of a cluster must agree on, and how hosts are judged."""

    name: str = "confab"
    vshards: int = 256
    heartbeat_every_s: float = 1.0
    lost_after_s: float = 3.0  # a host silent (or unreachable by most) this long is out
    forget_after_s: float = 600.0  # a lost host stays in the operators' view this long


class MemberTable(Protocol):
    """The store's side (``runtime.store.postgres.PostgresStore`` has it)."""

    def beat(self, beat: MemberBeat, stale_after_s: float, forget_after_s: float) -> list[Member]: ...

    def remove_member(self, host: str, incarnation: int) -> None: ...

    def leases(self) -> list[Lease]: ...

    def close(self) -> None: ...


class SoloTable:
    """A host alone: it is the whole member table, and its own shards' holdings are every lease."""

    def __init__(self) -> None:
        self.started_at = time.time()

    def beat(self, beat: MemberBeat, stale_after_s: float, forget_after_s: float) -> list[Member]:
        return [
            Member(beat.host, beat.cluster, beat.incarnation, beat.state, beat.edge, beat.detail, 0.0, 0.0)
        ]

    def remove_member(self, host: str, incarnation: int) -> None:
        pass

    def leases(self) -> list[Lease]:
        return []

    def close(self) -> None:
        pass


# What a host writes of itself -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    """A member's row with its detail read: its shards, and the hosts it cannot reach."""

    member: Member
    shards: tuple[ShardEndpoint, ...] = ()
    unreachable: frozenset[str] = frozenset()
    pid: int = 0
    vshards: int = 0  # its cluster.vshards (0: a row that does not say)

    @property
    def host(self) -> str:
        return self.member.host

    @staticmethod
    def read(member: Member) -> Peer:
        try:
            detail = json.loads(member.detail or "{}")
            shards = tuple(
                ShardEndpoint(int(i), int(g), str(a), int(p), str(e), host=member.host)
                for i, g, a, p, e in detail.get("shards", ())
            )
            return Peer(
                member,
                shards,
                frozenset(map(str, detail.get("unreachable", ()))),
                int(detail.get("pid", 0)),
                int(detail.get("vshards", 0)),
            )
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # another version's row, or damaged
            log.warning("member %s: unreadable detail (%s)", member.host, exc)
            return Peer(member)


def detail_of(shards: Iterable[ShardEndpoint], unreachable: Iterable[str], pid: int, vshards: int = 0) -> str:
    return json.dumps(
        {
            "shards": [[s.index, s.generation, s.address, s.pid, s.error] for s in shards],
            "unreachable": sorted(unreachable),
            "pid": pid,
            "vshards": vshards,
        },
        separators=(",", ":"),
    )


def excluded_hosts(peers: Sequence[Peer]) -> set[str]:
    """The live hosts most of the other live hosts cannot reach.

    Youngest first: a host is out when more than half of the others still in cannot
    reach it; what an excluded host cannot reach no longer counts. Of two hosts that
    cannot reach each other the younger goes, so one side always stays; a host cut off
    from two others goes whichever its age."""
    ordered = sorted(peers, key=lambda p: (p.member.started_at, p.host))
    out: set[str] = set()
    for peer in reversed(ordered):
        voters = [p for p in ordered if p.host != peer.host and p.host not in out]
        votes = sum(peer.host in p.unreachable for p in voters)
        if voters and votes * 2 > len(voters):
            out.add(peer.host)
    return out


# The host's view --------------------------------------------------------------------------


class _Reachability:
    """Which other hosts this one could not reach on the data plane, and since when.

    Probes answer on the probe pool's threads while the membership's thread reads: every
    access holds the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}  # host -> when it first failed to answer
        self._probing: dict[str, float] = {}  # host -> when its probe was sent

    def suspects(self, now: float, after_s: float) -> set[str]:
        with self._lock:
            return {host for host, since in self._since.items() if now - since >= after_s}

    def keep_only(self, live: set[str]) -> None:
        with self._lock:
            for host in [h for h in self._since if h not in live]:
                del self._since[host]

    def start(self, host: str, now: float, hung_after_s: float) -> bool:
        """Whether to send ``host`` a probe now (not while one is out; one out too long counts as
        no answer)."""
        with self._lock:
            sent = self._probing.get(host)
            if sent is None:
                self._probing[host] = now
                return True
            if now - sent > hung_after_s:
                self._since.setdefault(host, sent)
            return False

    def answered(self, host: str, problem: str, now: float) -> str:
        """Record a probe's answer; what changed, for the log ("lost", "back" or "")."""
        with self._lock:
            self._probing.pop(host, None)
            if problem:
                return "lost" if self._since.setdefault(host, now) == now else ""
            return "back" if self._since.pop(host, None) is not None else ""


@dataclass(frozen=True, slots=True)
class Assignment:
    """What this host's shards should hold now; the host hands it to the supervisor (``AssignShards``)."""

    wanted: tuple[frozenset[int], ...]  # per shard index
    # False while the host is out of touch with the store's member table, excluded by the
    # other hosts, or leaving: keep what is held, claim nothing.
    claim: bool = True


class ClusterMembership:
    """Keeps this host's row, reads everyone's, and tells the host what its shards should hold.

    ``publish`` hears every directory (from the membership's thread or the host's),
    ``assign`` every change of what this host's shards should hold; ``reach`` probes a
    data-plane address ("" when the peer answered, else why not)."""

    def __init__(
        self,
        identity: HostIdentity,
        settings: ClusterSettings,
        shard_count: int,
        table: MemberTable,
        *,
        publish: Callable[[ShardDirectory], None],
        assign: Callable[[Assignment], None],
        reach: Callable[[str], str] | None = None,
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.shard_count = shard_count
        self.table = table
        self._publish = publish
        self._assign = assign
        self._reach = reach
        self.leaving = False
        self.fatal = ""  # why this host cannot be a member at all (its id is taken)
        self._lock = threading.Lock()
        self._local: ShardDirectory | None = None
        self._peers: tuple[Peer, ...] = ()
        self._leases: dict[int, Owner] = {}
        # Never, yet: until its first heartbeat is written a host claims nothing (a restart that
        # finds its old row still young must not place every virtual shard on itself meanwhile).
        self._last_beat_ok = -math.inf
        # Since when the beats succeed again after failing, and who was live before they failed:
        # the other hosts could not beat while this one could not (the store was away), so their
        # ages say nothing until they have had lost_after_s to beat again.
        self._beating_since = 0.0
        self._failing = False
        self._last_live: set[str] = set()
        self._conflict_since: float | None = None
        self._reachability = _Reachability()
        # One worker per peer, up to 16: an unreachable peer holds its worker for the whole timeout.
        self._probes = (
            ThreadPoolExecutor(max_workers=16, thread_name_prefix="confab-probe") if reach else None
        )
        self._outage_s = 0.0  # how long the last stretch of failed heartbeats lasted
        self._wake = threading.Event()
        self._assigned: Assignment | None = None
        self._excluded = False
        self._version = time.time_ns() // 1000  # grows across restarts of this host too
        self._published: tuple[Any, ...] | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="confab-membership", daemon=True)
        self._problem_logged = ""

    # Called by the host -------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def local(self, directory: ShardDirectory) -> ShardDirectory:
        """This host's shards changed (the supervisor's directory): the merged directory."""
        with self._lock:
            self._local = directory
            return self._directory()

    def leave(self) -> None:
        """Hand this host's share off: the others stop placing virtual shards here. (The
        membership's thread makes the new assignment, at once: it alone assigns.)"""
        self.leaving = True
        self._wake.set()

    def edge_serving(self, address: str) -> None:
        self.identity = replace(self.identity, edge=address)

    @property
    def in_touch(self) -> bool:
        """This host's heartbeat was written recently: the others count it up, and it reads them."""
        return not self.fatal and time.monotonic() - self._last_beat_ok < self.settings.lost_after_s

    def close(self) -> None:
        """Stop beating and leave the member table (the others place without this host at once)."""
        self._closing.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        if self._probes is not None:
            self._probes.shutdown(wait=False, cancel_futures=True)
        if self._thread.is_alive():  # a heartbeat still in flight would write the row back: let it age out
            log.warning("the membership thread did not stop in time; this host's row ages out by itself")
            return
        try:
            self.table.remove_member(self.identity.host, self.identity.incarnation)
        except Exception as exc:  # its row ages out by itself
            log.warning("could not remove this host from the member table: %s", exc)
        self.table.close()

    # The membership's thread --------------------------------------------------------------

    def _run(self) -> None:
        next_beat = 0.0
        while not self._closing.is_set():
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + self.settings.heartbeat_every_s
                    self._beat(now)
                self._read_leases()
                self._reassign()
                with self._lock:
                    directory = self._directory()
                self._maybe_publish(directory, force=now + TICK_S >= next_beat)
            except Exception:  # a bug: keep the host's view going rather than freeze it as it was
                log.exception("the cluster membership failed a round; trying again")
            self._wake.wait(TICK_S)
            self._wake.clear()

    def _beat(self, now: float) -> None:
        local = self._local
        beat = MemberBeat(
            host=self.identity.host,
            cluster=self.settings.name,
            incarnation=self.identity.incarnation,
            state="leaving" if self.leaving else "up",
            edge=self.identity.edge,
            detail=detail_of(
                local.shards if local else (),
                self._reachability.suspects(now, self.settings.lost_after_s),
                self.identity.pid,
                self.settings.vshards,
            ),
        )
        try:
            members = self.table.beat(beat, self.settings.lost_after_s, self.settings.forget_after_s)
        except MemberConflict as exc:
            # A restart within lost_after_s of a kill finds its old row still young: wait it out.
            if self._conflict_since is None:
                self._conflict_since = now
            elif (
                now - self._conflict_since > self.settings.lost_after_s + 2 * self.settings.heartbeat_every_s
            ):
                self.fatal = str(exc)
                log.error("%s", exc)
            return
        except Exception as exc:
            self._failing = True
            self._failed(f"the member table cannot be written: {type(exc).__name__}: {exc}")
            return
        self._conflict_since = None
        previous, self._last_beat_ok = self._last_beat_ok, time.monotonic()
        if self._failing:
            self._failing = False
            outage = self._last_beat_ok - previous
            if outage >= self.settings.lost_after_s:  # out of touch: the others could not beat either
                self._beating_since, self._outage_s = self._last_beat_ok, outage
        self._ok()
        lost_after = self.settings.lost_after_s
        live = [m for m in members if m.heartbeat_age_s < lost_after and m.host != self.identity.host]
        foreign = sorted({m.cluster for m in live if m.cluster != self.settings.name})
        peers = tuple(Peer.read(m) for m in members if m.cluster == self.settings.name)
        other_vshards = sorted(
            {
                p.vshards
                for p in peers
                if p.vshards and p.vshards != self.settings.vshards and p.host in {m.host for m in live}
            }
        )
        if foreign or other_vshards:
            # The store's lease table is one per database: a second cluster, or hosts that hash
            # conversations onto another number of virtual shards, would take the same rows.
            self.fatal = (
                f"the store is used by a live host of another cluster ({', '.join(foreign)}):"
                " one store, one cluster"
                if foreign
                else f"live hosts of this cluster have cluster.vshards {other_vshards}, this one"
                f" {self.settings.vshards}: every host must have the same"
            )
            log.error("%s; this host claims nothing", self.fatal)
            return
        with self._lock:
            self._peers = peers
        self._probe(peers, now)

    def _read_leases(self) -> None:
        try:
            leases = self.table.leases()
        except Exception as exc:  # the last ones stand until this host is out of touch
            self._failed(f"the lease table cannot be read: {type(exc).__name__}: {exc}")
            return
        owners = {
            lease.vshard: Owner(lease.owner, lease.epoch)
            for lease in leases
            if lease.owner and lease.remaining_s > 0
        }
        with self._lock:
            self._leases = owners

    def _probe(self, peers: Sequence[Peer], now: float) -> None:
        """Ask each other live host's data plane whether it answers (in the background)."""
        if self._probes is None or self._reach is None:
            return
        live = {p.host for p in peers if p.member.heartbeat_age_s < self.settings.lost_after_s}
        self._reachability.keep_only(live)
        for peer in peers:
            address = next((s.address for s in peer.shards if s.address and not s.error), "")
            if peer.host == self.identity.host or peer.host not in live or not address:
                continue
            if self._reachability.start(peer.host, now, 2 * PROBE_TIMEOUT_S):
                future = self._probes.submit(self._reach, address)
                future.add_done_callback(lambda done, host=peer.host: self._probed(host, done))  # type: ignore[misc]

    def _probed(self, host: str, done: Future[str]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        problem = f"{type(error).__name__}: {error}" if error is not None else done.result()
        change = self._reachability.answered(host, problem, time.monotonic())
        if change == "lost":
            log.warning("host %s does not answer on the data plane: %s", host, problem)
        elif change == "back":
            log.info("host %s answers on the data plane again", host)

    # Placement and the directory ----------------------------------------------------------

    def _live(self) -> list[Peer]:
        """The members that count as up (call with the lock held)."""
        lost_after = self.settings.lost_after_s
        back = time.monotonic() - self._beating_since < lost_after
        live = [
            p
            for p in self._peers
            if p.member.heartbeat_age_s < lost_after
            or (back and p.host in self._last_live and p.member.heartbeat_age_s < lost_after + self._outage_s)
        ]
        if not back and self.in_touch:
            self._last_live = {p.host for p in live}
        if self.in_touch and not any(p.host == self.identity.host for p in live):
            me = Member(
                self.identity.host, self.settings.name, self.identity.incarnation, "up", "", "", 0.0, 0.0
            )
            live.append(Peer(me))
        return live

    def _reassign(self) -> None:
        with self._lock:
            live = self._live()
            excluded = excluded_hosts(live)
        me = self.identity.host
        if (me in excluded) != self._excluded:
            self._excluded = me in excluded
            if self._excluded:
                log.error("most other hosts cannot reach this one: it gives its virtual shards up")
            else:
                log.info("the other hosts reach this one again")
        claim = self.in_touch and not self._excluded and not self.leaving
        if self.leaving or not self.in_touch:
            # Keep what is held: a leaving host's share goes as the others claim it; one out of
            # touch keeps serving until its leases say otherwise, and claims nothing.
            wanted = (
                self._assigned.wanted
                if self._assigned
                else tuple(frozenset() for _ in range(self.shard_count))
            )
        else:
            eligible = [
                shard_id(p.host, i)
                for p in live
                if p.member.state == "up" and p.host not in excluded
                for i in _shard_indexes(p, self.shard_count if p.host == me else 0, self._local)
            ]
            placement = place(eligible, self.settings.vshards)
            wanted = tuple(
                frozenset(v for v, shard in enumerate(placement) if shard == shard_id(me, i))
                for i in range(self.shard_count)
            )
        assignment = Assignment(wanted, claim)
        if assignment != self._assigned:
            self._assigned = assignment
            self._assign(assignment)

    def _directory(self) -> ShardDirectory:
        """The cluster as this host sees it now (call with the lock held)."""
        me = self.identity.host
        local = self._local or ShardDirectory(0, ())
        live = self._live()
        excluded = excluded_hosts(live)
        others = [p for p in live if p.host != me]
        shards = tuple(local.shards) + tuple(s for p in others for s in p.shards)
        present = {s.shard_id for s in shards}
        owners = [NOBODY] * self.settings.vshards
        for v, owner in self._leases.items():
            if 0 <= v < len(owners) and owner.shard in present:
                owners[v] = owner
        for v, owner in enumerate(local.owners[: len(owners)]):
            if owner.shard and owner.epoch >= owners[v].epoch:
                owners[v] = owner
        held: dict[str, int] = {}
        for owner in owners:
            if owner.shard:
                host = owner.shard.rpartition("/")[0]
                held[host] = held.get(host, 0) + 1
        hosts = []
        up = {p.host for p in live}
        for peer in sorted(self._peers, key=lambda p: p.host):
            m = peer.member
            mine = m.host == me
            state = (
                "lost"
                if m.host not in up
                else "leaving"
                if m.state == "leaving"
                else "unreachable"
                if m.host in excluded
                else "up"
            )
            hosts.append(
                HostView(
                    host=m.host,
                    state=state,
                    heartbeat_age_s=m.heartbeat_age_s,
                    edge=m.edge,
                    pid=peer.pid,
                    shards=len(peer.shards) if not mine else len(local.shards),
                    incarnation=m.incarnation,
                    vshards=held.get(m.host, 0),
                )
            )
        self._version += 1
        return replace(
            local,
            version=self._version,
            shards=shards,
            owners=tuple(owners),
            placement=(),
            hosts=tuple(hosts),
            in_touch=self.in_touch,
        )

    def _maybe_publish(self, directory: ShardDirectory, *, force: bool) -> None:
        key = (
            directory.shards,
            directory.owners,
            directory.in_touch,
            tuple((h.host, h.state, h.edge, h.incarnation) for h in directory.hosts),
        )
        if force or key != self._published:
            self._published = key
            self._publish(directory)

    # Problems -------------------------------------------------------------------------------

    def _failed(self, problem: str) -> None:
        if problem != self._problem_logged:
            log.warning("%s", problem)
            self._problem_logged = problem

    def _ok(self) -> None:
        if self._problem_logged:
            log.info("the member table answers again")
            self._problem_logged = ""


def _shard_indexes(peer: Peer, count: int, local: ShardDirectory | None) -> list[int]:
    """The shards of ``peer`` that may hold virtual shards: all but those that could not start.

    This host's own shards count from the start (``count``), before they first report."""
    if count:
        failed = {s.index for s in local.shards if s.error} if local else set()
        return [i for i in range(count) if i not in failed]
    return [s.index for s in peer.shards if not s.error]
