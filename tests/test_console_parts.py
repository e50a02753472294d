"""``confab console``'s parts without a server process: what the pages show (``views``), the
sessions, the options, and the web application against an in-process fake Admin service
(grpc.aio on the same event loop), so sign-in, the cookie, CSRF and the way a refusal or an
UNIMPLEMENTED RPC is shown are checked in the fast subset. The browser tests against a real
server are tests/test_console.py."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.tools.console import views
from confab.tools.console.app import make_app
from confab.tools.console.backend import Backend, Credential
from confab.tools.console.command_line import is_loopback, split_listen
from confab.tools.console.sessions import COOKIE, Sessions

OPERATOR, ADMIN, PLAIN = "op-key", "acme-admin-key", "app-key"


def summary(conversation: str, **fields: Any) -> admin.ConversationSummary:
    return admin.ConversationSummary(tenant_id="acme", conversation_id=conversation, **fields)


# views ------------------------------------------------------------------------------------


def test_stuck_conversations_come_first_webhooks_before_mailboxes_before_handoffs() -> None:
    rows = [
        views.row(summary("a-calm")),
        views.row(summary("b-handed", in_handoff=True)),
        views.row(summary("c-queued", mailbox=3)),
        views.row(summary("d-webhook", webhook="price", webhook_waiting_s=12.0)),
        views.row(summary("e-webhook-long", webhook="price", webhook_waiting_s=90.0)),
    ]
    order = [r.conversation for r in views.sort_rows(rows, "stuck")]
    assert order == ["e-webhook-long", "d-webhook", "c-queued", "b-handed", "a-calm"]
    assert rows[4].why_stuck == ["webhook price for 1 min"]
    assert views.row(summary("x"), webhook="price", mailbox=1).why_stuck == [
        "webhook price in flight",
        "1 queued",
    ]
    assert views.sort_rows(rows, "id")[0].conversation == "a-calm"


def test_pages_of_a_listing() -> None:
    rows = [views.row(summary(f"c{n:03d}")) for n in range(120)]
    page = views.page_of(rows, 3, 50)
    assert (page.number, page.pages, page.total, len(page.rows)) == (3, 3, 120, 20)
    assert views.page_of(rows, 99, 50).number == 3 and views.page_of([], 1, 50).pages == 1


def test_slots_are_listed_and_the_flows_own_masks_are_named() -> None:
    slots = views.slots_of({"slots": {"size": "large", "quantity": 2.0, "card_number": "****"}})
    assert [(s.name, s.value, s.masked_by_flow) for s in slots] == [
        ("card_number", "****", True),
        ("quantity", "2", False),
        ("size", "large", False),
    ]


def test_rates_fill_every_interval_of_the_window() -> None:
    answer = pb.GetMetricsResponse()
    requests = answer.metrics.add(name="rpc.requests", type="counter")
    for at, code, count in ((1000.0, "OK", 20.0), (1000.0, "NOT_FOUND", 10.0), (1020.0, "OK", 5.0)):
        point = requests.points.add(value=count)
        point.timestamp.FromSeconds(int(at))
        point.attributes.update({"method": "ProcessMessage", "code": code})
    columns = views.rates(answer, 10.0, 995.0, 1035.0)
    assert columns["t"] == [990.0, 1000.0, 1010.0, 1020.0, 1030.0]
    assert columns["calls"] == [0.0, 3.0, 0.0, 0.5, 0.0]
    assert columns["failed"] == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert columns["now_calls"] == 0.5  # the last full interval, not the one still filling


def test_the_flow_graph_places_states_by_distance_and_weighs_edges_by_traffic() -> None:
    flow = admin.FlowAnalytics(flow_id="pizza")
    for name, entered, ended in (
        ("greet", 10, 2),
        ("take_order", 8, 1),
        ("confirm", 6, 0),
        ("ordered", 5, 5),
    ):
        flow.states.add(state=name, entered=entered, sessions_ended=ended)
    for a, b, n in (("greet", "take_order", 8), ("take_order", "confirm", 6), ("confirm", "ordered", 5)):
        flow.transitions.add(from_state=a, to_state=b, count=n)
    flow.transitions.add(from_state="confirm", to_state="take_order", count=1)  # back
    graph = views.flow_graph(flow)
    x = {n.name: n.x for n in graph.nodes}
    assert x["greet"] < x["take_order"] < x["confirm"] < x["ordered"]
    widths = {(e.source, e.target): e.width for e in graph.edges}
    assert (
        widths[("greet", "take_order")] > widths[("confirm", "ordered")] > widths[("confirm", "take_order")]
    )
    assert graph.width > 4 * views.NODE_W
    ends = views.end_states(flow)
    assert [b.label for b in ends] == ["ordered", "greet", "take_order"] and ends[0].width == 100.0
    assert views.flow_graph(admin.FlowAnalytics()).nodes == []


def test_event_summaries() -> None:
    assert views.event_summary("transition", {"from": "greet", "to": "take_order"}) == "greet → take_order"
    turn = views.event_summary("turn", {"state": "menu", "intent": "hours", "duration_ms": 1.25})
    assert turn == "state menu; intent hours; 1.2 ms"


# sessions and options ---------------------------------------------------------------------


def test_sessions_expire_when_idle_and_csrf_tokens_are_per_session(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = Sessions(idle_s=60.0, max_age_s=3600.0)
    first, one = sessions.open(Credential("api_key", "k1"), "operator", "")
    second, other = sessions.open(Credential("api_key", "k2"), "admin", "acme")
    assert first != second and one.csrf != other.csrf and len(first) >= 40
    assert one.csrf_ok(one.csrf) and not one.csrf_ok(other.csrf) and not one.csrf_ok("")
    assert sessions.get(first) is one and sessions.get("forged") is None and sessions.get(None) is None
    later = time.monotonic() + 61.0
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert sessions.get(first) is None  # idle too long: gone
    sessions.close(second)
    assert len(sessions) == 0


def test_credentials_become_the_shells_headers() -> None:
    assert Credential("api_key", "k").metadata == (("x-api-key", "k"),)
    assert Credential("token", "t").metadata == (("authorization", "Bearer t"),)
    assert Credential("api_key", "").metadata == ()


def test_listen_addresses() -> None:
    assert split_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert split_listen("[::1]:0") == ("::1", 0)
    with pytest.raises(ValueError):
        split_listen("8080")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


# The application against a fake Admin service ------------------------------------------------


class FakeAdmin(admin_grpc.AdminServicer):
    """Keys as the real server treats them: an operator, acme's admin, a key with no role."""

    def __init__(self, report: admin.AnalyticsReport | None = None) -> None:
        self.seen_keys: list[str] = []
        self.resets: list[str] = []
        self.report = report  # None: GetAnalytics is UNIMPLEMENTED, as on a server without it
        self.asked_analytics: Any = None

    async def _who(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        key = dict(context.invocation_metadata() or ()).get("x-api-key", "")
        self.seen_keys.append(str(key))
        if key not in (OPERATOR, ADMIN, PLAIN):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid API key")
        if key == PLAIN:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "this call needs the 'admin' or 'operator' role"
            )
        return str(key)

    async def ListConversations(self, request: Any, context: Any) -> admin.ListConversationsResponse:
        key = await self._who(context)
        if key == ADMIN and request.tenant_id not in ("", "acme"):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "an administrator of tenant 'acme' may not see"
            )
        return admin.ListConversationsResponse(
            conversations=[summary("c-1", current_state="menu", webhook="price", webhook_waiting_s=3.0)]
        )

    async def GetCluster(self, request: Any, context: Any) -> admin.Cluster:
        if await self._who(context) != OPERATOR:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "this call needs the 'operator' role")
        cluster = admin.Cluster(version="9.9", complete=True, this_host="h1")
        cluster.shards.add(index=0, healthy=True, shard_id="h1/0", pid=42)
        cluster.hosts.add(host="h1", state="up")
        return cluster

    async def InspectConversation(self, request: Any, context: Any) -> admin.ConversationDetail:
        await self._who(context)
        detail = admin.ConversationDetail(tenant_id="acme", conversation_id="c-1", resident=True)
        detail.state.update({"current_state": "menu", "flow_id": "support", "slots": {"name": "Ada"}})
        detail.last_turns.add(seq=1, input="hello <script>", response="Hi!", state_after="menu")
        return detail

    async def ResetConversation(self, request: Any, context: Any) -> admin.ActionResult:
        await self._who(context)
        self.resets.append(request.reason)
        return admin.ActionResult(ok=True, message="reset")

    async def TailEvents(self, request: Any, context: Any) -> AsyncIterator[admin.Event]:
        await self._who(context)
        event = admin.Event(type="turn", tenant_id="acme", conversation_id="c-1", shard=0)
        event.data.update({"state": "menu", "intent": "hours"})
        yield event
        await asyncio.Event().wait()  # then nothing, for ever: as a quiet server's tail

    async def GetAnalytics(self, request: Any, context: Any) -> admin.AnalyticsReport:
        await self._who(context)
        if self.report is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
            raise AssertionError("abort raises")
        self.asked_analytics = request
        return self.report


def pizza_report() -> admin.AnalyticsReport:
    """A day of the pizza flow, as GetAnalytics would answer it."""
    report = admin.AnalyticsReport(tenant_id="acme", bucket_s=3600)
    flow = report.flows.add(flow_id="pizza")
    flow.totals.sessions_started, flow.totals.completed, flow.totals.handoffs = 40, 25, 3
    states = (("greet", 40, 6, 2), ("take_order", 33, 2, 1), ("confirm", 30, 2, 0), ("ordered", 25, 25, 0))
    for name, entered, ended, abandoned in states:
        flow.states.add(state=name, entered=entered, sessions_ended=ended, abandoned=abandoned)
    for a, b, n in (("greet", "take_order", 33), ("take_order", "confirm", 30), ("confirm", "ordered", 25)):
        flow.transitions.add(from_state=a, to_state=b, count=n)
    flow.transitions.add(from_state="confirm", to_state="take_order", count=4)
    flow.webhooks.add(name="price", calls=30, failures=1, p50_ms=40.0, p95_ms=120.0)
    flow.handoff_reasons.add(name="asked for a person", count=3)
    flow.missed_utterances.add(text="do you deliver to the moon", count=2)
    start = int(time.time()) // 3600 * 3600 - 23 * 3600
    for hour in range(24):
        bucket = flow.series.add()
        bucket.start.FromSeconds(start + hour * 3600)
        bucket.counts.sessions_started = 1 + hour % 4
        bucket.counts.completed = hour % 3
        bucket.counts.turns = 5 + hour
    return report


def with_console(
    test: Callable[[TestClient[Any, Any], FakeAdmin], Awaitable[None]], fake: FakeAdmin | None = None
) -> None:
    async def run() -> None:
        nonlocal fake
        fake = fake or FakeAdmin()
        server = grpc.aio.server()
        admin_grpc.add_AdminServicer_to_server(fake, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        app = make_app(f"127.0.0.1:{port}", lambda: grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        try:
            async with TestClient(TestServer(app)) as client:
                await test(client, fake)
        finally:
            await server.stop(None)

    asyncio.run(run())


async def sign_in(client: TestClient[Any, Any], key: str) -> Any:
    return await client.post("/login", data={"kind": "api_key", "secret": key}, allow_redirects=False)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found
    return found.group(1)


def test_signing_in_sets_an_httponly_strict_cookie_and_a_wrong_key_is_refused() -> None:
    async def check(client: TestClient[Any, Any], fake: FakeAdmin) -> None:
        assert (await client.get("/cluster", allow_redirects=False)).headers["Location"] == "/login"
        refused = await sign_in(client, "nope")
        assert refused.status == 401 and "UNAUTHENTICATED" in await refused.text()
        no_role = await sign_in(client, PLAIN)
        assert no_role.status == 401 and "neither the admin nor the operator role" in await no_role.text()
        answer = await sign_in(client, OPERATOR)
        assert answer.status == 303
        cookie = answer.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and OPERATOR not in cookie
        page = await client.get("/cluster")
        text = await page.text()
        assert "h1/0" in text and OPERATOR not in text
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert page.headers["Cache-Control"] == "no-store"

    with_console(check)


def test_a_tenant_admin_is_told_what_the_server_refused_and_unimplemented_is_not_available() -> None:
    async def check(client: TestClient[Any, Any], fake: FakeAdmin) -> None:
        await sign_in(client, ADMIN)
        home = await client.get("/", allow_redirects=False)
        assert home.headers["Location"] == "/conversations"
        listing = await (await client.get("/conversations")).text()
        assert "admin of acme" in listing and "webhook price for 3.0 s" in listing
        denied = await (await client.get("/conversations?tenant=globex")).text()
        assert "PERMISSION_DENIED" in denied and "may not see" in denied
        cluster = await (await client.get("/cluster")).text()
        assert "needs the operator role" in cluster
        analytics = await (await client.get("/analytics")).text()
        assert "UNIMPLEMENTED" in analytics and "not available on this server" in analytics
        detail = await (await client.get("/conversation?tenant=acme&id=c-1")).text()
        assert "hello &lt;script&gt;" in detail  # escaped
        assert set(fake.seen_keys) <= {ADMIN, PLAIN, "nope"}  # only the person's own key was used

    with_console(check)


def test_actions_need_the_csrf_token_and_a_confirmation() -> None:
    async def check(client: TestClient[Any, Any], fake: FakeAdmin) -> None:
        await sign_in(client, OPERATOR)
        page = await (await client.get("/conversation?tenant=acme&id=c-1")).text()
        token = csrf_of(page)
        form = {"tenant": "acme", "id": "c-1", "action": "reset"}
        assert (await client.post("/conversation/action", data=form)).status == 403
        assert (await client.post("/conversation/action", data={**form, "csrf": "x"})).status == 403
        cross = await client.post(
            "/conversation/action", data={**form, "csrf": token}, headers={"Origin": "http://evil.example"}
        )
        assert cross.status == 403
        confirm = await client.post("/conversation/action", data={**form, "csrf": token})
        assert confirm.status == 200 and "Reset the conversation" in await confirm.text()
        assert fake.resets == []  # not before it is confirmed
        done = await client.post(
            "/conversation/action",
            data={**form, "csrf": token, "confirmed": "yes", "reason": "stuck"},
            allow_redirects=False,
        )
        assert done.status == 303 and fake.resets == ["stuck"]
        shown = await (await client.get(done.headers["Location"])).text()
        assert "reset: reset" in shown
        out = await client.post("/logout", data={"csrf": token}, allow_redirects=False)
        assert out.status == 303 and COOKIE in out.headers.get("Set-Cookie", "")
        assert (await client.get("/cluster", allow_redirects=False)).status == 303

    with_console(check)


def test_analytics_show_the_figures_where_sessions_end_and_the_flow_graph() -> None:
    async def check(client: TestClient[Any, Any], fake: FakeAdmin) -> None:
        await sign_in(client, ADMIN)
        await client.get("/conversations")  # the console learns the admin's tenant from its listing
        page = await (await client.get("/analytics?range=24h")).text()
        asked = fake.asked_analytics
        assert asked.tenant_id == "acme" and asked.bucket_s == 3600
        assert asked.until.seconds - asked.since.seconds == 86400
        assert 'data-count="sessions_started">40<' in page
        assert 'data-edge="greet>take_order"' in page and 'data-edge="confirm>take_order"' in page
        assert 'data-state="ordered"' in page and "25 (" not in page  # no abandoned figure where none
        assert "2 abandoned" in page and "asked for a person" in page and "do you deliver" in page
        series = re.search(r'<script type="application/json" id="series-0">(.*?)</script>', page, re.S)
        assert series and len(json.loads(series.group(1))["t"]) == 24

    with_console(check, FakeAdmin(pizza_report()))


def test_the_tail_is_sent_as_server_sent_events_and_an_open_one_does_not_hold_up_a_stop() -> None:
    async def check(client: TestClient[Any, Any], fake: FakeAdmin) -> None:
        await sign_in(client, OPERATOR)
        stream = await client.get("/events/stream?type=turn")
        assert stream.headers["Content-Type"] == "text/event-stream"
        lines: list[str] = []
        while not any(line.startswith("data:") for line in lines):
            lines.append((await stream.content.readline()).decode())
        event = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
        assert (event["conversation"], event["summary"]) == ("c-1", "state menu; intent hours")
        started = time.monotonic()
        await client.server.close()  # as SIGTERM stops the console, with the stream still open
        assert time.monotonic() - started < 5.0

    with_console(check)


def test_whether_the_server_fills_the_webhook_fields_is_learned_from_a_listing_that_shows_it() -> None:
    class Listing:
        def __init__(self) -> None:
            self.pages: list[list[admin.ConversationSummary]] = []

        async def ListConversations(self, request: Any, **_: Any) -> admin.ListConversationsResponse:
            return admin.ListConversationsResponse(conversations=self.pages.pop(0))

    async def check() -> None:
        backend = Backend(grpc.aio.insecure_channel("127.0.0.1:9"))  # never dialled: the stub is replaced
        listing = Listing()
        backend.admin = listing
        who = Credential("api_key", "k")
        listing.pages = [[], [summary("calm")], [summary("x", webhook="price")]]
        assert await backend.webhook_fields_served(who)  # nothing listed: nothing learned
        assert not await backend.webhook_fields_served(who)  # the filter let a calm one through
        assert not await backend.webhook_fields_served(who)  # remembered: not asked again
        assert listing.pages == [[summary("x", webhook="price")]]
        await backend.channel.close()

    asyncio.run(check())
