"""``confab call`` against a real server that requires credentials: JSON in and out, statuses, exit codes."""

from __future__ import annotations

import json
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confab.grpc_edge.auth import hash_api_key
from confab.tools.call import json_documents
from tests.support import ServerProcess, confab_argv, run_confab

pytestmark = pytest.mark.integration  # every test here starts a server or a process

KEY = "cfb_key-of-acme-for-confab-call"
ENGINE = "mcp.engine.v2.MCPEngine"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("call")
    config = root / "confab.yaml"
    config.write_text(
        "auth:\n  mode: required\n  api_keys:\n"
        f"    - {{name: acme, sha256: {hash_api_key(KEY)}, tenant: acme, roles: [admin]}}\n",
        encoding="utf-8",
    )
    process = ServerProcess(root / "data", shards=1, extra=["--config", str(config)]).start()
    try:
        yield process
    finally:
        process.stop()


def call(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_confab("call", "--target", server.address, *args)


def one_message(conversation: str, text: str) -> str:
    return json.dumps(
        {
            "tenant_context": {"tenant_id": "acme"},
            "conversation_id": conversation,
            "user_id": "u-1",
            "content": {"text": text},
        }
    )


def new_id() -> str:
    return f"call-{uuid.uuid4().hex[:12]}"


def details_of(stderr: str) -> list[dict[str, Any]]:
    """The status details ``confab call`` prints after its ``error:`` line."""
    first, _, rest = stderr.partition("\n")
    assert first.startswith("error: ")
    details: list[dict[str, Any]] = json.loads(rest)
    return details


def test_json_in_json_out_with_a_credential_header(server: ServerProcess) -> None:
    conversation = new_id()
    answered = call(
        server, "-H", f"x-api-key: {KEY}", f"{ENGINE}/ProcessMessage", one_message(conversation, "hi")
    )
    assert answered.returncode == 0, answered.stderr
    reply = json.loads(answered.stdout)
    assert reply["status"]["success"] is True and reply["conversation_id"] == conversation
    assert reply["conversation_state"]["message_count"] == 1 and "hi" in reply["response"]["text"]
    assert reply["response"]["buttons"] == []  # fields at their defaults are printed too

    # --api-key sends the same header; the short Service.Method form names the same method.
    state = call(
        server,
        "--api-key",
        KEY,
        "MCPEngine.GetConversationState",
        json.dumps({"tenant_context": {"tenant_id": "acme"}, "conversation_id": conversation}),
    )
    assert state.returncode == 0, state.stderr
    assert json.loads(state.stdout)["conversation_state"]["message_count"] == 1


def test_a_refusal_prints_its_code_reason_and_field(server: ServerProcess) -> None:
    anonymous = call(server, f"{ENGINE}/ProcessMessage", one_message(new_id(), "hi"))
    assert anonymous.returncode == 1 and anonymous.stdout == ""
    assert anonymous.stderr.startswith("error: UNAUTHENTICATED: credentials required")
    assert details_of(anonymous.stderr)[0]["reason"] == "UNAUTHENTICATED"

    missing = call(
        server,
        "-H",
        f"x-api-key:{KEY}",
        f"{ENGINE}/GetConversationState",
        json.dumps({"tenant_context": {"tenant_id": "acme"}, "conversation_id": "never-was"}),
    )
    assert missing.returncode == 1
    assert details_of(missing.stderr)[0] == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "CONVERSATION_NOT_FOUND",
        "domain": "confab",
    }

    no_user = json.loads(one_message(new_id(), "hi"))
    del no_user["user_id"]
    invalid = call(server, "-H", f"x-api-key: {KEY}", f"{ENGINE}/ProcessMessage", json.dumps(no_user))
    assert invalid.returncode == 1 and invalid.stderr.startswith(
        "error: INVALID_ARGUMENT: user_id is required"
    )
    bad_request = details_of(invalid.stderr)[1]
    assert bad_request["field_violations"][0]["field"] == "user_id"


def test_a_stream_of_requests_from_standard_input(server: ServerProcess) -> None:
    conversation = new_id()
    stream = [
        {"init": {"tenant_context": {"tenant_id": "acme"}, "conversation_id": conversation}},
        {"message": json.loads(one_message(conversation, "hello"))},
        {"heartbeat": {}},
        {"close": {"reason": "done"}},
    ]
    done = subprocess.run(
        confab_argv(
            "call", "--target", server.address, "-H", f"x-api-key: {KEY}", f"{ENGINE}/StreamConversation", "-"
        ),
        input="\n".join(json.dumps(request) for request in stream),  # objects one after another
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    answers = list(json_documents(done.stdout))
    assert [next(k for k in a if a[k]) for a in answers] == [
        "ack",
        "message_response",
        "event",
        "event",
        "event",
    ]
    assert answers[1]["message_response"]["conversation_id"] == conversation
    events = [a["event"]["event_type"] for a in answers[2:]]
    assert events == ["state_changed", "heartbeat", "stream_closed"]


def test_health_needs_no_credential_and_usage_errors_exit_2(server: ServerProcess, tmp_path: Path) -> None:
    health = call(server, "grpc.health.v1.Health/Check")
    assert health.returncode == 0 and json.loads(health.stdout) == {"status": "SERVING"}

    typo = call(server, "-H", f"x-api-key: {KEY}", f"{ENGINE}/ProcessMessage", '{"tenant_contxt": {}}')
    assert typo.returncode == 2 and "tenant_contxt" in typo.stderr
    unknown = call(server, "MCPEngine/ProcessMesage")
    assert unknown.returncode == 2 and "did you mean mcp.engine.v2.MCPEngine/ProcessMessage" in unknown.stderr
    assert call(server, "-H", "no-colon", "Health.Check").returncode == 2
    assert call(server, "--tls-ca", str(tmp_path / "absent.pem"), "Admin/GetCluster").returncode == 2
    assert run_confab("call", "--target", "127.0.0.1:1", "grpc.health.v1.Health/Check").returncode == 3


def test_a_reader_that_stops_early_ends_the_call_quietly(server: ServerProcess) -> None:
    # More answers than a pipe holds, to a reader that takes one byte and leaves.
    stream = [{"init": {"tenant_context": {"tenant_id": "acme"}, "conversation_id": new_id()}}]
    stream += [{"heartbeat": {}}] * 1500
    command = shlex.join(
        confab_argv(
            "call", "--target", server.address, "-H", f"x-api-key: {KEY}", "MCPEngine/StreamConversation", "-"
        )
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{command} | head -c 1 > /dev/null"],
        input=json.dumps(stream),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
