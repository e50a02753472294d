"""Every MCPEngine RPC against a real server with real shard processes."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2 as std_health_pb2
from grpc_health.v1 import health_pb2_grpc as std_health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from confab.protos import common_pb2 as common
from confab.protos import health_pb2, health_pb2_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from tests.support import ServerProcess, message, state_request, status_details

pytestmark = pytest.mark.integration  # every test here starts a server or a process


def new_id() -> str:
    return f"conv-{uuid.uuid4().hex[:12]}"


def field_violations(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


def test_process_message_answers_with_everything(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    first = stub.ProcessMessage(message(conversation, "hello there"))
    assert first.status.success
    assert first.conversation_id == conversation
    assert first.current_state == "chatting"
    assert "hello there" in first.response.text
    assert first.response.quick_replies[0].payload == "hi"
    assert first.context_updates["last_message"] == "hello there"
    assert list(first.actions_performed) == ["greet", "echo"]
    state = first.conversation_state
    assert (state.flow_id, state.message_count, list(state.previous_states)) == ("echo", 1, ["start"])
    assert state.created_at.seconds > 0 and state.last_activity.seconds >= state.created_at.seconds
    assert len(first.metadata.request_id) == 32
    assert first.metadata.timestamp.seconds > 0
    assert first.metadata.processing_time_ms >= 0

    second = stub.ProcessMessage(message(conversation, "again"))
    assert second.conversation_state.message_count == 2
    assert list(second.actions_performed) == ["echo"]
    assert second.metadata.request_id != first.metadata.request_id


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.tenant_context.ClearField("tenant_id"), "tenant_context.tenant_id"),
        (lambda r: r.ClearField("conversation_id"), "conversation_id"),
        (lambda r: r.ClearField("user_id"), "user_id"),
        (lambda r: r.ClearField("content"), "content"),
        (lambda r: setattr(r, "conversation_id", "c" * 10_254), "conversation_id"),
        (lambda r: setattr(r.tenant_context, "tenant_id", "t" * 129), "tenant_context.tenant_id"),
        (lambda r: setattr(r, "user_id", "u\n" * 3), "user_id"),
        (lambda r: setattr(r, "session_id", "s" * 200), "session_id"),
        (lambda r: setattr(r, "channel", 99), "channel"),
    ],
)
def test_invalid_process_message_names_the_field(
    stub: pb_grpc.MCPEngineStub, mutate: Callable[[pb.ProcessMessageRequest], object], field: str
) -> None:
    request = message(new_id(), "hi")
    mutate(request)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ProcessMessage(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")
    assert field_violations(caught.value) == [field]
    if request.conversation_id and request.tenant_context.tenant_id == "acme":  # nothing was stored
        with pytest.raises(grpc.RpcError) as lookup:
            stub.GetConversationState(state_request(request.conversation_id))
        assert lookup.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


def test_payload_alone_is_enough(stub: pb_grpc.MCPEngineStub) -> None:
    request = pb.ProcessMessageRequest(
        tenant_context={"tenant_id": "acme"},
        conversation_id=new_id(),
        user_id="u",
        content={"payload": "BUY"},
    )
    assert "BUY" in stub.ProcessMessage(request).response.text


def test_get_and_reset_unknown_conversation_is_not_found(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    lookups: list[Callable[[], object]] = [
        lambda: stub.GetConversationState(state_request(conversation)),
        lambda: stub.ResetConversation(
            pb.ResetConversationRequest(tenant_context={"tenant_id": "acme"}, conversation_id=conversation)
        ),
    ]
    for call in lookups:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # Looking did not create it.
    with pytest.raises(grpc.RpcError):
        stub.GetConversationState(state_request(conversation))


def test_reset_returns_previous_state_and_restarts_the_flow(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    stub.ProcessMessage(message(conversation, "one"))
    stub.ProcessMessage(message(conversation, "two"))
    reset = stub.ResetConversation(
        pb.ResetConversationRequest(
            tenant_context={"tenant_id": "acme"}, conversation_id=conversation, reason="test"
        )
    )
    assert reset.status.success and reset.conversation_id == conversation
    assert reset.previous_state == "chatting"
    state = stub.GetConversationState(state_request(conversation)).conversation_state
    assert (state.current_state, state.message_count) == ("start", 0)
    assert stub.ProcessMessage(message(conversation, "three")).conversation_state.message_count == 1


def test_sixty_concurrent_messages_to_one_conversation_run_one_at_a_time(
    stub: pb_grpc.MCPEngineStub,
) -> None:
    conversation = new_id()
    futures = [stub.ProcessMessage.future(message(conversation, f"m{i}")) for i in range(60)]
    counts = sorted(f.result().conversation_state.message_count for f in futures)
    assert counts == list(range(1, 61))
    state = stub.GetConversationState(state_request(conversation)).conversation_state
    assert state.message_count == 60


def test_tenants_are_isolated(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    stub.ProcessMessage(message(conversation, "a1", tenant="tenant-a"))
    stub.ProcessMessage(message(conversation, "a2", tenant="tenant-a"))
    b = stub.ProcessMessage(message(conversation, "b1", tenant="tenant-b"))
    assert b.conversation_state.message_count == 1
    state_a = stub.GetConversationState(state_request(conversation, "tenant-a")).conversation_state
    state_b = stub.GetConversationState(state_request(conversation, "tenant-b")).conversation_state
    assert (state_a.message_count, state_a.variables["last_message"]) == (2, "a2")
    assert (state_b.message_count, state_b.variables["last_message"]) == (1, "b1")
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetConversationState(state_request(conversation, "tenant-c"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_parallel_batch_keeps_order_per_conversation(stub: pb_grpc.MCPEngineStub) -> None:
    conversations = [new_id() for _ in range(5)]
    items = [message(conversations[i % 5], f"m{i}") for i in range(200)]
    request = pb.BatchProcessMessagesRequest(
        tenant_context={"tenant_id": "acme"}, messages=items, parallel_processing=True, max_concurrency=3
    )
    response = stub.BatchProcessMessages(request)
    assert (response.successful_count, response.failed_count) == (200, 0)
    assert response.status.success
    counts: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(response.responses):
        assert item.conversation_id == conversations[i % 5]
        assert item.response.text.endswith(f"m{i}")  # responses[i] answers messages[i]
        counts[item.conversation_id].append(item.conversation_state.message_count)
    for conversation in conversations:
        assert counts[conversation] == list(range(1, 41))


def test_sequential_batch_and_a_bad_item_that_fails_alone(stub: pb_grpc.MCPEngineStub) -> None:
    good, unknown_tenant = new_id(), new_id()
    items = [
        message(good, "first"),
        pb.ProcessMessageRequest(conversation_id="no-user", content={"text": "x"}),  # no user_id
        message(good, "second"),
        pb.ProcessMessageRequest(user_id="u", content={"text": "x"}),  # no conversation_id
    ]
    request = pb.BatchProcessMessagesRequest(tenant_context={"tenant_id": "acme"}, messages=items)
    response = stub.BatchProcessMessages(request)
    assert (response.successful_count, response.failed_count) == (2, 2)
    assert not response.status.success
    ok1, bad1, ok2, bad2 = response.responses
    assert (ok1.conversation_state.message_count, ok2.conversation_state.message_count) == (1, 2)
    assert bad1.conversation_id == "no-user" and bad1.status.error_code == "INVALID_ARGUMENT"
    assert bad1.status.details["field"] == "messages[1].user_id"
    assert bad2.status.details["field"] == "messages[3].conversation_id"
    assert not bad1.status.success
    del unknown_tenant


def test_batch_larger_than_the_limit_is_rejected_whole(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    request = pb.BatchProcessMessagesRequest(
        tenant_context={"tenant_id": "acme"}, messages=[message(conversation, "x")] * 1001
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.BatchProcessMessages(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError):  # nothing of it was applied
        stub.GetConversationState(state_request(conversation))


def stream_request(**kwargs: object) -> pb.ConversationStreamRequest:
    return pb.ConversationStreamRequest(**kwargs)  # type: ignore[arg-type]


def test_stream_conversation(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    requests = [
        stream_request(message=pb.ProcessMessageRequest(user_id="u", content={"text": "too early"})),
        stream_request(
            init=pb.StreamInit(tenant_context={"tenant_id": "acme"}, conversation_id=conversation)
        ),
        *[stream_request(message=message(conversation, f"s{i}")) for i in range(5)],
        stream_request(message=message(new_id(), "elsewhere")),
        stream_request(heartbeat=pb.StreamHeartbeat()),
        stream_request(message=pb.ProcessMessageRequest(user_id="u", content={"text": "short form"})),
        stream_request(close=pb.StreamClose(reason="done")),
    ]
    responses = list(stub.StreamConversation(iter(requests)))
    kinds = [r.WhichOneof("response_type") for r in responses]
    assert kinds[0] == "error" and responses[0].error.error_code == "STREAM_NOT_INITIALIZED"
    assert responses[0].error.recoverable
    assert kinds[1] == "ack" and responses[1].ack.stream_id
    texts = [r.message_response.response.text for r in responses if r.HasField("message_response")]
    assert texts == ["Hello! You said: s0", *[f"You said: s{i}" for i in range(1, 5)], "You said: short form"]
    counts = [
        r.message_response.conversation_state.message_count
        for r in responses
        if r.HasField("message_response")
    ]
    assert counts == [1, 2, 3, 4, 5, 6]
    errors = [r.error for r in responses if r.HasField("error")]
    assert [e.error_code for e in errors] == ["STREAM_NOT_INITIALIZED", "CONVERSATION_MISMATCH"]
    events = [r.event for r in responses if r.HasField("event")]
    assert [e.event_type for e in events] == ["state_changed", "heartbeat", "stream_closed"]
    assert dict(events[0].event_data) == {"from": "", "to": "chatting"}
    assert kinds.index("event") == kinds.index("message_response") + 1  # right after the turn that moved
    assert events[2].event_data["reason"] == "done"


def test_stream_cancelled_by_the_client_leaves_the_server_serving(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    release = threading.Event()

    def requests() -> Iterator[pb.ConversationStreamRequest]:
        yield stream_request(
            init=pb.StreamInit(tenant_context={"tenant_id": "acme"}, conversation_id=conversation)
        )
        yield stream_request(message=message(conversation, "before cancel"))
        release.wait(10)

    call = stub.StreamConversation(requests())
    assert next(call).HasField("ack")
    assert next(call).HasField("message_response")
    call.cancel()
    release.set()
    assert stub.ProcessMessage(message(conversation, "after")).conversation_state.message_count == 2


def test_health_check(stub: pb_grpc.MCPEngineStub) -> None:
    response = stub.HealthCheck(empty_pb2.Empty())
    assert response.status == common.HEALTH_SERVING
    assert response.service_name == "mcp.engine.v2.MCPEngine" and response.version
    assert response.details["shards"] == 2


def test_get_metrics_reports_real_traffic(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    for i in range(3):
        stub.ProcessMessage(message(conversation, f"x{i}"))
    with pytest.raises(grpc.RpcError):
        stub.GetConversationState(state_request(new_id()))
    response = stub.GetMetrics(
        pb.GetMetricsRequest(metric_names=["confab.rpc.requests", "confab.rpc.duration"], granularity="1h")
    )
    assert [m.name for m in response.metrics] == ["confab.rpc.requests", "confab.rpc.duration"]
    assert [m.type for m in response.metrics] == ["counter", "histogram"]
    by_key: dict[tuple[str, str], float] = defaultdict(float)
    for point in response.metrics[0].points:
        by_key[(point.attributes["method"], point.attributes["code"])] += point.value
    assert by_key[("/mcp.engine.v2.MCPEngine/ProcessMessage", "OK")] >= 3
    assert by_key[("/mcp.engine.v2.MCPEngine/GetConversationState", "NOT_FOUND")] >= 1
    assert all(p.value > 0 for p in response.metrics[1].points)
    assert {p.attributes["stat"] for p in response.metrics[1].points} == {"mean", "p50", "p99"}
    # The names GetMetrics had before are still accepted, and answered under the new ones.
    old = stub.GetMetrics(pb.GetMetricsRequest(metric_names=["rpc.requests", "rpc.latency.p99_ms"]))
    assert [m.name for m in old.metrics] == ["confab.rpc.requests", "confab.rpc.duration"]

    everything = stub.GetMetrics(pb.GetMetricsRequest())
    names = {m.name for m in everything.metrics}
    assert {
        "confab.rpc.in_flight",
        "confab.shard.resident_conversations",
        "confab.link.commands_per_batch",
    } <= names
    resident = next(m for m in everything.metrics if m.name == "confab.shard.resident_conversations")
    assert sum(p.value for p in resident.points) >= 1

    with pytest.raises(grpc.RpcError) as caught:
        stub.GetMetrics(pb.GetMetricsRequest(metric_names=["no.such.metric"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    future = pb.GetMetricsRequest(metric_names=["rpc.requests"])
    future.start_time.GetCurrentTime()
    future.start_time.seconds += 3600
    future.end_time.seconds = future.start_time.seconds + 60
    assert not stub.GetMetrics(future).metrics[0].points


def test_reflection_lists_every_service(server: ServerProcess) -> None:
    with server.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(stub.ServerReflectionInfo(iter([request])))
        names = {s.name for s in answer.list_services_response.service}
        assert {
            "mcp.engine.v2.MCPEngine",
            "confab.admin.v1.Admin",
            "mcp.health.v2.Health",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= names
        by_symbol = reflection_pb2.ServerReflectionRequest(file_containing_symbol="mcp.engine.v2.MCPEngine")
        (answer,) = list(stub.ServerReflectionInfo(iter([by_symbol])))
        assert answer.file_descriptor_response.file_descriptor_proto


def test_reflection_v1_is_served_too(server: ServerProcess) -> None:
    # Tools that speak only grpc.reflection.v1 call it by that name; its messages are v1alpha's.
    with server.channel() as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="grpc.reflection.v1.ServerReflection"
            ),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="confab.admin.v1.Admin"),
        ]
        listed, itself, admin = list(call(iter(requests), timeout=10))
        names = {s.name for s in listed.list_services_response.service}
        assert {"grpc.reflection.v1.ServerReflection", "mcp.engine.v2.MCPEngine"} <= names
        assert itself.file_descriptor_response.file_descriptor_proto
        assert admin.file_descriptor_response.file_descriptor_proto


def test_standard_and_v2_health(server: ServerProcess) -> None:
    with server.channel() as channel:
        standard = std_health_pb2_grpc.HealthStub(channel)
        for service in ("", "mcp.engine.v2.MCPEngine"):
            reply = standard.Check(std_health_pb2.HealthCheckRequest(service=service))
            assert reply.status == std_health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            standard.Check(std_health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

        v2 = health_pb2_grpc.HealthStub(channel)
        assert v2.Check(health_pb2.HealthCheckRequest(service="")).status == common.HEALTH_SERVING
        unknown = v2.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert unknown.status == common.HEALTH_SERVICE_UNKNOWN
        watch = v2.Watch(health_pb2.HealthCheckRequest(service="mcp.health.v2.Health"))
        assert next(watch).status == common.HEALTH_SERVING
        watch.cancel()

        detailed = v2.GetDetailedHealth(
            health_pb2.DetailedHealthRequest(include_dependencies=True, include_metrics=True)
        )
        assert detailed.status == common.HEALTH_SERVING
        names = [d.name for d in detailed.dependencies]
        assert names == ["actor_system", "shard-0", "shard-1", "store", "cluster"]
        assert all(d.status == common.HEALTH_SERVING and d.last_check.seconds for d in detailed.dependencies)
        usage = detailed.resource_usage
        assert usage.memory_used_bytes > 10_000_000 and usage.memory_total_bytes > usage.memory_used_bytes
        assert usage.active_connections >= 1 and usage.goroutines >= 2
        assert detailed.metrics["rpc_in_flight"] >= 1
        pids = {int(s["pid"]) for s in detailed.details["shard_detail"]}
        assert len(pids) == 2 and server.pid not in pids
        bare = v2.GetDetailedHealth(health_pb2.DetailedHealthRequest())
        assert not bare.dependencies and not bare.metrics.fields


def test_a_method_a_service_leaves_out_is_unimplemented(server: ServerProcess) -> None:
    # grpcio-health-checking's servicer leaves List to its generated base, which raises
    # NotImplementedError: that is a method this server does not serve, not a bug in it.
    with server.channel() as channel:
        standard = std_health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            standard.List(std_health_pb2.HealthListRequest())
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert status_details(caught.value) == ("UNIMPLEMENTED", [])
        assert "request_id" not in (caught.value.details() or "")  # not the opaque INTERNAL of a bug
        reply = standard.Check(std_health_pb2.HealthCheckRequest(service=""))
        assert reply.status == std_health_pb2.HealthCheckResponse.SERVING
    assert not [line for line in server.output if "NotImplementedError" in line]  # nothing logged as a bug


def test_coalesced_requests_get_their_own_replies(stub: pb_grpc.MCPEngineStub) -> None:
    conversations = [new_id() for _ in range(50)]
    requests = [message(conversations[i % 50], f"unique-{i}") for i in range(500)]
    futures = [stub.ProcessMessage.future(r) for r in requests]
    counts: dict[str, list[int]] = defaultdict(list)
    for request, future in zip(requests, futures, strict=True):
        reply = future.result()
        assert reply.conversation_id == request.conversation_id
        assert reply.response.text.endswith(request.content.text)  # this request's own answer
        counts[reply.conversation_id].append(reply.conversation_state.message_count)
    assert all(sorted(c) == list(range(1, 11)) for c in counts.values())
    largest = stub.GetMetrics(pb.GetMetricsRequest(metric_names=["confab.link.largest_batch"])).metrics[0]
    assert max(p.value for p in largest.points) > 1  # requests really did share Thespian messages


def test_pipelined_stream_is_answered_in_order(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    requests = [
        stream_request(
            init=pb.StreamInit(tenant_context={"tenant_id": "acme"}, conversation_id=conversation)
        ),
        *[stream_request(message=message(conversation, f"p{i}")) for i in range(100)],
        stream_request(close=pb.StreamClose()),
    ]
    replies = [
        r.message_response for r in stub.StreamConversation(iter(requests)) if r.HasField("message_response")
    ]
    assert [r.conversation_state.message_count for r in replies] == list(range(1, 101))
    assert [r.response.text.rsplit(" ", 1)[-1] for r in replies] == [f"p{i}" for i in range(100)]
