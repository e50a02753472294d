"""The virtual shards one shard process holds, and how long it may trust that it does.

The placement says which virtual shards a shard *should* hold (:meth:`want`, from the host's
``actors.cluster`` through the supervisor); the
store says which it *does* (``runtime.store``: claim, renew, release). Each
:meth:`tick` brings the two together: it releases what is no longer wanted, claims
what is wanted and not held (a claim succeeds once nobody else holds it or its lease
ran out), and renews the rest well within the lease.

The shard trusts a virtual shard until ``lease_s`` after the moment it *sent* the claim
or renewal that the store granted: the store's lease cannot end before that, so by
the time another shard may claim it, this one has stopped serving it, reads from
memory included. A shard that cannot reach the store (cut off, paused) simply stops
trusting its virtual shards when that time passes. Writes are fenced too (every
write names the epochs it writes under), which covers a process paused between
checking and writing.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confab.runtime.store import Fence, Store

log = logging.getLogger(__name__)

# Trust ends this much before the lease could, for clocks that run at slightly different rates.
TRUST_MARGIN_S = 0.25
CLAIM_RETRY_S = 0.25  # how often a wanted virtual shard that another still holds is tried again
YIELD_S = 3.0  # a virtual shard let go to another is not claimed back for this long


@dataclass(slots=True)
class OwnershipChange:
    """What one tick changed."""

    gained: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)  # released, taken over, or no longer trusted

    def __bool__(self) -> bool:
        return bool(self.gained or self.dropped)


class VshardOwnership:
    def __init__(
        self,
        owner: str,
        store: Store,
        *,
        lease_s: float,
        renew_every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.owner = owner
        self.store = store
        self.lease_s = lease_s
        self.renew_every_s = renew_every_s
        self.clock = clock
        self.wanted: frozenset[int] = frozenset()
        self.claiming = True
        self.held: dict[int, int] = {}  # vshard -> epoch
        self.trusted_until: dict[int, float] = {}  # vshard -> clock() value
        self.version = 0  # bumped whenever ``held`` changes (the shard's actor reports it)
        self.last_error = ""
        self._last_renewal = 0.0
        self._next_claim = 0.0
        # Let go because another shard wanted them: not claimed back until the next assignment,
        # or YIELD_S later (every host computes the placement from the same member table, so
        # two that disagreed agree again within a heartbeat or two; one still told to hold it
        # then was right, e.g. the other had taken this host for lost while the store was away).
        self._yielded: dict[int, float] = {}  # vshard -> until when

    def want(self, vshards: Iterable[int], *, claim: bool = True) -> None:
        """Hold ``vshards`` (release the others); ``claim`` False: keep those held, take none."""
        self.wanted = frozenset(vshards)
        self.claiming = claim
        self._yielded.clear()
        self._next_claim = 0.0  # try the new ones at the next tick

    def accepts(self, vshard: int, epoch: int, now: float) -> bool:
        """Whether a command routed at ``epoch`` may run here now."""
        return self.held.get(vshard) == epoch and self.trusted_until[vshard] > now

    def trusts(self, vshard: int, now: float) -> bool:
        return vshard in self.held and self.trusted_until[vshard] > now

    def fence(self, vshards: Iterable[int]) -> Fence:
        return Fence(self.owner, {v: self.held[v] for v in vshards if v in self.held})

    def drop(self, vshards: Iterable[int]) -> set[int]:
        """Stop holding ``vshards`` (a fenced write found them taken over); those that were held."""
        dropped = {v for v in vshards if v in self.held}
        for v in dropped:
            del self.held[v]
            del self.trusted_until[v]
        if dropped:
            self.version += 1
        return dropped

    def tick(self) -> OwnershipChange:
        change = OwnershipChange()
        now = self.clock()
        change.dropped |= self.drop([v for v, until in self.trusted_until.items() if until <= now])
        self._release(change)
        if self.held and now - self._last_renewal >= self.renew_every_s:
            self._renew(now, change)
        missing = self.wanted - self.held.keys() - {v for v, until in self._yielded.items() if until > now}
        if missing and self.claiming and now >= self._next_claim:
            self._claim(sorted(missing), now, change)
        if change.dropped:
            log.info("%s: stopped holding virtual shards %s", self.owner, _ranges(change.dropped))
        if change.gained:
            log.info("%s: now holds virtual shards %s", self.owner, _ranges(change.gained))
        return change

    def _release(self, change: OwnershipChange) -> None:
        unwanted = {v: e for v, e in self.held.items() if v not in self.wanted}
        if not unwanted:
            return
        change.dropped |= self.drop(unwanted)  # stop serving first: the release only tells others
        try:
            self.store.release(self.owner, unwanted)
        except Exception as exc:  # its leases run out by themselves; nobody waits longer than that
            self._failed("release", exc)

    def _renew(self, now: float, change: OwnershipChange) -> None:
        self._last_renewal = now
        try:
            renewed = self.store.renew(self.owner, dict(self.held), self.lease_s)
        except Exception as exc:  # keep trusting until the last granted lease says otherwise
            self._failed("renew", exc)
            return
        self.last_error = ""
        # Not renewed: taken over, or wanted by the shard the placement moved it to. Let go now
        # (a release at this epoch does nothing to one that was taken over), not at lease end.
        lost = {v: e for v, e in self.held.items() if v not in renewed}
        if lost:
            change.dropped |= self.drop(lost)
            self._yielded.update(dict.fromkeys(lost, now + YIELD_S))
            try:
                self.store.release(self.owner, lost)
            except Exception as exc:
                self._failed("release", exc)
        until = now + self.lease_s - TRUST_MARGIN_S
        for v in renewed:
            if v in self.trusted_until:
                self.trusted_until[v] = until

    def _claim(self, vshards: list[int], now: float, change: OwnershipChange) -> None:
        self._next_claim = now + CLAIM_RETRY_S
        try:
            taken = self.store.claim(vshards, self.owner, self.lease_s)
        except Exception as exc:
            self._failed("claim", exc)
            return
        self.last_error = ""
        until = now + self.lease_s - TRUST_MARGIN_S
        for v, epoch in taken.items():
            self.held[v] = epoch
            self.trusted_until[v] = until
        if taken:
            self.version += 1
            change.gained |= set(taken)
            change.dropped -= set(taken)

    def _failed(self, what: str, exc: Exception) -> None:
        problem = f"{what} of virtual shards failed: {type(exc).__name__}: {exc}"
        if problem != self.last_error:
            log.warning("%s: %s", self.owner, problem)
        self.last_error = problem


def _ranges(vshards: Iterable[int]) -> str:
    """1,2,3,7 -> "1-3,7", and 0,2,...,254 -> "0-254 step 2": what a log line can hold of
    256 numbers (a host's shards share its virtual shards out in turn)."""
    ordered = sorted(vshards)
    steps = {b - a for a, b in itertools.pairwise(ordered)}
    if len(ordered) > 2 and len(steps) == 1 and (step := steps.pop()) > 1:
        return f"{ordered[0]}-{ordered[-1]} step {step}"
    runs: list[list[int]] = []
    for v in ordered:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
