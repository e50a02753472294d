"""The Admin API is tenant-scoped: a tenant's admin sees and acts on its own tenant only.

Every admin RPC is tried with another tenant's admin key; the victim conversation
is read back unchanged after each. Cluster-wide views and actions need the
operator role, which belongs to no tenant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from confab.grpc_edge.auth import hash_api_key
from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from tests.support import ServerProcess, message, state_request

pytestmark = pytest.mark.integration  # every test here starts a server or a process

KEYS = {
    "admin-a": ("tenant-a", "[admin]"),
    "admin-b": ("tenant-b", "[admin]"),
    "app-a": ("tenant-a", "[]"),
    "operator": ("", "[operator]"),
}


def secret(name: str) -> str:
    return f"{name}-secret-for-tests-0123456789"


def as_(name: str) -> tuple[tuple[str, str]]:
    return (("x-api-key", secret(name)),)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("admin-tenants")
    entries = "".join(
        f"    - {{name: {name}, sha256: {hash_api_key(secret(name))}, tenant: '{tenant}', roles: {roles}}}\n"
        for name, (tenant, roles) in KEYS.items()
    )
    config = root / "confab.yaml"
    config.write_text("auth:\n  mode: required\n  api_keys:\n" + entries)
    process = ServerProcess(root / "data", shards=1, extra=["--config", str(config)]).start()
    try:
        with process.channel() as channel:
            engine = pb_grpc.MCPEngineStub(channel)
            engine.ProcessMessage(
                message("victim", "private words of A", tenant="tenant-a"), metadata=as_("app-a")
            )
        yield process
    finally:
        process.stop()


@pytest.fixture
def stubs(server: ServerProcess) -> Iterator[tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub]]:
    with server.channel() as channel:
        yield admin_grpc.AdminStub(channel), pb_grpc.MCPEngineStub(channel)


def victim_state(engine: pb_grpc.MCPEngineStub) -> Any:
    return engine.GetConversationState(state_request("victim", tenant="tenant-a"), metadata=as_("app-a"))


def denied(call: Callable[[], Any]) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()
    return caught.value.details() or ""


A_ACTION = admin.ConversationAction(tenant_id="tenant-a", conversation_id="victim", reason="x")


def test_every_conversation_rpc_with_another_tenants_admin_key_is_denied_and_changes_nothing(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
) -> None:
    stub, engine = stubs
    before = victim_state(engine).conversation_state
    b = as_("admin-b")
    attempts: list[Callable[[], Any]] = [
        lambda: stub.InspectConversation(
            admin.InspectConversationRequest(tenant_id="tenant-a", conversation_id="victim"), metadata=b
        ),
        lambda: stub.ResetConversation(A_ACTION, metadata=b),
        lambda: stub.ForceState(
            admin.ForceStateRequest(tenant_id="tenant-a", conversation_id="victim", state="start"), metadata=b
        ),
        lambda: stub.ResumeConversation(A_ACTION, metadata=b),
        lambda: stub.PassivateConversation(A_ACTION, metadata=b),
        lambda: stub.ListConversations(admin.ListConversationsRequest(tenant_id="tenant-a"), metadata=b),
        lambda: next(stub.TailEvents(admin.TailEventsRequest(tenant_id="tenant-a"), metadata=b)),
        lambda: stub.GetCluster(admin.GetClusterRequest(), metadata=b),
        lambda: stub.ReloadFlows(admin.ReloadFlowsRequest(), metadata=b),
        lambda: stub.RestartShard(admin.ShardAction(shard=0), metadata=b),
    ]
    for attempt in attempts:
        assert "private words" not in denied(attempt)
    after = victim_state(engine).conversation_state
    assert after == before  # same state, same count, same last activity: nothing happened
    # The same actions with A's own admin key go through.
    a = as_("admin-a")
    detail = stub.InspectConversation(
        admin.InspectConversationRequest(tenant_id="tenant-a", conversation_id="victim"), metadata=a
    )
    assert detail.last_turns[0].input == "private words of A"
    assert stub.PassivateConversation(A_ACTION, metadata=a).message


def test_lists_are_confined_to_the_admins_tenant(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
) -> None:
    stub, engine = stubs
    engine.ProcessMessage(message("own-b", "hello", tenant="tenant-b"), metadata=as_("admin-b"))
    listed = stub.ListConversations(admin.ListConversationsRequest(page_size=500), metadata=as_("admin-b"))
    assert {(c.tenant_id, c.conversation_id) for c in listed.conversations} == {("tenant-b", "own-b")}
    everything = stub.ListConversations(
        admin.ListConversationsRequest(page_size=500), metadata=as_("operator")
    )
    assert {"tenant-a", "tenant-b"} <= {c.tenant_id for c in everything.conversations}
    # A page token made for the operator's all-tenant list cannot widen B's list.
    first = stub.ListConversations(admin.ListConversationsRequest(page_size=1), metadata=as_("operator"))
    if first.next_page_token and first.conversations[0].tenant_id == "tenant-a":
        with pytest.raises(grpc.RpcError):
            stub.ListConversations(
                admin.ListConversationsRequest(page_token=first.next_page_token), metadata=as_("admin-b")
            )


def test_tail_shows_an_admin_only_its_own_tenants_events(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
) -> None:
    stub, engine = stubs
    tail = stub.TailEvents(admin.TailEventsRequest(event_types=["turn"]), metadata=as_("admin-b"))
    with ThreadPoolExecutor(1) as reader:
        first = reader.submit(next, tail)
        time.sleep(0.3)  # subscribed before the messages go out
        for i in range(5):  # A's turns, then one of B's
            engine.ProcessMessage(
                message("victim", f"more private {i}", tenant="tenant-a"), metadata=as_("app-a")
            )
        engine.ProcessMessage(message("own-b", "mine", tenant="tenant-b"), metadata=as_("admin-b"))
        event = first.result(timeout=10)
    tail.cancel()
    assert (event.tenant_id, event.conversation_id) == ("tenant-b", "own-b")


def test_cluster_wide_calls_need_the_operator_role(
    stubs: tuple[admin_grpc.AdminStub, pb_grpc.MCPEngineStub],
) -> None:
    stub, engine = stubs
    for key in ("admin-a", "app-a"):
        denied(lambda key=key: stub.GetCluster(admin.GetClusterRequest(), metadata=as_(key)))  # type: ignore[misc]
    operator = as_("operator")
    assert stub.GetCluster(admin.GetClusterRequest(), metadata=operator).shards
    assert stub.ReloadFlows(admin.ReloadFlowsRequest(), metadata=operator).ok
    detail = stub.InspectConversation(
        admin.InspectConversationRequest(tenant_id="tenant-a", conversation_id="victim"), metadata=operator
    )
    assert detail.tenant_id == "tenant-a"
    # An operator belongs to no tenant: it cannot talk as one on the conversation API.
    details = denied(
        lambda: engine.ProcessMessage(message("victim", "hi", tenant="tenant-a"), metadata=operator)
    )
    assert "no tenant" in details
    # A key with no admin role at all sees nothing of the Admin API.
    denied(lambda: stub.ListConversations(admin.ListConversationsRequest(), metadata=as_("app-a")))
