"""What docs/api.md promises that other tests do not show already, against a real server."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from tests.support import ServerProcess, message, status_details

pytestmark = pytest.mark.integration  # every test here talks to a real server


def new_id() -> str:
    return f"api-{uuid.uuid4().hex[:12]}"


def refused(call: Callable[..., object], *args: object) -> tuple[grpc.StatusCode, str, list[str]]:
    """How ``call(*args)`` failed: its code, its ErrorInfo reason and the fields it names."""
    with pytest.raises(grpc.RpcError) as caught:
        call(*args)
    return (caught.value.code(), *status_details(caught.value))


def test_a_batch_item_fails_alone_and_says_why(stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    no_user = message(conversation, "who")
    no_user.ClearField("user_id")
    inherits = message(conversation, "mine")
    inherits.ClearField("tenant_context")  # the batch's tenant is its tenant
    batch = stub.BatchProcessMessages(
        pb.BatchProcessMessagesRequest(tenant_context={"tenant_id": "acme"}, messages=[inherits, no_user])
    )
    assert (batch.successful_count, batch.failed_count) == (1, 1)
    assert not batch.status.success and batch.status.message == "1 processed, 1 failed"
    ok, failed = batch.responses
    assert ok.status.success and ok.conversation_state.message_count == 1
    assert failed.conversation_id == conversation and not failed.status.success
    assert failed.status.error_code == "INVALID_ARGUMENT"
    assert failed.status.message == "messages[1].user_id is required"
    assert failed.status.details["field"] == "messages[1].user_id"

    negative = pb.BatchProcessMessagesRequest(tenant_context={"tenant_id": "acme"}, max_concurrency=-1)
    assert refused(stub.BatchProcessMessages, negative) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        ["max_concurrency"],
    )


def test_a_response_names_the_server_s_request_id_not_the_client_s_key(stub: pb_grpc.MCPEngineStub) -> None:
    request = message(new_id(), "keyed")
    request.metadata.request_id = "client-key-1"
    reply = stub.ProcessMessage(request)
    assert reply.metadata.request_id != "client-key-1" and len(reply.metadata.request_id) == 32
    assert (reply.status.message, reply.performance_metrics.cache_status) == ("processed", "miss")


def test_get_metrics_refuses_what_it_does_not_know(stub: pb_grpc.MCPEngineStub) -> None:
    for request, field in (
        (pb.GetMetricsRequest(metric_names=["rpc.nope"]), "metric_names"),
        (pb.GetMetricsRequest(granularity="2m"), "granularity"),
        (pb.GetMetricsRequest(start_time={"seconds": 2_000_000_000}, end_time={"seconds": 1}), "start_time"),
    ):
        assert refused(stub.GetMetrics, request) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            [field],
        )


def test_admin_arguments_out_of_range_are_invalid(server: ServerProcess, stub: pb_grpc.MCPEngineStub) -> None:
    conversation = new_id()
    stub.ProcessMessage(message(conversation, "hi"))
    with server.channel() as channel:
        operator = admin_grpc.AdminStub(channel)
        for call, request, field in (
            (operator.ListConversations, admin.ListConversationsRequest(page_size=501), "page_size"),
            (operator.RestartShard, admin.ShardAction(shard=99), "shard"),
            (
                operator.ForceState,
                admin.ForceStateRequest(tenant_id="acme", conversation_id=conversation),
                "state",
            ),
        ):
            code, reason, fields = refused(call, request)
            assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", [field])
        tail = operator.TailEvents(admin.TailEventsRequest(event_types=["nope"]))
        assert refused(next, tail)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")

        stored = new_id()
        stub.ProcessMessage(message(stored, "hi"))
        action = admin.ConversationAction(tenant_id="acme", conversation_id=stored)
        assert operator.PassivateConversation(action).ok
        again = operator.PassivateConversation(action)
        assert not again.ok and again.message == "not resident"


def test_the_confab_call_examples_of_the_docs_run_as_written(server: ServerProcess, tmp_path: Path) -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
    section = docs.split("## Calling it by hand", 1)[1]
    examples = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert examples.count("confab call") >= 5
    script = tmp_path / "examples.sh"
    # `confab` as the docs write it, pointed at this test's server instead of the default port.
    script.write_text(
        "set -euo pipefail\n"
        f'confab() {{ "{sys.executable}" -m confab.tools.cli "$1" --target {server.address} "${{@:2}}"; }}\n'
        "KEY=any-key-for-a-server-without-authentication\n" + examples,
        encoding="utf-8",
    )
    ran = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "mcp.engine.v2.MCPEngine/ProcessMessage" in ran.stdout  # --list
    assert '"status": "SERVING"' in ran.stdout and '"stream_closed"' in ran.stdout
