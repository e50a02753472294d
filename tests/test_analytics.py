"""Conversation analytics as a shard counts them from the turns it runs (no server: a real Shard
on its own SQLite file, the bundled pizza flow, a pinned clock), and the report made of them."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

from confab.actors.shard import Shard
from confab.runtime.analytics import AnalyticsQuery, AnalyticsRows, build_report, check_query, live_deltas
from confab.runtime.model import Content, ConversationKey, InboundMessage, ProcessingHints, TurnResult
from confab.runtime.protocol.records import Command, CommandBatch, CommandKind, decode_outcome, is_deferred
from tests.shard_runner import routed

T0 = 1_800_000_000.0  # a multiple of 3600
_ids = itertools.count(1)


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 5

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shard(make_shard: Callable[..., Shard]) -> Shard:
    made = make_shard()
    made.clock = Clock()
    return made


def say(
    shard: Shard,
    conversation: str,
    text: str = "",
    *,
    payload: str = "",
    tenant: str = "acme",
    message_id: str = "",
) -> TurnResult:
    message = InboundMessage(
        user_id="u", content=Content(text=text, payload=payload), hints=ProcessingHints(force_flow="pizza")
    )
    command = Command(
        CommandKind.TURN, message_id or f"m-{next(_ids)}", ConversationKey(tenant, conversation), message
    )
    ((_, answer),) = shard.run_round([("edge", CommandBatch(next(_ids), routed(shard, [command])))])
    wire = answer.outcomes[0]
    if is_deferred(wire):  # behind a webhook: finish it
        late: list[Any] = []
        for _ in range(500):
            late = shard.finish_webhooks()
            if late:
                break
            time.sleep(0.01)
        assert len(late) == 1, late
        wire = late[0][1][2]
    outcome = decode_outcome(wire)
    assert isinstance(outcome, TurnResult), outcome
    return outcome


def report(shard: Shard, tenant: str = "acme", *, now: float | None = None) -> dict[str, Any]:
    query = AnalyticsQuery(tenant, "pizza", T0, T0 + 3 * 3600, 3600)
    rows = shard.store.analytics(query, now if now is not None else shard.clock())
    built = build_report(query, rows)
    assert built["tenant_id"] == tenant
    flows = built["flows"]
    if not flows:
        return {}
    (flow,) = flows
    return dict(flow)


def states(flow: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {s["state"]: {k: v for k, v in s.items() if k != "state"} for s in flow["states"]}


def by_name(entries: list[dict[str, Any]]) -> dict[str, int]:
    return {e["name"]: e["count"] for e in entries}


def test_a_completed_session_with_a_failing_webhook(shard: Shard) -> None:
    assert say(shard, "c1", "hello").state.current_state == "greet"
    after = say(shard, "c1", "I'd like 2 large pizzas")  # the price webhook is not configured: it fails
    assert after.state.current_state == "price_unavailable"
    assert say(shard, "c1", payload="YES").state.current_state == "ordered"
    flow = report(shard)
    totals = flow["totals"]
    assert totals["sessions_started"] == 1
    assert totals["turns"] == 3
    assert totals["completed"] == 1
    assert (totals["abandoned"], totals["handoffs"], totals["fallbacks"]) == (0, 0, 0)
    assert (totals["webhook_calls"], totals["webhook_failures"]) == (1, 1)
    per_state = states(flow)
    # The first message is read in the start state, which greets "hello" in the next one.
    assert (per_state["begin"]["turns"], per_state["greet"]["turns"]) == (1, 1)
    assert per_state["ordered"]["sessions_ended"] == 1
    transitions = {(t["from_state"], t["to_state"]): t["count"] for t in flow["transitions"]}
    assert transitions == {
        ("begin", "greet"): 1,
        ("greet", "take_order"): 1,
        ("take_order", "price_unavailable"): 1,
        ("price_unavailable", "ordered"): 1,
    }
    (webhook,) = flow["webhooks"]
    assert (webhook["name"], webhook["calls"], webhook["failures"], webhook["timeouts"]) == ("price", 1, 1, 0)
    assert sum(v["sessions"] for v in flow["variants"]) == 1
    assert sum(v["completed"] for v in flow["variants"]) == 1


def test_fallbacks_end_in_a_handoff_and_the_missed_texts_are_kept(shard: Shard) -> None:
    say(shard, "c2", "hello")
    for _ in range(3):
        say(shard, "c2", "Xyzzy   QWERTY")
    flow = report(shard)
    assert flow["totals"]["fallbacks"] == 3
    assert flow["totals"]["handoffs"] == 1
    assert states(flow)["greet"]["fallbacks"] == 3
    assert by_name(flow["handoff_reasons"]) == {"not understood three times in a row": 1}
    assert flow["missed_utterances"] == [{"text": "xyzzy qwerty", "count": 3}]
    assert flow["totals"]["completed"] == 0


def test_missed_texts_are_masked_as_the_flow_says(shard: Shard) -> None:
    say(shard, "c3", "hello")
    say(shard, "c3", "my card is 4111 1111 1111 1111 zzz")
    texts = [m["text"] for m in report(shard)["missed_utterances"]]
    assert texts and all("4111 1111" not in t for t in texts), texts


def test_slot_reprompts_and_a_slot_given_up(shard: Shard) -> None:
    say(shard, "c4", payload="ORDER")
    for _ in range(3):
        say(shard, "c4", "purple")
    flow = report(shard)
    assert by_name(flow["slots_reprompted"]) == {"size": 2}
    assert by_name(flow["slots_given_up"]) == {"size": 1}
    assert flow["totals"]["handoffs"] == 1
    assert states(flow)["stuck"]["handoffs"] == 1


def test_an_abandoned_session_counts_once_whether_or_not_its_user_comes_back(shard: Shard) -> None:
    assert isinstance(shard.clock, Clock)
    say(shard, "c5", payload="ORDER")  # take_order, asking for the size
    assert report(shard, now=T0 + 1800)["totals"]["abandoned"] == 0  # not yet 30 minutes
    later = report(shard, now=T0 + 1806)
    assert later["totals"]["abandoned"] == 1
    assert states(later)["take_order"]["abandoned"] == 1
    shard.clock.now = T0 + 4000
    back = say(shard, "c5", "hello")
    assert "session_expired" in back.actions_performed
    flow = report(shard, now=T0 + 4001)
    assert flow["totals"]["abandoned"] == 1
    assert flow["totals"]["sessions_started"] == 2
    assert states(flow)["take_order"]["abandoned"] == 1


def test_a_reset_of_an_expired_session_counts_it_abandoned(shard: Shard) -> None:
    assert isinstance(shard.clock, Clock)
    say(shard, "c6", payload="ORDER")
    shard.clock.now = T0 + 4000
    command = Command(CommandKind.RESET, "r-1", ConversationKey("acme", "c6"), "test")
    shard.run_round([("edge", CommandBatch(next(_ids), routed(shard, [command])))])
    flow = report(shard, now=T0 + 9000)
    assert flow["totals"]["abandoned"] == 1


def test_a_repeated_message_is_counted_once(shard: Shard) -> None:
    say(shard, "c7", "hello", message_id="c:once")
    say(shard, "c7", "hello", message_id="c:once")
    assert report(shard)["totals"]["turns"] == 1


def test_a_round_whose_write_fails_counts_nothing(shard: Shard, monkeypatch: pytest.MonkeyPatch) -> None:
    say(shard, "c8", "hello")
    real_write = shard.store.write
    monkeypatch.setattr(shard.store, "write", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    message = InboundMessage(
        user_id="u", content=Content(text="hello"), hints=ProcessingHints(force_flow="pizza")
    )
    command = Command(CommandKind.TURN, "c:retry", ConversationKey("acme", "c8"), message)
    shard.run_round([("edge", CommandBatch(next(_ids), routed(shard, [command])))])
    monkeypatch.setattr(shard.store, "write", real_write)
    assert report(shard)["totals"]["turns"] == 1
    shard.run_round([("edge", CommandBatch(next(_ids), routed(shard, [command])))])
    assert report(shard)["totals"]["turns"] == 2
    # Only what was committed is in the live figures too.
    turns = sum(v for (figure, *_), v in shard.analytics.totals.items() if figure == "confab.analytics.turns")
    assert turns == 2


def test_a_tenant_sees_only_its_own(shard: Shard) -> None:
    say(shard, "c9", "hello", tenant="acme")
    say(shard, "c9", "hello", tenant="globex")
    say(shard, "c10", "hello", tenant="globex")
    assert report(shard, "acme")["totals"]["sessions_started"] == 1
    assert report(shard, "globex")["totals"]["sessions_started"] == 2
    assert report(shard, "initech") == {}


def test_analytics_can_be_off(make_shard: Callable[..., Shard]) -> None:
    shard = make_shard()
    shard.settings = type(shard.settings)(**{**_fields(shard.settings), "analytics": False})
    say(shard, "c11", "hello")
    assert report(shard) == {}


def _fields(settings: Any) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def test_series_and_the_checks_of_a_query() -> None:
    query = AnalyticsQuery("acme", "", T0, T0 + 7200, 3600)
    rows = AnalyticsRows([("pizza", "3", "greet", int(T0) + 3660, "turns", "", 4, 0.0)], [], [])
    built = build_report(query, rows)
    (flow,) = built["flows"]
    assert [b["counts"].get("turns", 0) for b in flow["series"]] == [0, 4]
    assert flow["flow_version"] == ""
    assert check_query(query) == ""
    assert check_query(AnalyticsQuery("acme", "", T0, T0, 3600)).startswith("since")
    assert check_query(AnalyticsQuery("acme", "", T0, T0 + 60, 90)).startswith("bucket_s")
    assert check_query(AnalyticsQuery("acme", "", T0, T0 + 86400 * 30, 60)).startswith("bucket_s")


def test_live_figures_of_webhook_outcomes() -> None:
    from confab.runtime.analytics import TurnCounts

    part = TurnCounts()
    key = ("acme", "pizza", "3", "take_order", 0)
    part.add((*key, "webhook_calls", "price"), 3, 1500.0)
    part.add((*key, "webhook_failures", "price"), 2)
    part.add((*key, "webhook_timeouts", "price"), 1)
    deltas = live_deltas(part)
    calls = {k[5]: v for k, v in deltas.items() if k[0] == "confab.analytics.webhook_calls"}
    assert calls == {"ok": 1, "failed": 1, "timeout": 1}
    assert deltas[("confab.analytics.webhook_duration", "acme", "pizza", "", "price", "")] == 1.5


def test_the_edge_adds_up_the_shards_live_figures_so_they_only_go_up() -> None:
    from confab.grpc_edge.figures import LiveAnalyticsView
    from confab.runtime.inspection import ShardStatus

    def status(index: int, generation: int, turns: float, *more: tuple[str, float]) -> ShardStatus:
        figures = [("confab.analytics.turns", "acme", "pizza", "greet", "", "", turns)]
        figures += [(name, "acme", "pizza", "greet", "", "", value) for name, value in more]
        return ShardStatus(
            index,
            generation,
            100 + generation,
            0.0,
            0,
            0,
            0,
            0,
            0,
            0,
            True,
            0.0,
            "",
            0,
            0.0,
            analytics=tuple(figures),
        )

    view = LiveAnalyticsView()
    key = ("confab.analytics.turns", "acme", "pizza", "greet", "", "")
    fallbacks = ("confab.analytics.fallbacks", "acme", "pizza", "greet", "", "")
    assert view.update([status(0, 1, 5), status(1, 1, 2)]).analytics[key] == 7
    # GetMetrics asked afresh
    fresh = view.update([status(0, 1, 6, ("confab.analytics.fallbacks", 1))]).analytics
    assert (fresh[key], fresh[fallbacks]) == (8, 1)
    stale = view.update([status(0, 1, 5)]).analytics  # the health monitor's older report: passed over
    assert (stale[key], stale[fallbacks]) == (8, 1)
    again = view.update([status(0, 1, 6, ("confab.analytics.fallbacks", 1))]).analytics
    assert (again[key], again[fallbacks]) == (8, 1)
    restarted = view.update([status(0, 2, 1)]).analytics  # a new shard process counts from 0
    assert restarted[key] == 9
