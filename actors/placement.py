"""Which shard should hold each virtual shard: balanced, and moving as few as possible.

A pure function of the previous placement and the shards that may hold virtual
shards now (those of hosts that are up and not leaving). Virtual shards whose shard
is gone go to the least loaded shards; then, while one shard holds two more than
another, one moves from the most to the least loaded. Every move is a hand-off (the
old holder releases, the new one claims), so keeping the rest where they are
matters more than any finer balance.
"""

from __future__ import annotations

from collections.abc import Sequence


def place(previous: Sequence[str], shards: Sequence[str], vshards: int) -> tuple[str, ...]:
    """The new placement: per virtual shard, a shard id of ``shards`` ("" if there are none)."""
    if not shards:
        return tuple("" for _ in range(vshards))
    eligible = sorted(set(shards))
    placement = [p if p in eligible else "" for p in previous[:vshards]]
    placement += [""] * (vshards - len(placement))
    held: dict[str, list[int]] = {s: [] for s in eligible}
    for v, shard in enumerate(placement):
        if shard:
            held[shard].append(v)

    def least() -> str:
        return min(eligible, key=lambda s: (len(held[s]), s))

    for v, shard in enumerate(placement):
        if not shard:
            target = least()
            placement[v] = target
            held[target].append(v)
    while True:
        most = max(eligible, key=lambda s: (len(held[s]), s))
        fewest = least()
        if len(held[most]) - len(held[fewest]) <= 1:
            break
        v = held[most].pop()
        placement[v] = fewest
        held[fewest].append(v)
    return tuple(placement)
