"""The listening port: plaintext, TLS, or TLS with client certificates (mTLS).

The PEM files are read and checked when the server starts (the certificate and
key must parse and belong together), so a bad file stops ``confab serve`` with
a message instead of failing every handshake later. So does an address nothing
can listen on (a port in use), checked before any actor process is started.
"""

from __future__ import annotations

import socket
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
    """Listen on ``address``, with TLS if there are ``credentials``; the bound port.

    OSError naming the address and the reason if it cannot: gRPC raises a RuntimeError
    that says neither (what went wrong it logs apart, in a line of its own)."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        reason = why_not_listening(address) or "gRPC could not bind it (its own log line says why)"
        raise OSError(f"cannot listen on {address}: {reason}")
    return port


def check_address(address: str) -> None:
    """OSError naming ``address`` and the reason if nothing could listen there now.

    ``confab serve`` asks before it starts any process, so that a port in use ends the
    start in one line with nothing to stop (``add_port`` says the same if the port was
    taken in between)."""
    reason = why_not_listening(address)
    if reason:
        raise OSError(f"cannot listen on {address}: {reason}")


def why_not_listening(address: str) -> str:
    """Why no socket can be bound to ``address`` (HOST:PORT) as gRPC binds it; "" if one can.

    gRPC sets SO_REUSEADDR (so a port left in TIME_WAIT is no obstacle) and is content with
    any one of the addresses a name resolves to; so is this check. It binds and closes at
    once: it never listens, so no connection can reach it."""
    host, _, port = address.rpartition(":")
    try:
        found = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, ValueError) as exc:  # socket.gaierror is an OSError
        return str(exc)
    reasons = []
    for family, kind, protocol, _, where in found:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(where)
            return ""
        except OSError as exc:
            reasons.append(exc.strerror or str(exc))
    return "; ".join(dict.fromkeys(reasons)) or "it resolves to no address"


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
