"""``confab cluster certs``: the cluster's own CA, and a certificate and key for each host.

The data plane between hosts is mutual TLS that trusts this CA only (not the system's
CAs): a host is a member because it holds a certificate the CA signed. Each host's
certificate names its host id (CN) and carries its address as a subjectAltName, which
the edges check against the address they dial. Run again with the same ``--out``, it
reuses the CA there and only adds hosts, so that a host can join later.

    confab cluster certs --out DIR [--cluster NAME] [--days N] HOST=ADDRESS...

writes ``DIR/ca.pem``, ``DIR/ca.key`` and ``DIR/HOST.pem``, ``DIR/HOST.key`` (keys mode
0600). Keys are EC P-256. ``ca.key`` signs new members: keep it off the hosts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
DEFAULT_DAYS = 365
_HOST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class CertError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class HostCert:
    host: str
    address: str
    cert_file: Path
    key_file: Path


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = commands.add_parser("cluster", help="a cluster's certificates")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    certs = cluster_commands.add_parser(
        "certs",
        help="make the cluster's CA (or reuse the one in --out) and a certificate per host",
        description="Writes ca.pem, ca.key and HOST.pem, HOST.key per host (keys mode 0600).",
    )
    certs.add_argument("--out", required=True, metavar="DIR", help="where the files go (created 0700)")
    certs.add_argument(
        "--cluster", default="confab", metavar="NAME", help="the cluster's name (in the CA's CN)"
    )
    certs.add_argument("--days", type=int, default=DEFAULT_DAYS, help="how long host certificates are valid")
    certs.add_argument(
        "hosts", nargs="+", metavar="HOST=ADDRESS", help="a host id and its advertised address"
    )


def run(args: argparse.Namespace) -> int:
    try:
        hosts = [parse_host(spec) for spec in args.hosts]
        made = make_certs(Path(args.out), args.cluster, hosts, days=args.days)
    except (CertError, OSError) as exc:
        print(f"confab: {exc}", file=sys.stderr)
        return 2
    for host in made:
        print(f"{host.host}: --cluster-cert {host.cert_file} --cluster-key {host.key_file}  ({host.address})")
    print(f"every host: --cluster {args.cluster} --cluster-ca {Path(args.out) / 'ca.pem'}")
    return 0


def parse_host(spec: str) -> tuple[str, str]:
    host, sep, address = spec.partition("=")
    if not sep or not _HOST_ID.match(host) or not address:
        raise CertError(f"{spec!r}: expected HOST=ADDRESS, HOST letters, digits, '.', '_' or '-'")
    return host, address


def make_certs(
    out: Path, cluster: str, hosts: list[tuple[str, str]], *, days: int = DEFAULT_DAYS
) -> list[HostCert]:
    """The CA in ``out`` (made if there is none) signs a certificate for each (host, address)."""
    if days < 1:
        raise CertError("--days must be at least 1")
    names = [host for host, _ in hosts]
    if len(set(names)) != len(names) or "ca" in names:
        raise CertError("host ids must be unique, and not 'ca'")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_cert, ca_key = _load_or_make_ca(out, cluster)
    made = []
    for host, address in hosts:
        cert_file, key_file = out / f"{host}.pem", out / f"{host}.key"
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _host_cert(host, address, key, ca_cert, ca_key, days)
        _write_key(key_file, key)
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        made.append(HostCert(host, address, cert_file, key_file))
    return made


def _load_or_make_ca(out: Path, cluster: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_file, key_file = out / "ca.pem", out / "ca.key"
    if cert_file.exists() != key_file.exists():
        raise CertError(f"{out} has one of ca.pem and ca.key but not the other")
    if cert_file.exists():
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise CertError(f"{key_file} is not the key of {cert_file}")
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"confab cluster {cluster} CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_file, key)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _host_cert(
    host: str,
    address: str,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
) -> x509.Certificate:
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        alt = x509.DNSName(address)
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        # Every host both serves (its shards) and connects (its edge): one certificate for both.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a private key readable by its owner only, from its first byte on."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with contextlib.suppress(FileNotFoundError):  # a host's certificate made again
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
