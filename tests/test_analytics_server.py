"""Conversation analytics through a real server: dialogues that complete, abandon, hand off,
fall back and call a failing webhook produce exactly the counts expected, per flow and state;
a tenant's admin sees its own tenant only; bad ranges are INVALID_ARGUMENT; a shard that dies
between its commit and its reply neither loses nor double-counts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from confab.grpc_edge.auth import hash_api_key
from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.tools.price_service import PriceService
from tests.support import ServerProcess, free_port, message, status_details

pytestmark = pytest.mark.integration  # every test here starts a server

KEYS = {
    "app-a": ("tenant-a", "[]"),
    "app-b": ("tenant-b", "[]"),
    "admin-a": ("tenant-a", "[admin]"),
    "admin-b": ("tenant-b", "[admin]"),
    "operator": ("", "[operator]"),
}
TTL_S = 1  # the quick flow's session_ttl_s: abandonment within a test's time
QUICK_FLOW = f"""
flow: quick
settings: {{start: ask, session_ttl_s: {TTL_S}}}
intents:
  finish: {{keywords: [done]}}
states:
  ask:
    on_enter: [{{say: {{text: "Say done when you are done."}}}}]
    transitions: [{{intent: finish, to: finished}}]
  finished:
    terminal: true
    on_enter: [{{say: {{text: "Bye."}}}}]
"""


def secret(name: str) -> str:
    return f"{name}-secret-for-tests-0123456789"


def as_(name: str) -> tuple[tuple[str, str]]:
    return (("x-api-key", secret(name)),)


class Analytics:
    """A server whose pizza flow's price webhook fails (HTTP 503), with a quick-expiring flow;
    ``flows_added`` and ``config_added``: flow files (name: YAML) and config text of a test's own."""

    def __init__(
        self, root: Path, *, flows_added: dict[str, str] | None = None, config_added: str = ""
    ) -> None:
        self.prices = PriceService(fail=True).start()
        flows = root / "flows"
        flows.mkdir()
        (flows / "quick.yaml").write_text(QUICK_FLOW)
        for name, text in (flows_added or {}).items():
            (flows / name).write_text(text)
        entries = "".join(
            f"    - {{name: {name}, sha256: {hash_api_key(secret(name))}, tenant: '{t}', roles: {roles}}}\n"
            for name, (t, roles) in KEYS.items()
        )
        config = root / "confab.yaml"
        config.write_text(
            "auth:\n  mode: required\n  api_keys:\n"
            + entries
            + f"flows:\n  dirs: ['{flows}']\n  webhooks:\n"
            + f"    - {{name: price, url: '{self.prices.url}', timeout_s: 3.0, retries: 0, headers: {{}}}}\n"
            + config_added
        )
        self.metrics_port = free_port()
        self.server = ServerProcess(
            root / "data",
            shards=2,
            extra=["--config", str(config), "--metrics-listen", f"127.0.0.1:{self.metrics_port}"],
        )

    def close(self) -> None:
        self.server.stop()
        self.prices.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Analytics]:
    analytics = Analytics(tmp_path_factory.mktemp("analytics"))
    try:
        analytics.server.start()
        with analytics.server.channel() as channel:
            stub = pb_grpc.MCPEngineStub(channel)
            play_dialogues(stub)
            time.sleep(TTL_S + 0.5)  # the quick flow's open sessions expire
            come_back(stub)
        yield analytics
    finally:
        analytics.close()


def send(
    stub: pb_grpc.MCPEngineStub, tenant: str, conversation: str, flow: str, text: str = "", payload: str = ""
) -> pb.ProcessMessageResponse:
    request = message(conversation, text, tenant=tenant)
    request.content.payload = payload
    request.processing_hints.force_flow = flow
    app = "app-a" if tenant == "tenant-a" else "app-b"
    response: pb.ProcessMessageResponse = stub.ProcessMessage(request, metadata=as_(app), timeout=30)
    return response


def play_dialogues(stub: pb_grpc.MCPEngineStub) -> None:
    a = "tenant-a"
    # completes, through the price webhook's failure route
    send(stub, a, "done-1", "pizza", "hello")
    assert send(stub, a, "done-1", "pizza", "I'd like 2 large pizzas").current_state == "price_unavailable"
    assert send(stub, a, "done-1", "pizza", payload="YES").current_state == "ordered"
    # asks for a person
    send(stub, a, "human-1", "pizza", "hello")
    assert send(stub, a, "human-1", "pizza", payload="HUMAN").current_state == "human"
    # is not understood three times in a row: the fallback state hands over
    send(stub, a, "lost-1", "pizza", "hello")
    for _ in range(3):
        last = send(stub, a, "lost-1", "pizza", "xyzzy plugh")
    assert last.current_state == "stuck"
    # a size it cannot take, twice, then a good one: two re-prompts, then on
    send(stub, a, "size-1", "pizza", payload="ORDER")
    send(stub, a, "size-1", "pizza", "purple")
    send(stub, a, "size-1", "pizza", "purple")
    assert send(stub, a, "size-1", "pizza", "large").current_state == "take_order"
    # the quick flow: one completes, one is left to expire
    send(stub, a, "quick-1", "quick", "hi")
    assert send(stub, a, "quick-1", "quick", "done").current_state == "finished"
    send(stub, a, "quick-2", "quick", "hi")  # never comes back
    send(stub, a, "quick-3", "quick", "hi")  # comes back after its session expired
    # another tenant's conversation
    send(stub, "tenant-b", "b-1", "pizza", "hello")


def come_back(stub: pb_grpc.MCPEngineStub) -> None:
    """After the quick flow's sessions expired: one user comes back, and finishes at once."""
    back = send(stub, "tenant-a", "quick-3", "quick", "done")
    assert back.current_state == "finished" and "session_expired" in back.actions_performed


@pytest.fixture
def stubs(served: Analytics) -> Iterator[admin_grpc.AdminStub]:
    with served.server.channel() as channel:
        yield admin_grpc.AdminStub(channel)


def flows_of(report: admin.AnalyticsReport) -> dict[str, admin.FlowAnalytics]:
    return {f.flow_id: f for f in report.flows}


def counts(c: admin.AnalyticsCounts) -> dict[str, int]:
    return {field.name: getattr(c, field.name) for field in c.DESCRIPTOR.fields}


def per_state(flow: admin.FlowAnalytics) -> dict[str, admin.StateAnalytics]:
    return {s.state: s for s in flow.states}


def test_the_dialogues_are_counted_exactly(stubs: admin_grpc.AdminStub) -> None:
    report = stubs.GetAnalytics(admin.GetAnalyticsRequest(tenant_id="tenant-a"), metadata=as_("admin-a"))
    assert report.tenant_id == "tenant-a" and report.bucket_s == 3600
    flows = flows_of(report)
    assert set(flows) == {"pizza", "quick"}
    pizza = flows["pizza"]
    assert counts(pizza.totals) == {
        "sessions_started": 4,
        "turns": 13,
        "completed": 1,
        "abandoned": 0,
        "handoffs": 2,
        "fallbacks": 3,
        "slot_reprompts": 2,
        "slots_given_up": 0,
        "webhook_calls": 1,
        "webhook_failures": 1,
        "generative_fallbacks": 0,
        "generations": 0,
        "generation_failures": 0,
    }
    states = per_state(pizza)
    assert states["greet"].fallbacks == 3
    assert states["human"].handoffs == 1 and states["human"].entered == 1
    assert states["stuck"].handoffs == 1 and states["stuck"].entered == 1
    assert states["ordered"].sessions_ended == 1
    assert {(r.name, r.count) for r in pizza.handoff_reasons} == {
        ("customer asked for a person", 1),
        ("not understood three times in a row", 1),
    }
    assert [(m.text, m.count) for m in pizza.missed_utterances] == [("xyzzy plugh", 3)]
    assert {(s.name, s.count) for s in pizza.slots_reprompted} == {("size", 2)}
    (webhook,) = pizza.webhooks
    assert (webhook.name, webhook.calls, webhook.failures, webhook.timeouts) == ("price", 1, 1, 0)
    assert webhook.p50_ms > 0
    transitions = {(t.from_state, t.to_state): t.count for t in pizza.transitions}
    assert transitions[("greet", "take_order")] == 1
    assert transitions[("begin", "take_order")] == 1  # an order as the first message: no greeting
    assert transitions[("take_order", "price_unavailable")] == 1
    assert transitions[("greet", "human")] == 1
    assert transitions[("greet", "stuck")] == 1
    assert sum(v.sessions for v in pizza.variants) == 4
    assert sum(v.completed for v in pizza.variants) == 1
    assert sum(b.counts.turns for b in pizza.series) == 13

    quick = flows["quick"]
    # quick-1 completes; quick-2 is abandoned and never comes back; quick-3 is abandoned, comes
    # back and completes a second session
    assert (quick.totals.sessions_started, quick.totals.completed, quick.totals.abandoned) == (4, 2, 2)
    assert per_state(quick)["ask"].abandoned == 2
    assert per_state(quick)["finished"].sessions_ended == 2


def test_one_flow_and_each_version(stubs: admin_grpc.AdminStub) -> None:
    only = stubs.GetAnalytics(
        admin.GetAnalyticsRequest(tenant_id="tenant-a", flow_id="quick", by_version=True),
        metadata=as_("operator"),
    )
    assert [(f.flow_id, bool(f.flow_version)) for f in only.flows] == [("quick", True)]


def test_a_tenant_sees_only_its_own(stubs: admin_grpc.AdminStub) -> None:
    own = stubs.GetAnalytics(admin.GetAnalyticsRequest(tenant_id="tenant-b"), metadata=as_("admin-b"))
    assert counts(flows_of(own)["pizza"].totals)["sessions_started"] == 1
    assert set(flows_of(own)) == {"pizza"}
    for caller in ("admin-b", "app-a"):
        with pytest.raises(grpc.RpcError) as refused:
            stubs.GetAnalytics(admin.GetAnalyticsRequest(tenant_id="tenant-a"), metadata=as_(caller))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    asked = admin.GetAnalyticsRequest(tenant_id="tenant-a")
    by_operator = stubs.GetAnalytics(asked, metadata=as_("operator"))
    assert flows_of(by_operator)["pizza"].totals.sessions_started == 4


def at(seconds: float) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=int(seconds))


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({}, "tenant_id"),
        ({"tenant_id": "tenant-a", "since": at(2_000_000_000), "until": at(1_900_000_000)}, "since"),
        ({"tenant_id": "tenant-a", "bucket_s": 90}, "bucket_s"),
        ({"tenant_id": "tenant-a", "bucket_s": 30}, "bucket_s"),
        ({"tenant_id": "tenant-a", "since": at(0), "until": at(1_900_000_000)}, "since"),
    ],
)
def test_bad_requests_are_invalid_arguments(
    stubs: admin_grpc.AdminStub, request_fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stubs.GetAnalytics(admin.GetAnalyticsRequest(**request_fields), metadata=as_("operator"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status_details(refused.value)[1] == [field], refused.value.details()


def test_a_shard_dying_between_commit_and_reply_counts_each_turn_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", shards=1, env={"CONFAB_TEST_EXIT_AFTER_COMMIT": "5"})
    try:
        server.start()
        with server.channel() as channel:
            stub = pb_grpc.MCPEngineStub(channel)
            requests = []
            for i in range(40):
                request = message(f"c-{i % 4}", "hello" if i < 4 else "xyzzy")
                request.processing_hints.force_flow = "pizza"
                requests.append(request)
            batch = pb.BatchProcessMessagesRequest(
                tenant_context={"tenant_id": "acme"}, messages=requests, parallel_processing=True
            )
            reply = stub.BatchProcessMessages(batch, timeout=60)
            assert reply.successful_count == 40
            assert any(r.performance_metrics.cache_status == "replayed" for r in reply.responses)
            report = admin_grpc.AdminStub(channel).GetAnalytics(admin.GetAnalyticsRequest(tenant_id="acme"))
        totals = flows_of(report)["pizza"].totals
        assert (totals.turns, totals.sessions_started) == (40, 4)
        # each conversation: a greeting, three misses, then a person holds it for the other six
        assert (totals.fallbacks, totals.handoffs) == (12, 4)
    finally:
        server.stop()
