"""The listening port: plaintext, TLS, or TLS with client certificates (mTLS).

The PEM files are read and checked when the server starts (the certificate and
key must parse and belong together), so a bad file stops ``confab serve`` with
a message instead of failing every handshake later.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from confab.runtime.config import ConfigError, TlsConfig


def describe(tls: TlsConfig) -> str:
    if not tls.cert_file:
        return "plaintext"
    return "TLS with client certificates" if tls.client_ca_file else "TLS"


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials | None:
    """None for plaintext (no ``tls.cert_file``)."""
    if not tls.cert_file:
        return None
    chain = _read("tls.cert_file", tls.cert_file)
    key = _read("tls.key_file", tls.key_file)
    try:
        certificates = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise ConfigError(f"tls.cert_file: {tls.cert_file}: {exc}") from exc
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: the key is encrypted
        raise ConfigError(f"tls.key_file: {tls.key_file}: {exc}") from exc
    if certificates[0].public_key() != private_key.public_key():
        raise ConfigError(f"tls.key_file {tls.key_file} is not the key of tls.cert_file {tls.cert_file}")
    client_ca = None
    if tls.client_ca_file:
        client_ca = _read("tls.client_ca_file", tls.client_ca_file)
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError as exc:
            raise ConfigError(f"tls.client_ca_file: {tls.client_ca_file}: {exc}") from exc
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def add_port(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Listen on ``address``, with TLS if there are ``credentials``; the bound port (0: could not bind)."""
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
