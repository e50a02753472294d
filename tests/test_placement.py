"""Placement and exclusion: pure functions every host computes alike from the member table."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

from confab.actors.cluster import Peer, excluded_hosts
from confab.actors.placement import place
from confab.runtime.store import Member

VSHARDS = 256


def shards_of(*hosts: str, per_host: int = 1) -> list[str]:
    return [f"{h}/{i}" for h in hosts for i in range(per_host)]


def test_every_host_computes_the_same_placement_whatever_order_it_read_the_members_in() -> None:
    shards = shards_of("h1", "h2", "h3", per_host=2)
    shuffled = shards[:]
    random.Random(7).shuffle(shuffled)
    assert place(shards, VSHARDS) == place(shuffled, VSHARDS)


def test_the_placement_is_balanced_and_weighted_by_shard_count() -> None:
    counts = Counter(place(shards_of("h1", "h2", "h3"), VSHARDS))
    assert sum(counts.values()) == VSHARDS and max(counts.values()) - min(counts.values()) <= 1
    by_host = Counter(s.partition("/")[0] for s in place([*shards_of("big", per_host=2), "small/0"], VSHARDS))
    assert abs(by_host["big"] - 2 * by_host["small"]) <= 2  # two shards, twice the share


def test_a_host_leaving_moves_only_about_its_own_share() -> None:
    three = place(shards_of("h1", "h2", "h3"), VSHARDS)
    two = place(shards_of("h1", "h2"), VSHARDS)
    moved = [v for v in range(VSHARDS) if three[v] != two[v]]
    own = [v for v in range(VSHARDS) if three[v] == "h3/0"]
    assert set(own) <= set(moved) and len(moved) <= len(own) + 8


def test_a_host_that_comes_back_gets_its_fair_share_back_never_everything() -> None:
    before = place(shards_of("h1", "h2", "h3"), VSHARDS)
    after_restart = place(shards_of("h3", "h1", "h2"), VSHARDS)  # it wrote its row first this time
    assert after_restart == before
    assert Counter(after_restart)["h3/0"] in (85, 86)


def test_no_shard_means_no_holder() -> None:
    assert place([], 4) == ("", "", "", "")


def peer(host: str, started_at: float, unreachable: Iterable[str] = ()) -> Peer:
    return Peer(Member(host, "c", 1, "up", "", "", 0.1, started_at), (), frozenset(unreachable))


def test_a_host_most_others_cannot_reach_is_excluded() -> None:
    peers = [peer("a", 1, {"c"}), peer("b", 2, {"c"}), peer("c", 3, {"a", "b"})]
    assert excluded_hosts(peers) == {"c"}
    older = [peer("a", 1, {"c"}), peer("b", 3, {"c"}), peer("c", 2, {"a", "b"})]
    assert excluded_hosts(older) == {"c"}  # whatever its age


def test_of_two_hosts_that_cannot_reach_each_other_the_younger_goes() -> None:
    assert excluded_hosts([peer("a", 1, {"b"}), peer("b", 2, {"a"})]) == {"b"}
    assert excluded_hosts([peer("a", 2, {"b"}), peer("b", 1, {"a"})]) == {"a"}


def test_one_host_alone_suspecting_another_excludes_nobody() -> None:
    assert excluded_hosts([peer("a", 1, {"b"}), peer("b", 2), peer("c", 3)]) == set()
    assert excluded_hosts([peer("a", 1), peer("b", 2), peer("c", 3)]) == set()
    assert excluded_hosts([peer("a", 1, {"a"})]) == set()  # nobody else to vote
