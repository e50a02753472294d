"""Limits of the gRPC edge: content sizes, concurrency caps, per-tenant rates, deadlines, message size.

Over any limit a request gets a clear status and changes no conversation. The
token bucket and the guard are tested in-process (deterministic); the
wiring through config, services, batches and streams against real servers.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from confab.grpc_edge import limits as limits_module
from confab.grpc_edge.access_log import AccessLog
from confab.grpc_edge.guards import GuardedRegistry
from confab.grpc_edge.limits import LimitsGuard, TenantRateLimiter
from confab.grpc_edge.metrics import RpcMetrics
from confab.grpc_edge.observe import ObserverGuard
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.config import ConfigError, load_config
from confab.runtime.errors import InvalidArgument, RateLimited
from tests.support import ServerProcess, message, pizza, pizza_server, state_request


def new_id() -> str:
    return f"conv-{uuid.uuid4().hex[:12]}"


def details_of(error: grpc.RpcError) -> list[object]:
    status = rpc_status.from_call(error)
    assert status is not None
    out: list[object] = []
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                unpacked = kind()
                detail.Unpack(unpacked)
                out.append(unpacked)
    return out


def reason_of(error: grpc.RpcError) -> str:
    info = next(d for d in details_of(error) if isinstance(d, error_details_pb2.ErrorInfo))
    reason: str = info.reason  # google.rpc has no type information: the field's type, from its proto
    return reason


def bad_fields(error: grpc.RpcError) -> list[str]:
    return [
        v.field
        for d in details_of(error)
        if isinstance(d, error_details_pb2.BadRequest)
        for v in d.field_violations
    ]


def retry_delay_s(error: grpc.RpcError) -> float:
    retry = next(d for d in details_of(error) if isinstance(d, error_details_pb2.RetryInfo))
    return float(retry.retry_delay.ToNanoseconds()) / 1e9


def message_count(stub: pb_grpc.MCPEngineStub, conversation: str, tenant: str = "acme") -> int:
    """Messages the conversation applied; 0 when it was never created."""
    try:
        reply = stub.GetConversationState(state_request(conversation, tenant))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        return 0
    return int(reply.conversation_state.message_count)


def init(conversation: str, tenant: str = "acme") -> pb.ConversationStreamRequest:
    return pb.ConversationStreamRequest(
        init=pb.StreamInit(tenant_context={"tenant_id": tenant}, conversation_id=conversation)
    )


# The token bucket ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TenantRateLimiter(2.0, 5, clock=clock)
    for _ in range(5):
        bucket.charge("a")
    with pytest.raises(RateLimited) as caught:
        bucket.charge("a")
    assert caught.value.retry_after_s == pytest.approx(0.5)
    bucket.charge("b")  # another tenant has its own bucket
    clock.now += 0.5
    bucket.charge("a")  # one token came back
    with pytest.raises(RateLimited):
        bucket.charge("a")
    clock.now += 3600
    for _ in range(5):  # saved up to the burst, never beyond
        bucket.charge("a")
    with pytest.raises(RateLimited):
        bucket.charge("a")


def test_bucket_charges_all_or_nothing() -> None:
    clock = Clock()
    bucket = TenantRateLimiter(1.0, 10, clock=clock)
    bucket.charge("a", 8)
    with pytest.raises(RateLimited) as caught:
        bucket.charge_all({"b": 5, "a": 5})  # b could pay, a cannot
    assert caught.value.retry_after_s == pytest.approx(3.0)
    bucket.charge("b", 10)  # b paid nothing above
    bucket.charge("a", 2)  # nor did a
    with pytest.raises(RateLimited):
        bucket.charge("a", 1)


def test_a_charge_larger_than_the_burst_is_invalid_not_retryable() -> None:
    bucket = TenantRateLimiter(100.0, 10, clock=Clock())
    with pytest.raises(InvalidArgument) as caught:
        bucket.charge("a", 11)
    assert caught.value.field == "messages"
    bucket.charge("a", 10)


def test_rate_zero_is_off_and_keeps_no_buckets() -> None:
    bucket = TenantRateLimiter(0.0, 1, clock=Clock())
    for i in range(1000):
        bucket.charge(f"t{i}", 50)
    assert bucket.tenants == 0 and not bucket.enabled


def test_bucket_table_forgets_idle_tenants_and_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    bucket = TenantRateLimiter(10.0, 20, clock=clock)
    for i in range(500):
        bucket.charge(f"t{i}", 20)
    assert bucket.tenants == 500
    clock.now += 1.9  # not yet full again: still remembered
    bucket.charge("fresh")
    assert bucket.tenants == 501
    clock.now += 0.1  # 2 s = burst / rate: every old bucket is full, as good as new
    bucket.charge("t0", 20)
    assert bucket.tenants == 2  # "fresh" (0.1 s idle) and t0
    monkeypatch.setattr(limits_module, "MAX_BUCKETS", 50)
    for i in range(200):
        bucket.charge(f"u{i}")
    assert bucket.tenants == 50


def test_limits_config_is_validated(tmp_path: Path) -> None:
    assert load_config().limits.tenant_rate_per_s == 0.0  # off by default
    for key, value in [
        ("limits.max_text_chars", 0),
        ("limits.max_payload_chars", 0),
        ("limits.max_concurrent_streams", 0),
        ("limits.max_in_flight_rpcs", 0),
        ("limits.tenant_rate_per_s", -1.0),
        ("limits.tenant_burst", 0),
    ]:
        overrides: dict[str, Any] = {key: value}
        with pytest.raises(ConfigError, match=key):
            load_config(None, **overrides)


# The guard, in-process with a real grpc.aio server -----------------------------


LimitTest = Callable[[grpc.aio.Channel, asyncio.Event], Awaitable[None]]


async def _with_limited_server(test: LimitTest) -> None:
    """Run ``test(channel, release)`` against a server whose methods wait for ``release``."""
    release = asyncio.Event()

    async def slow(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await release.wait()
        return b"done"

    async def stream(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        yield b"open"
        await release.wait()

    server = grpc.aio.server()
    services = GuardedRegistry(
        server,
        [
            ObserverGuard(RpcMetrics(), AccessLog()),
            LimitsGuard(max_in_flight_rpcs=2, max_concurrent_streams=1),
        ],
    )
    services.add_registered_method_handlers(
        "test.Slow",
        {
            "Call": grpc.unary_unary_rpc_method_handler(slow),
            "Stream": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    services.add_registered_method_handlers(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(slow)}
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await test(channel, release)
    finally:
        release.set()
        await server.stop(None)


def test_the_guard_rejects_calls_and_streams_over_the_caps_at_once() -> None:
    async def test(channel: grpc.aio.Channel, release: asyncio.Event) -> None:
        call: Any = channel.unary_unary("/test.Slow/Call")
        stream: Any = channel.stream_stream("/test.Slow/Stream")
        health: Any = channel.unary_unary("/grpc.health.v1.Health/Check")
        held = [call(b"") for _ in range(2)]
        open_stream = stream(iter([b""]))
        assert await open_stream.read() == b"open"
        await asyncio.sleep(0.1)  # both unary calls are now inside their handlers

        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"")
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "calls in flight (limit 2)" in (caught.value.details() or "")
        assert time.monotonic() - started < 1.0  # answered, not queued
        second_stream = stream(iter([b""]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await second_stream.read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "open streams (limit 1)" in (caught.value.details() or "")

        exempt = [health(b"") for _ in range(5)]  # health is never limited
        release.set()
        assert await asyncio.gather(*held, *exempt) == [b"done"] * 7
        assert await open_stream.read() == grpc.aio.EOF
        # Slots come back when calls end: the same caps admit new calls.
        assert list(await asyncio.gather(call(b""), call(b""))) == [b"done", b"done"]
        another = stream(iter([b""]))
        assert await another.read() == b"open"
        assert await another.read() == grpc.aio.EOF

    asyncio.run(_with_limited_server(test))


# Real servers ------------------------------------------------------------------------


LIMITED_CONFIG = """
server:
  max_message_bytes: 65536
engine:
  max_commands_per_batch: 1      # slow shards: concurrent calls really overlap
limits:
  max_text_chars: 100
  max_payload_chars: 200
  max_concurrent_streams: 2
  max_in_flight_rpcs: 4
  tenant_rate_per_s: 2.0
  tenant_burst: 10
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("limited")
    config = root / "confab.yaml"
    config.write_text(LIMITED_CONFIG, encoding="utf-8")
    server = ServerProcess(root / "data", extra=["--config", str(config)]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stub(limited: ServerProcess) -> Iterator[pb_grpc.MCPEngineStub]:
    with limited.channel() as channel:
        yield pb_grpc.MCPEngineStub(channel)


@pytest.mark.integration
def test_text_and_payload_lengths_are_limited_and_name_the_field(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    too_long = [({"text": "x" * 101}, "content.text"), ({"payload": "p" * 201}, "content.payload")]
    for content, field in too_long:
        request = message(conversation, "")
        request.content.CopyFrom(pb.MessageContent(**content))  # type: ignore[arg-type]
        with pytest.raises(grpc.RpcError) as caught:
            stub.ProcessMessage(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(caught.value) == [field]
        assert "x" * 50 not in (caught.value.details() or "")  # the content is not echoed
    assert message_count(stub, conversation) == 0
    # Characters, not bytes: 100 two-byte characters are within the limit.
    assert stub.ProcessMessage(message(conversation, "é" * 100)).status.success
    assert message_count(stub, conversation) == 1


@pytest.mark.integration
def test_length_limits_apply_to_batch_items_and_stream_messages(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    batch = stub.BatchProcessMessages(
        pb.BatchProcessMessagesRequest(
            tenant_context={"tenant_id": "acme-lengths"},
            messages=[message(conversation, "ok", tenant=""), message(conversation, "y" * 101, tenant="")],
        )
    )
    assert (batch.successful_count, batch.failed_count) == (1, 1)
    assert batch.responses[1].status.details["field"] == "messages[1].content.text"
    replies = list(
        stub.StreamConversation(
            iter(
                [
                    init(conversation, "acme-lengths"),
                    pb.ConversationStreamRequest(message=message(conversation, "z" * 101, tenant="")),
                    pb.ConversationStreamRequest(message=message(conversation, "fine", tenant="")),
                    pb.ConversationStreamRequest(close=pb.StreamClose()),
                ]
            )
        )
    )
    errors = [r.error for r in replies if r.HasField("error")]
    assert [(e.error_code, e.recoverable) for e in errors] == [("INVALID_ARGUMENT", True)]
    assert "message.content.text" in errors[0].message
    assert message_count(stub, conversation, "acme-lengths") == 2


@pytest.mark.integration
def test_oversized_message_is_resource_exhausted_and_the_server_keeps_serving(
    stub: pb_grpc.MCPEngineStub,
) -> None:
    conversation = new_id()
    with pytest.raises(grpc.RpcError) as caught:
        stub.ProcessMessage(message(conversation, "x" * 100_000))  # > server.max_message_bytes
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.ProcessMessage(message(conversation, "small")).conversation_state.message_count == 1


@pytest.mark.integration
def test_too_many_calls_in_flight_are_rejected_and_change_nothing(stub: pb_grpc.MCPEngineStub) -> None:
    rejected = 0
    for _ in range(5):  # a burst nearly always overlaps; a few rounds make it certain
        # A tenant per call: the rate limit is not what this test is about.
        calls = [(f"burst-{uuid.uuid4().hex[:8]}", new_id()) for _ in range(40)]
        futures = [stub.ProcessMessage.future(message(c, "hi", tenant=t)) for t, c in calls]
        turned_away = []
        for call, future in zip(calls, futures, strict=True):
            try:
                assert future.result().conversation_state.message_count == 1
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert reason_of(exc) == "OVERLOADED"
                turned_away.append(call)
        # Checked once the burst is over (these checks are calls too).
        for tenant, conversation in turned_away:
            assert message_count(stub, conversation, tenant) == 0
        rejected += len(turned_away)
        if rejected:
            break
    assert rejected


@pytest.mark.integration
def test_streams_over_the_cap_are_rejected_until_one_closes(limited: ServerProcess) -> None:
    with limited.channel() as channel:
        stub = pb_grpc.MCPEngineStub(channel)
        gates = [threading.Event() for _ in range(2)]

        def held_open(gate: threading.Event, conversation: str) -> Iterator[pb.ConversationStreamRequest]:
            yield init(conversation, "acme-streams")
            gate.wait(10)

        open_streams = [stub.StreamConversation(held_open(g, new_id())) for g in gates]
        for stream in open_streams:
            assert next(stream).HasField("ack")
        with pytest.raises(grpc.RpcError) as caught:
            next(stub.StreamConversation(iter([init(new_id(), "acme-streams")])))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(caught.value) == "OVERLOADED"
        gates[0].set()
        assert list(open_streams[0]) == []
        replies = list(stub.StreamConversation(iter([init(new_id(), "acme-streams")])))
        assert replies[0].HasField("ack")
        gates[1].set()
        assert list(open_streams[1]) == []


@pytest.mark.integration
def test_tenant_rate_limit_per_message_unary(stub: pb_grpc.MCPEngineStub) -> None:
    conversation, tenant = new_id(), f"rate-{uuid.uuid4().hex[:8]}"
    ok = 0
    for _ in range(15):
        try:
            stub.ProcessMessage(message(conversation, "hi", tenant=tenant))
            ok += 1
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert reason_of(exc) == "RATE_LIMITED"
            assert 0 < retry_delay_s(exc) <= 0.5  # one token at 2/s
            break
    assert 10 <= ok <= 11  # the burst (plus what trickled in meanwhile), then no more
    assert message_count(stub, conversation, tenant) == ok
    other = f"rate-{uuid.uuid4().hex[:8]}"  # other tenants are not affected
    assert stub.ProcessMessage(message(new_id(), "hi", tenant=other)).status.success


@pytest.mark.integration
def test_tenant_rate_limit_rejects_a_batch_that_does_not_fit_whole(stub: pb_grpc.MCPEngineStub) -> None:
    conversation, tenant = new_id(), f"rate-{uuid.uuid4().hex[:8]}"

    def batch(n: int) -> pb.BatchProcessMessagesRequest:
        return pb.BatchProcessMessagesRequest(
            tenant_context={"tenant_id": tenant},
            messages=[message(conversation, f"m{i}", tenant="") for i in range(n)],
            parallel_processing=True,
        )

    with pytest.raises(grpc.RpcError) as caught:
        stub.BatchProcessMessages(batch(11))  # more than the burst: never fits
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == ["messages"]
    assert stub.BatchProcessMessages(batch(8)).successful_count == 8
    with pytest.raises(grpc.RpcError) as caught:
        stub.BatchProcessMessages(batch(5))  # ~2 tokens left
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(caught.value) == "RATE_LIMITED"
    assert 1.0 <= retry_delay_s(caught.value) <= 1.5
    assert message_count(stub, conversation, tenant) == 8  # nothing of the rejected batch ran


@pytest.mark.integration
def test_tenant_rate_limit_in_a_stream_is_a_recoverable_error(stub: pb_grpc.MCPEngineStub) -> None:
    conversation, tenant = new_id(), f"rate-{uuid.uuid4().hex[:8]}"
    requests = [
        init(conversation, tenant),
        *[pb.ConversationStreamRequest(message=message(conversation, f"s{i}", tenant="")) for i in range(14)],
        pb.ConversationStreamRequest(heartbeat=pb.StreamHeartbeat()),
        pb.ConversationStreamRequest(close=pb.StreamClose()),
    ]
    replies = list(stub.StreamConversation(iter(requests)))
    answered = [r for r in replies if r.HasField("message_response")]
    limited = [r.error for r in replies if r.HasField("error")]
    assert 10 <= len(answered) <= 11 and len(answered) + len(limited) == 14
    assert all(e.error_code == "RATE_LIMITED" and e.recoverable for e in limited)
    assert "retry in" in limited[0].message
    assert any(r.HasField("event") and r.event.event_type == "heartbeat" for r in replies)  # it went on
    assert message_count(stub, conversation, tenant) == len(answered)


# Deadlines ---------------------------------------------------------------------------


@pytest.mark.integration
def test_a_request_whose_deadline_passes_while_it_waits_for_its_conversation_is_never_run(
    tmp_path: Path,
) -> None:
    # The conversation's turn waits 1.5 s for the price webhook; messages for it meanwhile wait
    # in its mailbox, with deadlines much shorter than that.
    with pizza_server(tmp_path, timeout_s=5.0) as (server, prices), server.channel() as channel:
        stub = pb_grpc.MCPEngineStub(channel)
        stub.ProcessMessage(pizza("queued", "hi"))
        prices.delay_s = 1.5
        pricing = stub.ProcessMessage.future(pizza("queued", "2 large pizzas"))
        time.sleep(0.2)  # the turn is waiting for its webhook now
        behind = [stub.ProcessMessage.future(pizza("queued", "yes"), timeout=0.3) for _ in range(5)]
        codes = []
        for future in behind:
            try:
                future.result()
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
        assert codes == ["DEADLINE_EXCEEDED"] * 5
        assert pricing.result().current_state == "confirm"
        time.sleep(0.3)  # the mailbox has drained by now
        # None of the five ran late: the conversation counts "hi" and the order only.
        assert message_count(stub, "queued") == 2
