"""What counting conversation analytics costs a shard: its rounds with and without, same run.

    python -m confab.tools.bench.analytics_round [--rounds N] [--per-round K] [--repeats R]

A real Shard (no actors, no sockets) on an SQLite file of its own (synchronous=FULL, as
``confab serve`` has it) runs rounds of K commands over K conversations, with
``engine.analytics`` on and off in alternation, R times each; it prints the CPU
microseconds per command (the process's, store included) of each, and the difference.
Two flows: ``echo`` (the default flow: no session expiry, counters only) and ``pizza``
(a session TTL: its open-session row is written with every turn too), its conversations
going round greet -> take_order -> a re-prompt -> ... so that transitions, prompts and
fallbacks are counted.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from confab.actors.settings import ShardSettings
from confab.actors.shard import Shard
from confab.runtime.model import Content, ConversationKey, InboundMessage, ProcessingHints
from confab.runtime.protocol.directory import vshard_of
from confab.runtime.protocol.records import Command, CommandBatch, CommandKind
from confab.runtime.store import Retention, open_store

PIZZA_TEXTS = ("hello", "order", "purple", "large", "xyzzy", "cancel")
_ids = itertools.count(1)


def make_shard(path: Path, analytics: bool) -> Shard:
    settings = ShardSettings(
        store_path=str(path),
        synchronous="FULL",
        resident_limit=100_000,
        default_flow="echo",
        retention=Retention(32, 3600.0, 0.0),
        analytics=analytics,
    )
    store = open_store(settings.store_path, synchronous="FULL", retention=settings.retention)
    shard = Shard(0, 1, settings, store)
    shard.ownership.want(range(settings.vshards))  # every virtual shard, as a one-shard host holds them
    shard.tick_ownership()
    return shard


def run(shard: Shard, flow: str, rounds: int, per_round: int, offset: int) -> float:
    """CPU seconds per command over ``rounds`` rounds."""
    texts = PIZZA_TEXTS if flow == "pizza" else ("hello",)
    vshards = shard.settings.vshards
    started = time.process_time()
    for r in range(rounds):
        commands = []
        for c in range(per_round):
            key = ConversationKey("bench", f"{flow}-{offset}-{c}")
            hints = ProcessingHints(force_flow=flow) if flow == "pizza" else ProcessingHints()
            message = InboundMessage("u", Content(text=texts[r % len(texts)]), hints=hints)
            epoch = shard.ownership.held[vshard_of(key, vshards)]
            commands.append(Command(CommandKind.TURN, f"m{next(_ids)}", key, message, epoch=epoch))
        shard.run_round([("bench", CommandBatch(next(_ids), commands))])
    return (time.process_time() - started) / (rounds * per_round)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--per-round", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        print(f"{'flow':<6} {'analytics':<9} {'cpu us/command (median of runs)':>32}  runs")
        for flow in ("echo", "pizza"):
            results: dict[bool, list[float]] = {True: [], False: []}
            for repeat in range(args.repeats):
                for analytics in (True, False) if repeat % 2 == 0 else (False, True):
                    shard = make_shard(Path(directory) / f"{flow}-{repeat}-{analytics}.sqlite3", analytics)
                    try:
                        run(shard, flow, 20, args.per_round, -1)  # warm up: flows, caches, the file
                        results[analytics].append(run(shard, flow, args.rounds, args.per_round, repeat))
                    finally:
                        shard.close()
            for analytics in (False, True):
                runs = results[analytics]
                shown = " ".join(f"{v * 1e6:.0f}" for v in runs)
                median = statistics.median(runs) * 1e6
                print(f"{flow:<6} {'on' if analytics else 'off':<9} {median:>32.1f}  {shown}")
            on, off = statistics.median(results[True]), statistics.median(results[False])
            print(f"{flow:<6} {'cost':<9} {(on - off) * 1e6:>29.1f} us ({(on / off - 1) * 100:+.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
