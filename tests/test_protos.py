"""Generated protobuf/gRPC modules are current and expose the expected API."""

import importlib

import pytest

from confab.tools import codegen

MCP_ENGINE_METHODS = {
    "ProcessMessage",
    "GetConversationState",
    "ResetConversation",
    "StreamConversation",
    "BatchProcessMessages",
    "HealthCheck",
    "GetMetrics",
}


@pytest.mark.integration
def test_generated_code_is_current() -> None:
    stale = codegen.stale_files(codegen.DEFAULT_PROTO_DIR)
    assert stale == [], f"stale generated files (run `make proto`): {stale}"


@pytest.mark.parametrize("name", ["common", "mcp_engine", "health"])
def test_generated_modules_import(name: str) -> None:
    pb2 = importlib.import_module(f"confab.protos.{name}_pb2")
    grpc_mod = importlib.import_module(f"confab.protos.{name}_pb2_grpc")
    assert pb2.DESCRIPTOR.name == f"{name}.proto"
    assert grpc_mod.__name__ == f"confab.protos.{name}_pb2_grpc"


def test_mcp_engine_service_methods() -> None:
    from confab.protos import mcp_engine_pb2, mcp_engine_pb2_grpc

    service = mcp_engine_pb2.DESCRIPTOR.services_by_name["MCPEngine"]
    assert {m.name for m in service.methods} == MCP_ENGINE_METHODS
    servicer = mcp_engine_pb2_grpc.MCPEngineServicer
    assert all(callable(getattr(servicer, m)) for m in MCP_ENGINE_METHODS)
    assert service.methods_by_name["StreamConversation"].client_streaming
    assert service.methods_by_name["StreamConversation"].server_streaming
