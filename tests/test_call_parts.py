"""``confab call``'s parts without a server: naming a method, reading headers and JSON requests."""

from __future__ import annotations

import re

import pytest

from confab.protos import mcp_engine_pb2 as pb
from confab.tools.call import CallUsageError, find_method, json_documents, parse_header, requests_from


@pytest.mark.parametrize(
    "name",
    [
        "mcp.engine.v2.MCPEngine/ProcessMessage",
        "/mcp.engine.v2.MCPEngine/ProcessMessage",
        "mcp.engine.v2.MCPEngine.ProcessMessage",
        "MCPEngine/ProcessMessage",
        "MCPEngine.ProcessMessage",
    ],
)
def test_a_method_may_be_named_in_full_or_by_its_service(name: str) -> None:
    method = find_method(name)
    assert method.path == "/mcp.engine.v2.MCPEngine/ProcessMessage"
    assert not method.client_streaming and not method.server_streaming


def test_ambiguous_and_unknown_methods_are_refused_with_a_hint() -> None:
    both = "ambiguous: mcp.health.v2.Health/Check, grpc.health.v1.Health/Check"
    with pytest.raises(CallUsageError, match=re.escape(both)):
        find_method("Health/Check")
    with pytest.raises(CallUsageError, match=re.escape("did you mean confab.admin.v1.Admin/GetCluster")):
        find_method("Admin/GetClustr")
    stream = find_method("grpc.health.v1.Health/Watch")
    assert stream.server_streaming and not stream.client_streaming


def test_headers_are_lower_case_keys_and_trimmed_values() -> None:
    assert parse_header("X-Api-Key: cfb_123") == ("x-api-key", "cfb_123")
    assert parse_header("authorization:Bearer a.b.c") == ("authorization", "Bearer a.b.c")
    for bad in ("no-colon", ": value"):
        with pytest.raises(CallUsageError, match="expected KEY: VALUE"):
            parse_header(bad)


def test_requests_from_json() -> None:
    unary = find_method("MCPEngine/ProcessMessage")
    text = '{"conversationId": "c-1", "content": {"text": "hi"}, "channel": "CHANNEL_SMS"}'
    (request,) = requests_from(text, unary)
    assert isinstance(request, pb.ProcessMessageRequest)
    assert (request.conversation_id, request.content.text, request.channel) == ("c-1", "hi", 7)
    assert requests_from("", unary) == [pb.ProcessMessageRequest()]  # no JSON: an empty request
    with pytest.raises(CallUsageError, match="takes one request"):
        requests_from("{} {}", unary)
    with pytest.raises(CallUsageError, match=re.escape("does not fit mcp.engine.v2.ProcessMessageRequest")):
        requests_from('{"conversation": "c-1"}', unary)
    with pytest.raises(CallUsageError, match="not JSON"):
        requests_from("{", unary)

    stream = find_method("MCPEngine/StreamConversation")
    as_array = requests_from('[{"heartbeat": {}}, {"close": {}}]', stream)
    one_after_another = requests_from('{"heartbeat": {}}\n{"close": {}}', stream)
    assert as_array == one_after_another and [r.WhichOneof("request_type") for r in as_array] == [
        "heartbeat",
        "close",
    ]
    with pytest.raises(CallUsageError, match="request 2 does not fit"):
        requests_from('[{"heartbeat": {}}, {"nope": 1}]', stream)


def test_json_documents_one_after_another() -> None:
    assert list(json_documents(' {"a": 1}\n[2]  3 ')) == [{"a": 1}, [2], 3]
