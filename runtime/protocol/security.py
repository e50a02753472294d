"""Who may speak on the data plane, and how much it may ask of a shard.

Between hosts the data plane is TCP, and whatever reaches a shard's port could read
any tenant's conversations; so TCP connections are mutual TLS 1.3 against the
cluster's own CA (``confab cluster certs`` makes it): the edge checks that the
shard's certificate names the address it dialled, the shard requires a certificate
of the same CA from the edge. A Unix socket stays plaintext: it lives in a 0700
directory of the serving process, so only that process's user reaches it.

:class:`DataPlaneSettings` travels to every shard process inside ``ShardSettings``
(Thespian pickles it), so it holds file paths and plain values only; each process
builds its ``ssl.SSLContext`` from them once (:meth:`DataPlaneSettings.server_context`,
:meth:`DataPlaneSettings.client_context`) and reuses it for every connection.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
from dataclasses import dataclass

from confab.runtime.config import ConfabConfig

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
INSECURE_WARNING = (
    "data plane between hosts is NOT authenticated or encrypted (cluster.insecure_plaintext):"
    " anything that reaches a shard's port can read and change every tenant's conversations"
)


@dataclass(frozen=True, slots=True)
class DataPlaneSettings:
    """How the data plane's connections are secured and bounded; the same on every host."""

    cluster: str = "confab"  # the cluster's name: a HELLO naming another one is refused
    ca_file: str = ""  # PEM: the cluster's CA, the only one trusted
    cert_file: str = ""  # PEM: this host's certificate (signed by that CA)
    key_file: str = ""  # PEM: its private key
    # Plain TCP between hosts (no TLS): only for a network nobody else can reach.
    insecure_plaintext: bool = False
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES  # a longer frame closes its connection
    max_connections: int = 256  # per shard server; more are refused
    idle_timeout_s: float = 300.0  # a connection that sent nothing this long is closed
    handshake_timeout_s: float = 10.0  # TLS and HELLO must be done within this
    # Batches and queries a shard has read and not yet run: above this it stops reading.
    max_inbound_frames: int = 1024

    def secured(self, kind: str) -> bool:
        """Whether a connection of ``kind`` ("unix" or "tcp") is TLS."""
        return kind == "tcp" and not self.insecure_plaintext

    def server_context(self) -> ssl.SSLContext:
        """The shard's side: TLS 1.3, a client certificate of the cluster CA required."""
        return _context(True, self.ca_file, self.cert_file, self.key_file)

    def client_context(self) -> ssl.SSLContext:
        """The edge's side: TLS 1.3, the shard's certificate checked against the CA and its address."""
        return _context(False, self.ca_file, self.cert_file, self.key_file)


@functools.lru_cache(maxsize=8)
def _context(server_side: bool, ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """One context per process and set of files (contexts are costly to build, cheap to share)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    if not server_side:
        context.check_hostname = True
    context.load_verify_locations(cafile=ca_file)  # the cluster's CA only, never the system's
    context.load_cert_chain(cert_file, key_file)
    return context


def data_plane_settings(config: ConfabConfig) -> DataPlaneSettings:
    """The settings of ``config``'s ``cluster`` and ``data_plane`` sections."""
    cluster, plane = config.cluster, config.data_plane
    return DataPlaneSettings(
        cluster=cluster.name,
        ca_file=_absolute(cluster.ca_file),
        cert_file=_absolute(cluster.cert_file),
        key_file=_absolute(cluster.key_file),
        insecure_plaintext=cluster.insecure_plaintext,
        max_frame_bytes=plane.max_frame_bytes,
        max_connections=plane.max_connections,
        idle_timeout_s=plane.idle_timeout_s,
        handshake_timeout_s=plane.handshake_timeout_s,
        max_inbound_frames=plane.max_inbound_frames,
    )


def _absolute(path: str) -> str:
    # Shard processes may not share the edge's working directory.
    return os.path.abspath(path) if path else ""
