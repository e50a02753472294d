"""TLS and mTLS on the gRPC port, with a CA and certificates made at test time."""

from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2 as std_health_pb2
from grpc_health.v1 import health_pb2_grpc as std_health_pb2_grpc

from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from tests.support import ServerProcess, message, run_confab, serve_args

pytestmark = pytest.mark.integration  # every test here starts a server or a process

TIMEOUT_S = 5.0
API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    rogue_ca: Issued
    rogue_client: Issued  # signed by a CA the server does not trust
    directory: Path

    def file(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> tuple[Issued, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)), key


def issue(ca: Issued, ca_key: ec.EllipticCurvePrivateKey, common_name: str, *, server: bool) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca, ca_key = make_ca("confab test CA")
    rogue_ca, rogue_key = make_ca("someone else's CA")
    return Pki(
        ca=ca,
        server=issue(ca, ca_key, "confab server", server=True),
        client=issue(ca, ca_key, "confab client", server=False),
        rogue_ca=rogue_ca,
        rogue_client=issue(rogue_ca, rogue_key, "intruder", server=False),
        directory=tmp_path_factory.mktemp("pki"),
    )


def serve(pki: Pki, data_dir: Path, *, client_ca: bool) -> ServerProcess:
    extra = [
        "--tls-cert",
        pki.file("server.pem", pki.server.cert_pem),
        "--tls-key",
        pki.file("server.key", pki.server.key_pem),
    ]
    if client_ca:
        extra += ["--tls-client-ca", pki.file("ca.pem", pki.ca.cert_pem)]
    return ServerProcess(data_dir, shards=1, extra=extra).start()


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = serve(pki, tmp_path_factory.mktemp("tls-data"), client_ca=False)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = serve(pki, tmp_path_factory.mktemp("mtls-data"), client_ca=True)
    try:
        yield process
    finally:
        process.stop()


def secure(address: str, root: Issued, client: Issued | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root.cert_pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    return grpc.secure_channel(address, credentials)


def health_of(channel: grpc.Channel) -> int:
    with channel:
        reply = std_health_pb2_grpc.HealthStub(channel).Check(
            std_health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S
        )
        return int(reply.status)


def fails(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        health_of(channel)
    code = caught.value.code()
    assert isinstance(code, grpc.StatusCode)
    return code


SERVING = std_health_pb2.HealthCheckResponse.SERVING


def test_tls_client_works(tls_server: ServerProcess, pki: Pki) -> None:
    assert health_of(secure(tls_server.address, pki.ca)) == SERVING
    with secure(tls_server.address, pki.ca) as channel:
        conversation = f"conv-{uuid.uuid4().hex[:12]}"
        reply = pb_grpc.MCPEngineStub(channel).ProcessMessage(
            message(conversation, "over tls"), timeout=TIMEOUT_S
        )
        assert reply.status.success
    # A client certificate is welcome but not needed without --tls-client-ca.
    assert health_of(secure(tls_server.address, pki.ca, pki.client)) == SERVING


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        health_of(grpc.insecure_channel(tls_server.address))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # What the client sees is all it is told; docs/api.md's troubleshooting names it, and why the
    # server cannot log it (grpc.aio tells the application nothing of a failed handshake).
    symptom = "Socket closed"
    assert symptom in (caught.value.details() or "")
    assert f"`UNAVAILABLE: ... {symptom}`" in API_DOC.read_text(encoding="utf-8")


def test_client_that_does_not_trust_the_server_certificate_fails(tls_server: ServerProcess, pki: Pki) -> None:
    assert fails(secure(tls_server.address, pki.rogue_ca)) == grpc.StatusCode.UNAVAILABLE


def test_mtls_requires_a_client_certificate_signed_by_the_ca(mtls_server: ServerProcess, pki: Pki) -> None:
    assert health_of(secure(mtls_server.address, pki.ca, pki.client)) == SERVING
    assert fails(secure(mtls_server.address, pki.ca)) == grpc.StatusCode.UNAVAILABLE
    assert fails(secure(mtls_server.address, pki.ca, pki.rogue_client)) == grpc.StatusCode.UNAVAILABLE
    assert fails(grpc.insecure_channel(mtls_server.address)) == grpc.StatusCode.UNAVAILABLE


def run_serve(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return run_confab(*serve_args(*args, data_dir=data_dir))


def test_bad_tls_settings_stop_the_server_at_start(pki: Pki, tmp_path: Path) -> None:
    data = tmp_path / "data"
    cert = pki.file("server.pem", pki.server.cert_pem)
    alone = run_serve("--tls-cert", cert, data_dir=data)
    assert alone.returncode == 2 and "go together" in alone.stderr
    client_key = pki.file("client.key", pki.client.key_pem)
    mismatched = run_serve("--tls-cert", cert, "--tls-key", client_key, data_dir=data)
    assert mismatched.returncode == 1 and "is not the key of" in mismatched.stderr
    missing = run_serve("--tls-cert", cert, "--tls-key", str(tmp_path / "none.key"), data_dir=data)
    assert missing.returncode == 1 and "none.key" in missing.stderr
    assert not (tmp_path / "data").exists()  # refused before any actor process started


def test_the_command_line_clients_speak_tls_with_tls_ca(tls_server: ServerProcess, pki: Pki) -> None:
    ca = pki.file("ca.pem", pki.ca.cert_pem)
    health = run_confab("call", "--target", tls_server.address, "--tls-ca", ca, "grpc.health.v1.Health/Check")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "SERVING"}
    shards = run_confab("shell", "--target", tls_server.address, "--tls-ca", ca, "-c", "shards --json")
    assert shards.returncode == 0 and json.loads(shards.stdout)["store"]["ok"]
    untrusted = pki.file("rogue-ca.pem", pki.rogue_ca.cert_pem)
    refused = run_confab("call", "--target", tls_server.address, "--tls-ca", untrusted, "Admin/GetCluster")
    assert refused.returncode == 3 and "error: UNAVAILABLE" in refused.stderr  # gRPC logs the handshake too
