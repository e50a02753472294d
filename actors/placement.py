"""Which shard should hold each virtual shard: a pure function of the shards that may hold them.

Every host computes the placement itself from the live members it reads in the store
(``actors.cluster``); there is no coordinator to ask, so two hosts that read the same
members must get the same answer, whatever they saw before. Hence no "previous
placement" input: rendezvous hashing gives each virtual shard to the shard with the
highest hash of (shard, virtual shard), so adding or removing a shard moves only the
virtual shards that shard gains or had; a deterministic pass then evens the counts out
(no shard more than one above another), moving from the most loaded shard the virtual
shards that the least loaded one ranks highest. A host with more shards has more
buckets, so its share is weighted by its shard count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _score(shard: str, vshard: int) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{vshard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def place(shards: Sequence[str], vshards: int) -> tuple[str, ...]:
    """Per virtual shard, the id of the shard of ``shards`` that should hold it ("" if none)."""
    eligible = sorted(set(shards))
    if not eligible:
        return tuple("" for _ in range(vshards))
    scores = {s: [_score(s, v) for v in range(vshards)] for s in eligible}
    placement = [max((scores[s][v], s) for s in eligible)[1] for v in range(vshards)]
    held: dict[str, list[int]] = {s: [] for s in eligible}
    for v, shard in enumerate(placement):
        held[shard].append(v)
    while True:
        most = max(eligible, key=lambda s: (len(held[s]), s))
        fewest = min(eligible, key=lambda s: (len(held[s]), s))
        if len(held[most]) - len(held[fewest]) <= 1:
            return tuple(placement)
        v = max(held[most], key=lambda v: scores[fewest][v])
        held[most].remove(v)
        held[fewest].append(v)
        placement[v] = fewest
