"""A throwaway PostgreSQL server of its own, for tests and benchmarks on this machine.

    with PostgresServer(listen="127.0.0.1", fsync=False) as server:
        url = server.create_database()      # postgresql://confab@127.0.0.1:PORT/db_...
        ...

The server is made by ``initdb`` in a temporary directory and run by ``pg_ctl`` from the
installed binaries (on PATH, or Debian's /usr/lib/postgresql/<version>/bin). ``initdb``
refuses to run as root, so as root the server runs as an unprivileged system user
(created if missing). It listens on one address and a free port, its unix socket is in
its own directory, and :meth:`PostgresServer.close` stops it and removes the directory.

Every connection by the superuser (``confab``) is trusted; members of
:data:`PASSWORD_GROUP` (:meth:`PostgresServer.add_user`) must give their password, so
that authentication can be seen to fail. ``fsync=False`` suits tests of logic only: a
benchmark or a durability test wants it on.

With ``tls=True`` the server speaks TLS only over TCP (``hostssl`` lines): its certificate,
for its listen address and ``localhost``, is signed by a CA of its own made in its directory
(:attr:`PostgresServer.ca_path`, what a client's ``sslrootcert`` names).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil
import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg import sql

SUPERUSER = "confab"
SERVER_USER = "pgtest"  # who runs the server when we are root
PASSWORD_GROUP = "password_login"
DEBIAN_BINARIES = Path("/usr/lib/postgresql")

# Local connections are trusted; over TCP, members of PASSWORD_GROUP need their password.
HBA = f"""\
local all all trust
host all +{PASSWORD_GROUP} all scram-sha-256
host all all all trust
"""


# With TLS: the same, over TLS only (a client that does not ask for it finds no line).
HBA_TLS = f"""\
local all all trust
hostssl all +{PASSWORD_GROUP} all scram-sha-256
hostssl all all all trust
"""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path  # the CA's certificate: a client's sslrootcert
    certificate: Path  # the server's, signed by the CA
    key: Path  # the server's private key


def make_tls_files(directory: Path, host: str) -> TlsFiles:
    """A new CA, and a certificate it signed for ``host`` (an IP address or a name) and
    ``localhost``, written to ``directory`` (the key readable by its owner only)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"confab test CA {uuid.uuid4().hex[:8]}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        names = [x509.DNSName(host)]
    names.append(x509.DNSName("localhost"))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    # PostgreSQL refuses a key that others may read.
    descriptor = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return files


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def binaries() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (PostgresUnavailable if none)."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(
        (d for d in DEBIAN_BINARIES.glob("*/bin") if (d / "initdb").is_file() and d.parent.name.isdigit()),
        key=lambda d: int(d.parent.name),
    )
    if versions:
        return versions[-1]
    raise PostgresUnavailable(
        f"no PostgreSQL server binaries: initdb is not on PATH nor in {DEBIAN_BINARIES}/*/bin"
    )


def free_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    def __init__(
        self,
        listen: str = "127.0.0.1",
        *,
        fsync: bool = False,
        bin_dir: Path | None = None,
        tls: bool = False,
    ) -> None:
        self.listen = listen
        self.fsync = fsync
        self.tls = tls
        self.tls_files: TlsFiles | None = None
        self.bin_dir = bin_dir or binaries()
        self.port = 0
        self.directory: Path | None = None
        self._as_root = os.geteuid() == 0

    # Life cycle --------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self.directory is not None, "the server was never started"
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        assert self.directory is not None, "the server was never started"
        return self.directory / "log"

    @property
    def ca_path(self) -> Path:
        """The certificate of the CA that signed the server's (a server with ``tls=True``)."""
        assert self.tls_files is not None, "the server has no TLS"
        return self.tls_files.ca

    def start(self) -> PostgresServer:
        """Create the server on first use, then start it (on the port it had, after a stop)."""
        first = self.directory is None
        if first:
            self._create()
        options = [
            *(["-F"] if not self.fsync else []),
            "-p",
            str(self.port),
            "-k",
            str(self.directory),
            "-c",
            f"listen_addresses={self.listen}",
        ]
        if self.tls_files is not None:
            options += [
                "-c",
                "ssl=on",
                "-c",
                f"ssl_cert_file={self.tls_files.certificate}",
                "-c",
                f"ssl_key_file={self.tls_files.key}",
            ]
        try:
            self._run(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    "60",
                    "start",
                    "-o",
                    shlex.join(options),
                ]
            )
        except subprocess.CalledProcessError as exc:
            if first:
                self.close()
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr.strip()}\n{self.log_tail()}") from exc
        if first:
            try:
                with self.connect() as admin:
                    admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(PASSWORD_GROUP)))
            except BaseException:
                self.close()
                raise
        return self

    def stop(self) -> None:
        """Stop the server (its data stays; :meth:`start` starts it again)."""
        if self.directory is None or not (self.data_dir / "postmaster.pid").exists():
            return
        pg_ctl = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "30", "stop"]
        try:
            self._run([*pg_ctl, "-m", "fast"])
        except subprocess.CalledProcessError:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run([*pg_ctl, "-m", "immediate"])
        self._kill_leftover()

    def close(self) -> None:
        """Stop the server and remove everything it wrote."""
        try:
            self.stop()
        finally:
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def processes(self) -> list[psutil.Process]:
        """The server's processes now: the postmaster and every process it started."""
        try:
            match = re.match(r"\s*(\d+)", (self.data_dir / "postmaster.pid").read_text())
            postmaster = psutil.Process(int(match.group(1))) if match else None
        except (OSError, AssertionError, psutil.NoSuchProcess):
            return []
        if postmaster is None:
            return []
        try:
            return [postmaster, *postmaster.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return ""

    # Databases and users ------------------------------------------------------------------

    def url(self, dbname: str = "postgres", user: str = SUPERUSER, password: str = "") -> str:
        host = f"[{self.listen}]" if ":" in self.listen else self.listen
        credentials = f"{user}:{password}" if password else user
        return f"postgresql://{credentials}@{host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection (autocommit), for setting things up."""
        return psycopg.connect(self.url(dbname), autocommit=True)

    def create_database(self, name: str = "", *, icu_locale: str = "") -> str:
        """A new empty database (a copy of template0); its URL. With ``icu_locale`` (e.g.
        "en-US"), text compares by that language's rules unless a column says otherwise."""
        name = name or f"db_{uuid.uuid4().hex[:12]}"
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        if icu_locale:
            statement += sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(icu_locale))
        with self.connect() as admin:
            admin.execute(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.connect() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def add_user(self, name: str, password: str) -> None:
        """A role that must log in with ``password``, owning nothing."""
        with self.connect() as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                    sql.Identifier(name), sql.Literal(password), sql.Identifier(PASSWORD_GROUP)
                )
            )

    # Inside ------------------------------------------------------------------------------

    def _create(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="confab-pg-"))
        try:
            if self._as_root:
                self._ensure_server_user()
                shutil.chown(self.directory, SERVER_USER)
            self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-A",
                    "trust",
                    "-U",
                    SUPERUSER,
                    "-E",
                    "UTF8",
                    "--locale=C",
                    *(["--no-sync"] if not self.fsync else []),
                ]
            )
            (self.data_dir / "pg_hba.conf").write_text(HBA_TLS if self.tls else HBA)
            if self.tls:
                self.tls_files = make_tls_files(self.directory / "tls", self.listen)
                if self._as_root:  # the server reads its key: its own user must own it
                    files = self.tls_files
                    for path in (self.directory / "tls", files.ca, files.certificate, files.key):
                        shutil.chown(path, SERVER_USER)
            self.port = free_port(self.listen)
        except BaseException:
            self.close()
            raise

    def _ensure_server_user(self) -> None:
        if subprocess.run(["id", SERVER_USER], capture_output=True).returncode != 0:
            subprocess.run(
                ["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", SERVER_USER],
                check=True,
                capture_output=True,
            )

    def _run(self, command: list[str]) -> None:
        prefix = ["runuser", "-u", SERVER_USER, "--"] if self._as_root else []
        subprocess.run(
            [*prefix, *command], check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )

    def _kill_leftover(self) -> None:
        """A postmaster that ``pg_ctl stop`` could not stop is killed (its backends follow it)."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            match = re.match(r"\s*(\d+)", pid_file.read_text())
        except OSError:
            return
        if match is None:
            return
        pid = int(match.group(1))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)
