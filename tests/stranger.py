"""A process on the hosts' network that is not a member: what does each port of a host give it?

    python -m tests.stranger HOST PORT [FOREIGN_CERT FOREIGN_KEY]

Run in a namespace of its own (``ip netns exec``). It tries the port three ways, each on
a fresh connection, and sends what a member's edge would (a HELLO, then a query for a
shard's status): in plaintext; over TLS with no client certificate; and, given one,
over TLS with a certificate of another CA. It prints one JSON object: per way, whether
the connection opened, how many bytes came back and how many of them were data-plane
frames (a 4-byte length and a msgpack list). A member's port must give a stranger no
frame, whichever way it asks.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import sys
from typing import Any

import msgpack

from confab.runtime.protocol import codec, queries
from confab.runtime.protocol.records import EDGE_ROLE, PROTOCOL_VERSION, Hello, Query

CLUSTER = "confab-test"  # the name the cluster of tests.cluster has
TIMEOUT_S = 3.0


def frames_in(data: bytes) -> int:
    count = 0
    while len(data) >= 4:
        (length,) = struct.unpack(">I", data[:4])
        if length > len(data) - 4:
            break
        try:
            value = msgpack.unpackb(data[4 : 4 + length])
        except Exception:
            break
        if not isinstance(value, list):
            break
        count += 1
        data = data[4 + length :]
    return count


def attempt(host: str, port: int, context: ssl.SSLContext | None) -> dict[str, Any]:
    result: dict[str, Any] = {"opened": False, "bytes": 0, "frames": 0, "error": ""}
    try:
        sock = socket.create_connection((host, port), TIMEOUT_S)
    except OSError as exc:
        result["error"] = str(exc)
        return result
    result["opened"] = True
    received = b""
    try:
        sock.settimeout(TIMEOUT_S)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=host)
        hello = Hello(PROTOCOL_VERSION, CLUSTER, EDGE_ROLE).to_frame()
        sock.sendall(codec.frame(hello) + codec.frame(Query(1, queries.STATUS, [], None).to_frame()))
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except (OSError, ssl.SSLError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
    result["bytes"] = len(received)
    result["frames"] = frames_in(received)
    return result


def main(argv: list[str]) -> int:
    host, port = argv[0], int(argv[1])
    ways: dict[str, ssl.SSLContext | None] = {"plaintext": None}
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.verify_mode = ssl.CERT_NONE
    ways["tls-without-certificate"] = anonymous
    if len(argv) >= 4:
        foreign = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        foreign.check_hostname = False
        foreign.verify_mode = ssl.CERT_NONE
        foreign.load_cert_chain(argv[2], argv[3])
        ways["tls-with-another-cas-certificate"] = foreign
    print(json.dumps({name: attempt(host, port, context) for name, context in ways.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
