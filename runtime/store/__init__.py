"""Durable conversation state: the interface every store offers, and how to open one.

A shard writes a whole round of turns in one transaction and answers only after
the commit, so an acknowledged message survives ``kill -9`` of every process, and
one commit is shared by every message of the round (group commit).

What a store keeps of each conversation:

- its latest state (packed, see ``runtime.protocol.codec``) and its turn sequence;
- its turns (message id, the reply that was sent, what the user said) while they
  are among the last ``turns_kept`` or younger than ``idempotency_window_s``
  (:class:`Retention`): every message id the edge may re-send and every request id
  a client may repeat within the window is still known, with its reply;
- and, for ``history_s``, the message each turn answered (masked as its flow says),
  its time and its webhook answers: what a flow author replays against a new version
  of a flow (``confab flows replay``).

Besides conversations, it counts the tokens each tenant's model calls spent per UTC day
(``runtime.models``): every shard of every host reads and adds to the same counts, so a
tenant's budget holds across all of them.

Single activation. Conversations are grouped into a fixed number of *virtual shards*
(``runtime.protocol.directory.vshard_of``); the store keeps, for each, its owner (a
shard process's id), an *epoch* bumped on every change of hands, and a lease that
ends at a time on the store's own clock. A shard claims virtual shards, renews them
well within the lease and releases them on a hand-off; every :meth:`~Store.write`
names the epochs it writes under (a :class:`Fence`) and is refused whole
(:class:`FencedOut`) unless the writer still holds each of them with a lease that
has not run out. A writer that was paused or cut
off while another took over can therefore never write again: never two writers of
one conversation.

Conditional writes. A shard's write of a conversation names the ``seq`` of the stored state
it was computed from (:attr:`ConversationWrite.base_seq`), and the whole write is refused
(:class:`StaleWrite`) unless the store still holds exactly that. A commit whose outcome the
writer cannot know (the connection dropped during COMMIT) may have been written or not: the
writer forgets those conversations and loads them again, and a write from a state the store
no longer holds can never overwrite what was committed meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from confab.runtime.analytics import (
    ABANDONED,
    MISSED_KEPT,
    AnalyticsQuery,
    AnalyticsRows,
    CountKey,
    SessionMark,
    TurnCounts,
    bucket_of,
    merge_counts,
)
from confab.runtime.config import is_database_url
from confab.runtime.model import ConversationKey


class StoreError(Exception):
    """The store cannot be used: it cannot be opened, or it failed its integrity check."""


class StaleWrite(Exception):
    """A write was refused whole: the store no longer holds the state some of its conversations
    were computed from (their ``base_seq``). Nothing of it was written."""

    def __init__(self, keys: frozenset[ConversationKey]) -> None:
        names = ", ".join(sorted(str(k) for k in keys))
        super().__init__(f"the store holds another version of conversation(s) {names}")
        self.keys = keys


class FencedOut(Exception):
    """A write was refused: its writer no longer holds these virtual shards (at its epoch)."""

    def __init__(self, lost: frozenset[int]) -> None:
        super().__init__(f"no longer the owner of virtual shard(s) {sorted(lost)}")
        self.lost = lost


@dataclass(frozen=True, slots=True)
class Fence:
    """Who writes, and the epoch it holds of each virtual shard its write touches."""

    owner: str
    epochs: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class Lease:
    """A virtual shard's row in the store, as read."""

    vshard: int
    owner: str  # "" while nobody holds it
    epoch: int  # bumped on every claim
    remaining_s: float  # until the lease runs out, by the store's clock; <= 0: it has run out
    wanted_by: str = ""  # a shard that tried to claim it while it was held ("" for none)


class MemberConflict(StoreError):
    """Another live host of the cluster already goes by this host's id."""


@dataclass(frozen=True, slots=True)
class MemberBeat:
    """What a host writes of itself in the member table every heartbeat."""

    host: str
    cluster: str
    incarnation: int  # this run of the host; a restart has a new one
    state: str  # "up" | "leaving"
    edge: str  # its gRPC address
    detail: str  # JSON the host writes and every host reads: its shards, whom it cannot reach


@dataclass(frozen=True, slots=True)
class Member:
    """A host's row in the member table, as read; ages by the store's clock."""

    host: str
    cluster: str
    incarnation: int
    state: str
    edge: str
    detail: str
    heartbeat_age_s: float  # since its last heartbeat
    started_at: float  # when this incarnation first beat (Unix seconds, the store's clock)


@dataclass(frozen=True, slots=True)
class Retention:
    turns_kept: int = 32
    idempotency_window_s: float = 3600.0
    history_s: float = 0.0  # how long a turn's message is kept for replays; 0: not recorded

    @property
    def kept_for_s(self) -> float:
        """How long a turn beyond the last ``turns_kept`` stays in the store."""
        return max(self.idempotency_window_s, self.history_s)


@dataclass(slots=True)
class TurnRecord:
    seq: int
    message_id: str
    kind: int
    reply: bytes
    input: str = ""  # what the user sent (or an operator's reason), for operators; maybe masked
    # For a client's own request id: a digest of what it sent, to tell a repeat from a reuse.
    fingerprint: bytes = b""
    # With history on: the message the turn answered, its time and its webhook answers (codec).
    recorded: bytes = b""


@dataclass(slots=True)
class ConversationWrite:
    """The new state of one conversation, the turns that produced it, and what may go."""

    key: ConversationKey
    state: bytes
    seq: int
    turns: list[TurnRecord] = field(default_factory=list)
    # Turns with seq <= prune_through written before prune_before may be deleted (0: look at none).
    prune_through: int = 0
    prune_before: float = 0.0
    # The seq of the stored state this one was computed from (0: a conversation not in the store
    # yet): written only if the store holds exactly that, else StaleWrite. None: written over
    # whatever the store holds (tools and tests that set a state outright).
    base_seq: int | None = None
    # What the turns of this write add to the analytics (runtime.analytics), in turn order:
    # written in the same transaction, so they count exactly when the turns do.
    analytics: list[TurnCounts] = field(default_factory=list)

    def let_old_turns_go(self, retention: Retention, now: float) -> None:
        """Let the store delete this conversation's turns beyond the last ``turns_kept`` that are
        older than it keeps any turn. Looked at once every ``turns_kept`` turns, not on every
        write: when this write (from ``base_seq``) crosses a multiple of ``turns_kept``."""
        kept, base = retention.turns_kept, self.base_seq or 0
        if self.seq // kept != base // kept and self.seq > kept:
            self.prune_through = self.seq - kept
            self.prune_before = now - retention.kept_for_s


@dataclass(frozen=True, slots=True)
class KeptTurn:
    seq: int
    message_id: str
    kind: int
    reply: bytes
    created_at: float
    input: str
    fingerprint: bytes = b""
    recorded: bytes = b""


@dataclass(slots=True)
class StoredConversation:
    state: bytes
    seq: int
    # (message id, when it was written) of every turn still kept, oldest first.
    message_ids: list[tuple[str, float]]


class Store(Protocol):
    retention: Retention

    def load(self, key: ConversationKey) -> StoredConversation | None: ...

    def load_turn(self, key: ConversationKey, message_id: str) -> KeptTurn | None: ...

    def write(self, writes: Sequence[ConversationWrite], fence: Fence | None = None) -> None:
        """Every write in one transaction: all or nothing. With a ``fence``, nothing is written
        (:class:`FencedOut`) unless ``fence.owner`` holds each of its virtual shards at its epoch
        with a lease still running; a change of hands waits for this write or refuses it.
        Nothing is written either (:class:`StaleWrite`, naming them) if a conversation's stored
        seq is not its write's ``base_seq``; a later write of the same conversation in one call
        must follow on from the one before it (its ``base_seq`` is that one's ``seq``)."""
        ...

    def claim(self, vshards: Sequence[int], owner: str, lease_s: float) -> dict[int, int]:
        """Take each of ``vshards`` that nobody holds, whose lease has run out, or that ``owner``
        holds already and nobody else wants (a shard process replacing its dead predecessor,
        which had the same id): its epoch goes up by one, its lease runs ``lease_s`` from now
        and nobody wants it.
        {vshard: new epoch} of those taken. Each of the rest is marked wanted by ``owner``:
        its holder's next renewal of it fails, so it lets go even if it has not yet heard of the
        placement that moved it."""
        ...

    def renew(self, owner: str, epochs: Mapping[int, int], lease_s: float) -> set[int]:
        """Extend to ``lease_s`` from now each lease ``owner`` still holds at the given epoch and
        nobody else wants; the virtual shards renewed (the holder stops serving the others)."""
        ...

    def release(self, owner: str, epochs: Mapping[int, int]) -> None:
        """Give up the virtual shards ``owner`` holds at these epochs (the next claim takes them at once)."""
        ...

    def leases(self) -> list[Lease]:
        """Every virtual shard ever claimed, in order."""
        ...

    def scan(
        self, after: ConversationKey | None, tenant_id: str, limit: int
    ) -> list[tuple[ConversationKey, bytes, float]]:
        """Up to ``limit`` conversations after ``after`` in key order: (key, state, updated_at)."""
        ...

    def recent_turns(self, key: ConversationKey, count: int) -> list[KeptTurn]:
        """The last ``count`` turns kept, oldest first."""
        ...

    def recorded_turns(self, key: ConversationKey) -> list[KeptTurn]:
        """Every kept turn of the conversation with its recorded message, oldest first."""
        ...

    def recorded_conversations(
        self, tenant_id: str, since: float, after: ConversationKey | None, limit: int
    ) -> list[ConversationKey]:
        """Up to ``limit`` conversations, in key order after ``after``, with a turn recorded since
        ``since`` (Unix seconds), of ``tenant_id`` ("" for every tenant)."""
        ...

    def count_conversations(self) -> int: ...

    def analytics(self, query: AnalyticsQuery, now: float) -> AnalyticsRows:
        """What the analytics tables hold for ``query`` (a tenant, a flow or every one, a range
        of whole minutes): its counters, the open sessions that expired in it before ``now``
        (abandoned, their users never came back), and the missed texts of its hours."""
        ...

    def model_tokens_used(self, tenant_id: str, day: str) -> int:
        """The tokens ``tenant_id``'s model calls spent on ``day`` (``runtime.models.utc_day``)."""
        ...

    def add_model_tokens(self, spent: Mapping[tuple[str, str], int]) -> None:
        """Add to the counts of model tokens spent: (tenant, day) -> tokens, in one transaction."""
        ...

    def ping(self) -> float:
        """A trivial read; its latency in seconds (raises if the store is unusable)."""
        ...

    def probe_write(self) -> float:
        """A tiny committed write; its latency in seconds (raises if writes fail)."""
        ...

    def close(self) -> None: ...


def conditions(writes: Sequence[ConversationWrite]) -> dict[ConversationKey, int | None]:
    """The stored seq each conversation of one write must be at: its first write's ``base_seq``.

    A store that writes each conversation once per call (the last write given wins) checks these;
    StaleWrite at once if a later write of a conversation does not follow on from the one before
    it, as a store writing them one after the other would find."""
    expected: dict[ConversationKey, int | None] = {}
    latest: dict[ConversationKey, int] = {}
    broken: set[ConversationKey] = set()
    for w in writes:
        if w.key not in expected:
            expected[w.key] = w.base_seq
        elif w.base_seq is not None and w.base_seq != latest[w.key]:
            broken.add(w.key)
        latest[w.key] = w.seq
    if broken:
        raise StaleWrite(frozenset(broken))
    return expected


@dataclass(slots=True)
class AnalyticsWrite:
    """The analytics of one store write, planned for the statements that write them.

    ``settles``: (tenant, conversation, time) of the stored open sessions to count abandoned if
    they expired before that time (a session this write already replaced is settled here, in
    ``counts``). ``sessions``: each changed conversation's open session after the write (None:
    its row goes). ``missed``: (tenant, flow, hour, text) -> how many times."""

    counts: dict[CountKey, list[float]]
    settles: list[tuple[str, str, float]]
    sessions: dict[ConversationKey, SessionMark | None]
    missed: dict[tuple[str, str, int, str], int]

    @property
    def missed_rows(self) -> list[tuple[str, str, int, str, int, int]]:
        """(tenant, flow, hour, text, count, kept) in key order: the order every writer locks them."""
        return [(*key, n, MISSED_KEPT) for key, n in sorted(self.missed.items())]


_STORED = object()  # a conversation's open session as the store holds it, not yet replaced


def plan_analytics(writes: Sequence[ConversationWrite]) -> AnalyticsWrite | None:
    """The analytics of ``writes`` as one store transaction writes them (None: there are none)."""
    if not any(w.analytics for w in writes):
        return None
    counts = merge_counts(part for w in writes for part in w.analytics)
    settles: list[tuple[str, str, float]] = []
    current: dict[ConversationKey, object] = {}
    missed: dict[tuple[str, str, int, str], int] = {}
    for w in writes:
        for part in w.analytics:
            for entry in part.missed:
                missed[entry] = missed.get(entry, 0) + 1
            if not part.session_changed:
                continue
            before = current.get(w.key, _STORED)
            if part.settle_at:
                if before is _STORED:
                    settles.append((w.key.tenant_id, w.key.conversation_id, part.settle_at))
                elif isinstance(before, SessionMark) and before.expires_at < part.settle_at:
                    key = (
                        w.key.tenant_id,
                        before.flow_id,
                        before.flow_version,
                        before.state,
                        bucket_of(before.expires_at),
                        ABANDONED,
                        "",
                    )
                    cell = counts.setdefault(key, [0, 0.0])
                    cell[0] += 1
            current[w.key] = part.session
    sessions = {key: mark for key, mark in current.items() if mark is None or isinstance(mark, SessionMark)}
    return AnalyticsWrite(counts, settles, sessions, missed)


def open_store(path: str, *, synchronous: str = "FULL", retention: Retention | None = None) -> Store:
    """The store at ``path``, its schema brought up to date (StoreError if it cannot be).

    ``path`` is a PostgreSQL URL (``postgresql://`` or ``postgres://``) or an SQLite file.
    ``synchronous`` is SQLite's: a PostgreSQL commit is as durable as the server's
    ``synchronous_commit`` makes it.
    """
    if is_database_url(path):
        from confab.runtime.store.postgres import PostgresStore

        return PostgresStore(path, retention=retention)
    from confab.runtime.store.sqlite import SqliteStore

    return SqliteStore(path, synchronous=synchronous, retention=retention)
