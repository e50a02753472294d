"""How the command-line clients (``confab chat``, ``confab shell``, ``confab call``) reach a server.

Each takes the same options: ``--target HOST:PORT``, one credential (``--api-key KEY``
sent as ``x-api-key``, or ``--token JWT`` sent as ``authorization: Bearer``) and
``--tls-ca FILE`` to speak TLS to a server whose certificate that CA signed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

DEFAULT_TARGET = "127.0.0.1:50051"  # where `make serve` listens
API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"

Metadata = tuple[tuple[str, str], ...]


class ConnectionOptionError(Exception):
    """An option that cannot be used as given (a CA file that cannot be read): exit status 2."""


@dataclass(frozen=True, slots=True)
class Connection:
    target: str
    metadata: Metadata = ()
    tls_ca: bytes | None = None  # PEM; None: plaintext

    def channel(self, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        if self.tls_ca is None:
            return grpc.insecure_channel(self.target, options=options)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.tls_ca)
        return grpc.secure_channel(self.target, credentials, options=options)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=DEFAULT_TARGET, metavar="HOST:PORT", help="the server")
    credential = parser.add_mutually_exclusive_group()
    credential.add_argument("--api-key", metavar="KEY", help=f"send {API_KEY_HEADER}: KEY")
    credential.add_argument("--token", metavar="JWT", help=f"send {AUTHORIZATION_HEADER}: Bearer JWT")
    parser.add_argument("--tls-ca", metavar="FILE", help="PEM CA to verify the server: use TLS")


def credential_metadata(args: argparse.Namespace) -> Metadata:
    if args.api_key:
        return ((API_KEY_HEADER, args.api_key),)
    if args.token:
        return ((AUTHORIZATION_HEADER, f"Bearer {args.token}"),)
    return ()


def connection_from(args: argparse.Namespace, extra_metadata: Metadata = ()) -> Connection:
    """The connection the parsed options describe; ConnectionOptionError if one cannot be used."""
    tls_ca = None
    if args.tls_ca:
        try:
            tls_ca = Path(args.tls_ca).read_bytes()
        except OSError as exc:
            raise ConnectionOptionError(f"--tls-ca: {exc}") from exc
    return Connection(args.target, credential_metadata(args) + extra_metadata, tls_ca)
