"""Authentication (API keys, JWT) and tenant isolation against a real server with ``auth.mode: required``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2 as std_health_pb2
from grpc_health.v1 import health_pb2_grpc as std_health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from confab.grpc_edge.auth import (
    ADMIN_ROLE,
    Authenticator,
    CredentialKind,
    Principal,
    authorize_tenant,
    hash_api_key,
    require_role,
)
from confab.grpc_edge.call import CallInfo, _current
from confab.protos import common_pb2 as common
from confab.protos import health_pb2, health_pb2_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.config import ConfigError, load_config
from confab.runtime.errors import PermissionDenied, Unauthenticated
from confab.tools import cli
from tests.support import ServerProcess, message, run_confab, serve_args, state_request

ISSUER = "https://issuer.test"
AUDIENCE = "confab-test"
HS256_SECRET = "s" * 40
KEY_A = "cfb_key-of-tenant-a"
KEY_B = "cfb_key-of-tenant-b"
Metadata = Sequence[tuple[str, str]]


@dataclass
class AuthServer:
    process: ServerProcess
    channel: grpc.Channel
    stub: pb_grpc.MCPEngineStub
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey


def write_config(directory: Path, auth: dict[str, Any]) -> Path:
    path = directory / "confab.yaml"
    path.write_text(yaml.safe_dump({"auth": auth}), encoding="utf-8")
    return path


def auth_section(
    directory: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> dict[str, Any]:
    public_files = []
    for name, key in (("rsa.pem", rsa_key), ("ec.pem", ec_key)):
        path = directory / name
        path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        public_files.append(str(path))
    secret_file = directory / "hs256.secret"
    secret_file.write_text(HS256_SECRET + "\n", encoding="utf-8")
    return {
        "mode": "required",
        "api_keys": [
            {"name": "a", "sha256": hash_api_key(KEY_A), "tenant": "tenant-a", "roles": ["admin"]},
            {"name": "b", "sha256": hash_api_key(KEY_B), "tenant": "tenant-b", "roles": []},
        ],
        "jwt": {
            "hs256_secret_file": str(secret_file),
            "public_key_files": public_files,
            "issuer": ISSUER,
            "audience": AUDIENCE,
        },
    }


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    directory = tmp_path_factory.mktemp("auth-server")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    config = write_config(directory, auth_section(directory, rsa_key, ec_key))
    process = ServerProcess(directory / "data", shards=1, extra=["--config", str(config)])
    process.start()
    channel = process.channel()
    try:
        yield AuthServer(process, channel, pb_grpc.MCPEngineStub(channel), rsa_key, ec_key)
    finally:
        channel.close()
        process.stop()


def api_key(key: str) -> Metadata:
    return [("x-api-key", key)]


def bearer(token: str) -> Metadata:
    return [("authorization", f"Bearer {token}")]


def token(key: Any = HS256_SECRET, algorithm: str = "HS256", **overrides: Any) -> str:
    claims: dict[str, Any] = {
        "sub": "user-42",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 300,
        "tenant_id": "tenant-a",
        "roles": ["agent"],
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=algorithm)


def new_id() -> str:
    return f"conv-{uuid.uuid4().hex[:12]}"


def reason_of(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason: str = info.reason  # google.rpc has no type information: the field's type, from its proto
            return reason
    return ""


def rejected(call: Any, code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    return caught.value


def unauthenticated(stub: pb_grpc.MCPEngineStub, metadata: Metadata | None) -> str:
    """The error message of a ProcessMessage for tenant-a sent with ``metadata``."""
    error = rejected(
        lambda: stub.ProcessMessage(message(new_id(), "hi", tenant="tenant-a"), metadata=metadata),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert reason_of(error) == "UNAUTHENTICATED"
    return error.details() or ""


# Authentication -------------------------------------------------------------------


@pytest.mark.integration
def test_every_engine_rpc_needs_credentials(auth_server: AuthServer) -> None:
    stub = auth_server.stub
    calls = [
        lambda: stub.ProcessMessage(message(new_id(), "hi", tenant="tenant-a")),
        lambda: stub.GetConversationState(state_request(new_id(), "tenant-a")),
        lambda: stub.ResetConversation(
            pb.ResetConversationRequest(tenant_context={"tenant_id": "tenant-a"}, conversation_id="c")
        ),
        lambda: stub.BatchProcessMessages(
            pb.BatchProcessMessagesRequest(messages=[message(new_id(), "hi", tenant="tenant-a")])
        ),
        lambda: list(stub.StreamConversation(iter([pb.ConversationStreamRequest(heartbeat={})]))),
        lambda: stub.GetMetrics(pb.GetMetricsRequest()),
        lambda: stub.HealthCheck(empty_pb2.Empty()),
    ]
    for call in calls:
        error = rejected(call, grpc.StatusCode.UNAUTHENTICATED)
        assert reason_of(error) == "UNAUTHENTICATED"
        assert "credentials required" in (error.details() or "")


@pytest.mark.integration
def test_wrong_or_malformed_credentials_are_unauthenticated(auth_server: AuthServer) -> None:
    stub = auth_server.stub
    assert "invalid API key" in unauthenticated(stub, api_key("cfb_not-a-key"))
    assert "invalid API key" in unauthenticated(stub, api_key(hash_api_key(KEY_A)))  # the hash is no key
    assert "Bearer" in unauthenticated(stub, [("authorization", f"Basic {KEY_A}")])
    assert "malformed" in unauthenticated(stub, bearer("not.a.jwt"))
    assert "exactly one" in unauthenticated(stub, [*api_key(KEY_A), *bearer(token())])


@pytest.mark.integration
def test_valid_api_key_works_and_metrics_need_any_tenant(auth_server: AuthServer) -> None:
    stub = auth_server.stub
    reply = stub.ProcessMessage(message(new_id(), "hello", tenant="tenant-a"), metadata=api_key(KEY_A))
    assert reply.status.success and reply.conversation_state.message_count == 1
    reply = stub.ProcessMessage(message(new_id(), "hello", tenant="tenant-b"), metadata=api_key(KEY_B))
    assert reply.status.success
    metrics = stub.GetMetrics(pb.GetMetricsRequest(metric_names=["rpc.requests"]), metadata=api_key(KEY_B))
    by_code: dict[str, float] = {}
    for point in metrics.metrics[0].points:
        by_code[point.attributes["code"]] = by_code.get(point.attributes["code"], 0) + point.value
    assert by_code.get("UNAUTHENTICATED", 0) >= 1  # rejected calls are counted too
    assert stub.HealthCheck(empty_pb2.Empty(), metadata=api_key(KEY_B)).status == common.HEALTH_SERVING


@pytest.mark.integration
def test_jwt_hs256(auth_server: AuthServer) -> None:
    stub = auth_server.stub
    reply = stub.ProcessMessage(message(new_id(), "hi", tenant="tenant-a"), metadata=bearer(token()))
    assert reply.status.success
    # The tenant comes from the token: the same token may not act for tenant-b.
    rejected(
        lambda: stub.ProcessMessage(message(new_id(), "hi", tenant="tenant-b"), metadata=bearer(token())),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    cases = {
        "expired": token(exp=int(time.time()) - 60),
        "another audience": token(aud="someone-else"),
        "unknown issuer": token(iss="https://evil.test"),
        "does not verify": token(key="x" * 40),
        "no 'exp'": token(exp=None),
        "no 'tenant_id'": token(tenant_id=None),
        "not accepted": jwt.encode({"tenant_id": "tenant-a"}, "", algorithm="none"),
    }
    for expected, bad in cases.items():
        assert expected in unauthenticated(stub, bearer(bad)), expected


@pytest.mark.integration
def test_jwt_rs256_and_es256(auth_server: AuthServer) -> None:
    stub = auth_server.stub
    for key, algorithm in ((auth_server.rsa_key, "RS256"), (auth_server.ec_key, "ES256")):
        good = token(key, algorithm, roles="agent admin")
        assert stub.ProcessMessage(
            message(new_id(), "x", tenant="tenant-a"), metadata=bearer(good)
        ).status.success
        assert "expired" in unauthenticated(stub, bearer(token(key, algorithm, exp=int(time.time()) - 60)))
    strangers = (
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    )
    for stranger, algorithm in strangers:
        assert "does not verify" in unauthenticated(stub, bearer(token(stranger, algorithm)))
    # Algorithm confusion: an HS256 token whose HMAC key is the (public) RSA key must not pass.
    public_pem = auth_server.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert "does not verify" in unauthenticated(stub, bearer(hs256_by_hand(public_pem)))


def hs256_by_hand(secret: bytes) -> str:
    """An HS256 token signed with any bytes (PyJWT itself refuses a PEM key as an HMAC secret)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, "tenant_id": "tenant-a"}
    signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.mark.integration
def test_health_and_reflection_are_open(auth_server: AuthServer) -> None:
    channel = auth_server.channel
    standard = std_health_pb2_grpc.HealthStub(channel)
    assert (
        standard.Check(std_health_pb2.HealthCheckRequest()).status
        == std_health_pb2.HealthCheckResponse.SERVING
    )
    v2 = health_pb2_grpc.HealthStub(channel)
    assert v2.Check(health_pb2.HealthCheckRequest()).status == common.HEALTH_SERVING
    assert v2.GetDetailedHealth(health_pb2.DetailedHealthRequest()).status == common.HEALTH_SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = list(
        reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    )
    assert "mcp.engine.v2.MCPEngine" in {s.name for s in answer.list_services_response.service}


# Tenant isolation ---------------------------------------------------------------------


@pytest.mark.integration
def test_one_tenant_cannot_touch_another_tenants_conversation(auth_server: AuthServer) -> None:
    stub = auth_server.stub
    conversation = new_id()
    for text in ("one", "two"):
        stub.ProcessMessage(message(conversation, text, tenant="tenant-a"), metadata=api_key(KEY_A))

    def count() -> int:
        state: pb.GetConversationStateResponse = stub.GetConversationState(
            state_request(conversation, "tenant-a"), metadata=api_key(KEY_A)
        )
        return state.conversation_state.message_count

    assert count() == 2
    as_b = api_key(KEY_B)
    denied = [
        lambda: stub.GetConversationState(state_request(conversation, "tenant-a"), metadata=as_b),
        lambda: stub.ResetConversation(
            pb.ResetConversationRequest(
                tenant_context={"tenant_id": "tenant-a"}, conversation_id=conversation
            ),
            metadata=as_b,
        ),
        lambda: stub.ProcessMessage(message(conversation, "intrude", tenant="tenant-a"), metadata=as_b),
        # A batch that names another tenant at the top is refused whole.
        lambda: stub.BatchProcessMessages(
            pb.BatchProcessMessagesRequest(
                tenant_context={"tenant_id": "tenant-a"},
                messages=[
                    pb.ProcessMessageRequest(conversation_id=conversation, user_id="u", content={"text": "x"})
                ],
            ),
            metadata=as_b,
        ),
    ]
    for call in denied:
        error = rejected(call, grpc.StatusCode.PERMISSION_DENIED)
        assert reason_of(error) == "PERMISSION_DENIED"
        assert "tenant-a" in (error.details() or "")

    # In a batch of tenant-b, the item for tenant-a fails alone.
    own = new_id()
    batch = stub.BatchProcessMessages(
        pb.BatchProcessMessagesRequest(
            tenant_context={"tenant_id": "tenant-b"},
            messages=[
                message(own, "mine", tenant="tenant-b"),
                message(conversation, "intrude", tenant="tenant-a"),
                pb.ProcessMessageRequest(conversation_id=own, user_id="u", content={"text": "inherits b"}),
            ],
            parallel_processing=True,
        ),
        metadata=as_b,
    )
    assert (batch.successful_count, batch.failed_count) == (2, 1)
    assert batch.responses[1].status.error_code == "PERMISSION_DENIED"
    assert batch.responses[1].conversation_id == conversation
    assert batch.responses[2].conversation_state.message_count == 2

    # A stream: init for tenant-a is refused (recoverable); bound to tenant-b, a message for tenant-a is too.
    requests = [
        pb.ConversationStreamRequest(
            init=pb.StreamInit(tenant_context={"tenant_id": "tenant-a"}, conversation_id=conversation)
        ),
        pb.ConversationStreamRequest(
            init=pb.StreamInit(tenant_context={"tenant_id": "tenant-b"}, conversation_id=own)
        ),
        pb.ConversationStreamRequest(message=message(conversation, "intrude", tenant="tenant-a")),
        pb.ConversationStreamRequest(message=message(own, "fine", tenant="tenant-b")),
        pb.ConversationStreamRequest(close=pb.StreamClose()),
    ]
    responses = list(stub.StreamConversation(iter(requests), metadata=as_b))
    kinds = [r.WhichOneof("response_type") for r in responses]
    assert kinds[:4] == ["error", "ack", "error", "message_response"]
    assert responses[0].error.error_code == "PERMISSION_DENIED" and responses[0].error.recoverable
    assert responses[2].error.error_code == "PERMISSION_DENIED"
    assert responses[3].message_response.conversation_state.message_count == 3

    # A JWT of tenant-b is held to the same rule.
    b_token = bearer(token(tenant_id="tenant-b"))
    rejected(
        lambda: stub.GetConversationState(state_request(conversation, "tenant-a"), metadata=b_token),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert count() == 2  # nothing of tenant-b's attempts reached tenant-a's conversation


# Units: principal checks, config, CLI -----------------------------------------------


def with_principal(principal: Principal | None, check: Any) -> None:
    token_ = _current.set(CallInfo("/test", principal=principal))
    try:
        check()
    finally:
        _current.reset(token_)


def test_authorize_tenant_and_require_role() -> None:
    agent = Principal("u", "tenant-a", frozenset({"agent"}), CredentialKind.JWT)
    admin = Principal("key:ops", "tenant-a", frozenset({ADMIN_ROLE}), CredentialKind.API_KEY)
    with_principal(agent, lambda: authorize_tenant("tenant-a"))
    with pytest.raises(PermissionDenied):
        with_principal(agent, lambda: authorize_tenant("tenant-b"))
    with pytest.raises(PermissionDenied):
        with_principal(agent, lambda: require_role(ADMIN_ROLE))
    with_principal(admin, lambda: require_role(ADMIN_ROLE))
    with pytest.raises(PermissionDenied):  # admin is no way across tenants
        with_principal(admin, lambda: authorize_tenant("tenant-b"))
    # Auth off: no principal, nothing to check.
    with_principal(None, lambda: authorize_tenant("anyone"))
    with_principal(None, lambda: require_role(ADMIN_ROLE))


def test_authenticator_reads_roles_from_a_list_or_a_string(tmp_path: Path) -> None:
    config = load_config(
        write_config(
            tmp_path,
            {
                "mode": "required",
                "jwt": {"hs256_secret": HS256_SECRET, "issuer": ISSUER, "audience": AUDIENCE},
            },
        )
    )
    authenticator = Authenticator.from_config(config.auth)
    assert authenticator is not None
    principal = authenticator.authenticate(bearer(token(roles="a b")))
    assert principal == Principal("user-42", "tenant-a", frozenset({"a", "b"}), CredentialKind.JWT)
    assert authenticator.authenticate(bearer(token(roles=None))).roles == frozenset()
    with pytest.raises(Unauthenticated, match="list of strings"):
        authenticator.authenticate(bearer(token(roles=[1, 2])))
    with pytest.raises(Unauthenticated, match="not accepted"):  # no RSA key configured
        authenticator.authenticate(bearer(token(ec.generate_private_key(ec.SECP256R1()), "ES256")))
    with pytest.raises(Unauthenticated, match="invalid API key"):  # no API key configured
        authenticator.authenticate(api_key(KEY_A))
    assert Authenticator.from_config(load_config().auth) is None  # the bundled default is off


@pytest.mark.parametrize(
    ("auth", "complaint"),
    [
        ({"mode": "sometimes"}, "auth.mode"),
        ({"mode": "required"}, "no api_keys"),
        ({"api_keys": [{"name": "k", "sha256": "abc", "tenant": "t"}]}, "64 hex"),
        ({"api_keys": [{"name": "k", "sha256": "a" * 64}]}, "tenant is required"),
        (
            {"api_keys": [{"name": "k", "sha256": "a" * 64, "tenant": "t", "roles": "admin"}]},
            "must be a list",
        ),
        (
            {"api_keys": [{"name": "k", "sha256": "a" * 64, "tenant": "t", "secret": "x"}]},
            "unknown config key",
        ),
        ({"jwt": {"hs256_secret": HS256_SECRET}}, "issuer and auth.jwt.audience"),
        ({"jwt": {"algorithms": ["HS512"]}}, "unknown ['HS512']"),
    ],
)
def test_bad_auth_config_is_refused(tmp_path: Path, auth: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        load_config(write_config(tmp_path, auth))


@pytest.mark.integration
def test_unloadable_key_file_stops_the_server_before_it_starts(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "mode": "required",
            "jwt": {
                "public_key_files": [str(tmp_path / "missing.pem")],
                "issuer": ISSUER,
                "audience": AUDIENCE,
            },
        },
    )
    result = run_confab(*serve_args("--config", str(config), data_dir=tmp_path / "data"))
    assert result.returncode == 1
    assert "missing.pem" in result.stderr
    assert not (tmp_path / "data").exists()  # nothing was started


def test_keys_new_prints_a_key_and_its_config_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "new", "--tenant", "acme", "--role", "admin"]) == 0
    lines = capsys.readouterr().out.splitlines()
    key = lines[1]
    entry = yaml.safe_load("\n".join(lines[2:]))["auth"]["api_keys"][0]
    assert key.startswith("cfb_") and len(key) > 40
    assert entry["sha256"] == hash_api_key(key) and entry["tenant"] == "acme" and entry["roles"] == ["admin"]


def test_keys_new_makes_operator_keys_without_a_tenant_and_no_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["keys", "new", "--role", "operator"]) == 0
    lines = capsys.readouterr().out.splitlines()
    entry = yaml.safe_load("\n".join(lines[2:]))["auth"]["api_keys"][0]
    assert entry["tenant"] == "" and entry["roles"] == ["operator"] and entry["name"].startswith("operator-")
    loaded = load_config(write_config(tmp_path, {"mode": "required", "api_keys": [entry]}))
    assert loaded.auth.api_keys[0].roles == ["operator"]  # the config accepts it
    assert cli.main(["keys", "new", "--role", "admin"]) == 2  # an admin key needs its tenant


def test_keys_hash_from_argument_or_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["keys", "hash", KEY_A]) == 0
    assert capsys.readouterr().out.strip() == hash_api_key(KEY_A)
    monkeypatch.setattr(sys, "stdin", io.StringIO(KEY_B + "\n"))
    assert cli.main(["keys", "hash"]) == 0
    assert capsys.readouterr().out.strip() == hash_api_key(KEY_B)


@pytest.mark.integration
def test_auth_off_warns_at_start(server: ServerProcess) -> None:
    assert any("WARNING" in line and "authentication is off" in line for line in server.output)
