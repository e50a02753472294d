"""Configuration: bundled defaults (``config/default.yaml``), a user file over them,
then command-line flags over both.

Unknown keys are errors: a typo in a config file must not be silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from confab.config import bundled_path


class ConfigError(ValueError):
    pass


SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

# A store.path that starts with one of these is a PostgreSQL database, not an SQLite file.
DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(location: str) -> bool:
    return location.startswith(DATABASE_URL_SCHEMES)


# libpq's key=value form: a keyword, "=" (spaces allowed around it), and a value that is either
# single-quoted (backslash escapes; an unterminated one runs to the end) or runs to whitespace.
# Whitespace is C's isspace(), as libpq's, not Unicode's: "\x1f" is part of a value.
_KEYWORD_VALUE = re.compile(
    r"(?P<key>[A-Za-z_][A-Za-z0-9_]*)[ \t\n\r\f\v]*=[ \t\n\r\f\v]*"
    r"(?P<value>'(?:\\.|[^'\\])*(?:'|\\?\Z)|(?:\\.|[^ \t\n\r\f\v\\])*\\?)",
    re.DOTALL,
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# A URL's query: from the first "?" after which all is key=value pairs. A "?" before it is part
# of something else (a password written raw), and so is an "@" before it: the user part ends
# at the last "@" before the query, wherever libpq would end it.
_QUERY = re.compile(r"\?[A-Za-z0-9_.%-]+=[^&]*(?:&[A-Za-z0-9_.%-]+=[^&]*)*\Z")
MASK = "***"


def without_password(location: str) -> str:
    """``location`` fit to be shown, its password (wherever libpq could find one) read ``***``.

    A URL (``postgresql://`` or ``postgres://``, any case) has it after the user in its user
    part, or in a ``password`` query parameter (a key of any case, percent-encoded or not); a
    libpq key=value string in ``password=``, quoted or not. A user part is read up to the last
    ``@`` before the query, not libpq's first, so that a password with a raw ``@``, ``/`` or
    ``?`` in it is hidden too. Anything else (an SQLite file) comes back as it is."""
    return _masked(location)[0]


def passwords_in(location: str) -> list[str]:
    """Every piece of ``location`` that :func:`without_password` hides, as written and decoded:
    what must not appear in a message about it either (libpq quotes a piece it cannot read)."""
    from urllib.parse import unquote

    found = _masked(location)[1]
    return [p for p in {*found, *(unquote(p) for p in found)} if p]


def _masked(location: str) -> tuple[str, list[str]]:
    """(``location`` with its passwords masked, the pieces masked)."""
    hidden: list[str] = []
    scheme = _SCHEME.match(location)
    if scheme is None:

        def mask_keyword(found: re.Match[str]) -> str:
            if found.group("key").lower() != "password":
                return found.group()
            hidden.append(found.group("value"))
            return found.group()[: found.start("value") - found.start()] + MASK

        return _KEYWORD_VALUE.sub(mask_keyword, location), hidden
    rest = location[scheme.end() :]
    query_found = _QUERY.search(rest)
    at = rest.rfind("@", 0, query_found.start() if query_found else len(rest))
    if at >= 0:
        user, colon, password = rest[:at].partition(":")
        hidden.append(password)
        rest = f"{user}{colon}{MASK if colon else ''}@{rest[at + 1 :]}"
    authority, question, query = rest.partition("?")
    if question:
        parameters = query.split("&")
        for i, parameter in enumerate(parameters):
            if _is_password_parameter(parameter):
                key, _, value = parameter.partition("=")
                hidden.append(value)
                parameters[i] = f"{key}={MASK}"
        query = "&".join(parameters)
    return f"{scheme.group()}{authority}{question}{query}", hidden


def split_password(url: str) -> tuple[str, str]:
    """``url`` without its password, and the password as libpq reads it ("" if it has none).

    What ``confab serve`` passes on is then free of it; the password goes where libpq also
    looks (``PGPASSWORD``). A URL libpq cannot read comes back whole: opening it fails anyway,
    and says why (without the password)."""
    from psycopg import Error as PsycopgError
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = str(conninfo_to_dict(url).get("password") or "")
    except PsycopgError:
        return url, ""
    if not password:
        return url, ""
    scheme = _SCHEME.match(url)
    assert scheme is not None  # conninfo_to_dict found a password, and a URL is all serve takes
    rest = url[scheme.end() :]
    # libpq's own rule for the user part: up to the first "@" if no "/" comes before it.
    at, slash = rest.find("@"), rest.find("/")
    if at >= 0 and (slash < 0 or at < slash):
        rest = rest[:at].partition(":")[0] + rest[at:]
    authority, question, query = rest.partition("?")
    kept = [p for p in query.split("&") if p and not _is_password_parameter(p)] if question else []
    return f"{scheme.group()}{authority}{'?' if kept else ''}{'&'.join(kept)}", password


def _is_password_parameter(parameter: str) -> bool:
    from urllib.parse import unquote

    return unquote(parameter.partition("=")[0]).strip().lower() == "password"


@dataclass(slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    # Seconds in-flight RPCs get to finish after SIGTERM/SIGINT.
    shutdown_grace_s: float = 10.0
    max_message_bytes: int = 4 * 1024 * 1024
    max_batch_messages: int = 1000
    # A stream with no request (heartbeat included) for this long is closed.
    stream_idle_timeout_s: float = 300.0
    # gRPC edge processes sharing the listening port (SO_REUSEPORT), each with its own event
    # loop, engine and links to every shard; 0 = auto (ConfabConfig.edge_count). 1 = the edge
    # runs in the `confab serve` process itself, beside the actor host.
    edges: int = 0


@dataclass(slots=True)
class EngineConfig:
    # 0 means one shard per CPU.
    shards: int = 0
    # Conversations kept in memory per shard; the least recently used beyond it are passivated.
    resident_conversations_per_shard: int = 100_000
    # Most commands carried by one edge→shard message.
    max_commands_per_batch: int = 512
    max_batches_in_flight: int = 2
    # Most commands waiting per shard before new requests get RESOURCE_EXHAUSTED.
    max_queued_per_shard: int = 20_000
    # How long the edge waits for a shard before declaring it unavailable.
    shard_timeout_s: float = 30.0
    # The edge asks each shard how it is this often; a shard silent for heartbeat_timeout_s is
    # reported unresponsive (health turns NOT_SERVING).
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 3.0
    # Turns (message id and reply) kept per conversation: at least the last turns_kept, and every
    # turn younger than idempotency_window_s. A command re-sent by the edge, or a request a client
    # repeats with the same metadata.request_id, within the window gets its first reply again.
    turns_kept: int = 32
    idempotency_window_s: float = 3600.0
    # Each turn's message (masked as its flow says), time and webhook answers are kept this long,
    # for replays of real traffic against a new version of a flow (`confab flows replay`); 0: off.
    history_retention_s: float = 604800.0
    # Conversation analytics (docs/analytics.md): counted by the shards from the turns they run
    # and written in the same transaction; false turns the counting off.
    analytics: bool = True


@dataclass(slots=True)
class StoreConfig:
    # An SQLite file (relative paths are under --data-dir), or a PostgreSQL URL
    # (postgresql://USER@HOST:PORT/DB; the password may come from PGPASSWORD or ~/.pgpass, and
    # one in the URL is moved there by `confab serve`). Its query goes to libpq as given:
    # ?sslmode=verify-full&sslrootcert=CA_FILE checks the server's certificate and name.
    path: str = "confab.sqlite3"
    # SQLite only. FULL: a commit survives power loss; NORMAL: it survives any process crash.
    # PostgreSQL commits as the server's synchronous_commit says.
    synchronous: str = "FULL"


@dataclass(slots=True)
class ClusterConfig:
    # The address this host's shards listen on for the other hosts' edges. "" (the default):
    # this host is alone. Set, this host is a member of the cluster that shares its store
    # (a PostgreSQL URL): hosts find each other in the store's member table.
    advertise: str = ""
    name: str = "confab"  # the cluster's name: hosts of another cluster are refused on the data plane
    host_id: str = ""  # this host's name in the cluster ("" = the advertise address)
    vshards: int = 256  # virtual shards conversations are hashed onto; the same on every host, forever
    heartbeat_every_s: float = 1.0  # each host writes its row of the member table this often
    lost_after_s: float = 3.0  # a host silent this long is lost: its virtual shards move
    lease_s: float = 4.0  # a virtual shard is held this long without renewal (the store's clock)
    renew_every_s: float = 1.0
    handoff_timeout_s: float = 20.0  # on SIGTERM, how long to wait for the other hosts to take over
    # The data plane between hosts: mutual TLS with the cluster's own CA (`confab cluster certs`).
    ca_file: str = ""  # PEM: the cluster's CA
    cert_file: str = ""  # PEM: this host's certificate, signed by that CA
    key_file: str = ""  # PEM: its private key
    insecure_plaintext: bool = False  # plain TCP between hosts: a network nobody else can reach only

    @property
    def enabled(self) -> bool:
        """This host is a member of a cluster (it advertises an address to the others)."""
        return bool(self.advertise)

    @property
    def advertised(self) -> str:
        return self.advertise or "127.0.0.1"

    @property
    def host_name(self) -> str:
        return self.host_id or self.advertised


@dataclass(slots=True)
class DataPlaneConfig:
    """Bounds on what one peer of the data plane (the edge ⇄ shard connections) may cost a shard."""

    max_frame_bytes: int = 16 * 1024 * 1024  # a longer frame closes its connection; batches are cut to fit
    max_connections: int = 256  # per shard; more are refused
    idle_timeout_s: float = 300.0  # a connection that sent nothing this long is closed
    handshake_timeout_s: float = 10.0  # TLS and HELLO must be done within this
    max_inbound_frames: int = 1024  # batches and queries read and not yet run: reading pauses above


@dataclass(slots=True)
class WebhookConfig:
    """A webhook flows may call by name (the URL lives here, not in flow files)."""

    name: str = ""
    url: str = ""
    timeout_s: float = 5.0  # per attempt
    retries: int = 1  # attempts after the first one fails
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class FlowsConfig:
    # The flow a new conversation starts on (a tenant with flows of its own gets its own).
    default: str = "echo"
    # Directories of flow files loaded after the bundled ones (relative to the working directory).
    dirs: list[str] = field(default_factory=list)
    # The bundled pizza flow's price service (`confab price-service` is a local stand-in).
    webhooks: list[WebhookConfig] = field(
        default_factory=lambda: [WebhookConfig("price", "http://127.0.0.1:8099/price", 2.0, 1)]
    )


@dataclass(slots=True)
class ModelProviderConfig:
    """A language model flows' generate steps may call by name: an OpenAI-compatible
    chat-completions server (runtime.models). Its key is never here: ``api_key_env`` names
    the environment variable that holds it."""

    name: str = ""
    base_url: str = ""  # e.g. http://127.0.0.1:11434/v1 (Ollama)
    model: str = ""
    api_key_env: str = ""  # "" = the server needs no key
    timeout_s: float = 30.0  # per attempt: connection, first chunk, and between two chunks
    retries: int = 1  # attempts after the first (429, 5xx, timeouts, connection errors), before any chunk
    max_tokens: int = 512  # of an answer, unless the step says fewer
    temperature: float = 0.3
    stream: bool = True  # false: the whole answer at once (servers that cannot stream)
    # The whole call, every attempt, pause and chunk: a stream still going then is closed.
    max_duration_s: float = 60.0


@dataclass(slots=True)
class ModelBudgetConfig:
    # Tokens a tenant's model calls may spend per UTC day, over every provider; 0 = no limit.
    tokens_per_day: int = 0
    # A tenant's own limit instead (0 = none): {acme: 200000}.
    tenants: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ModelsConfig:
    providers: list[ModelProviderConfig] = field(default_factory=list)
    budget: ModelBudgetConfig = field(default_factory=ModelBudgetConfig)
    max_concurrent: int = 16  # model calls at once, per shard


@dataclass(slots=True)
class LimitsConfig:
    # Longest tenant_id, conversation_id, user_id and session_id, in characters (INVALID_ARGUMENT beyond).
    max_id_chars: int = 128
    # Longest content.text / content.payload of one message, in characters (INVALID_ARGUMENT beyond).
    max_text_chars: int = 16_384
    max_payload_chars: int = 65_536
    # Open StreamConversation calls; one more gets RESOURCE_EXHAUSTED at once.
    max_concurrent_streams: int = 1_000
    # Unary calls served at once (streams, health and reflection not counted); more get RESOURCE_EXHAUSTED.
    max_in_flight_rpcs: int = 10_000
    # Messages per second per tenant (token bucket, per message: a batch of N costs N); 0 = off.
    tenant_rate_per_s: float = 0.0
    # Bucket size: most messages a tenant may send at once, and so per batch, while a rate is set.
    tenant_burst: int = 100


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("auto", "json", "text")


@dataclass(slots=True)
class LoggingConfig:
    # --log-level overrides it.
    level: str = "INFO"
    # json, text, or auto: text when stderr is a terminal, json otherwise.
    format: str = "auto"
    # Privacy: message text stays out of every log unless this is true.
    log_message_text: bool = False


AUTH_MODES = ("off", "required")
JWT_ALGORITHMS = ("HS256", "RS256", "ES256")


@dataclass(slots=True)
class ApiKeyConfig:
    # Shown in logs instead of the key; never the key itself.
    name: str = ""
    # SHA-256 (hex) of the key: the key itself is never stored (`confab keys hash`).
    sha256: str = ""
    tenant: str = ""
    roles: list[str] = field(default_factory=list)


@dataclass(slots=True)
class JwtConfig:
    # Accepted signature algorithms; a token naming any other is rejected.
    algorithms: list[str] = field(default_factory=lambda: list(JWT_ALGORITHMS))
    # HS256 shared secret (at least 32 bytes), inline or, better, in a file.
    hs256_secret: str = ""
    hs256_secret_file: str = ""
    # PEM public keys (RSA for RS256, P-256 for ES256); several allow key rotation.
    public_key_files: list[str] = field(default_factory=list)
    # Both are required in every token once any JWT key is configured.
    issuer: str = ""
    audience: str = ""
    tenant_claim: str = "tenant_id"
    roles_claim: str = "roles"
    # Clock skew tolerated on exp/nbf/iat.
    leeway_s: float = 0.0


@dataclass(slots=True)
class AuthConfig:
    # "off" lets every caller act on every tenant (development only); "required" for production.
    mode: str = "off"
    api_keys: list[ApiKeyConfig] = field(default_factory=list)
    jwt: JwtConfig = field(default_factory=JwtConfig)


@dataclass(slots=True)
class TlsConfig:
    # PEM files; no cert_file means plaintext. A client_ca_file makes client certificates required.
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""


@dataclass(slots=True)
class TelemetryConfig:
    # HOST:PORT of a Prometheus scrape endpoint (also --metrics-listen); "" serves none.
    # Traces and other metric exporters follow the standard OTEL_* variables (runtime.telemetry).
    metrics_listen: str = ""


@dataclass(slots=True)
class ConfabConfig:
    data_dir: str = "./var"
    server: ServerConfig = field(default_factory=ServerConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    data_plane: DataPlaneConfig = field(default_factory=DataPlaneConfig)
    flows: FlowsConfig = field(default_factory=FlowsConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def shard_count(self) -> int:
        return self.engine.shards or os.cpu_count() or 1

    @property
    def edge_count(self) -> int:
        """``server.edges``, or with 0 what this host's cores carry beside its shards: the edge
        spends about two thirds of the CPU of a message (README "Several edges"), so two thirds
        of the cores, at least one."""
        return self.server.edges or auto_edges(os.cpu_count() or 1)

    @property
    def store_is_database(self) -> bool:
        """Whether the store is a PostgreSQL database (store.path is its URL)."""
        return is_database_url(self.store.path)

    @property
    def store_path(self) -> Path:
        """The SQLite file (a relative store.path is under data_dir)."""
        path = Path(self.store.path)
        return path if path.is_absolute() else Path(self.data_dir) / path

    @property
    def store_location(self) -> str:
        """What every shard opens: the database URL as given, or the SQLite file's absolute path."""
        return self.store.path if self.store_is_database else str(self.store_path.resolve())

    @property
    def store_shown(self) -> str:
        """The store as logs and operators see it: the URL without its password, or the file."""
        return without_password(self.store.path) if self.store_is_database else str(self.store_path)

    @property
    def store_dir(self) -> Path:
        """The local directory the store's disk is measured by: the file's, or data_dir for a database."""
        return Path(self.data_dir) if self.store_is_database else self.store_path.parent


def auto_edges(cpus: int) -> int:
    """Edge processes for a host of ``cpus`` cores when ``server.edges`` is 0."""
    return max(1, cpus * 2 // 3)


def config_to_mapping(config: ConfabConfig) -> dict[str, Any]:
    """Every setting as plain values (what :func:`config_from_mapping` reads back)."""
    return dataclasses.asdict(config)


def config_from_mapping(data: dict[str, Any]) -> ConfabConfig:
    """A configuration from :func:`config_to_mapping`'s values, checked like a file's."""
    config = ConfabConfig()
    _merge(config, data, "")
    _validate(config)
    return config


def load_config(path: str | Path | None = None, **overrides: Any) -> ConfabConfig:
    """Bundled defaults, then the file at ``path``, then ``overrides`` ("server.listen": ...)."""
    config = ConfabConfig()
    _merge(config, _read_yaml(bundled_path("default.yaml")), "")
    if path is not None:
        _merge(config, _read_yaml(Path(path)), "")
    for dotted, value in overrides.items():
        if value is None:
            continue
        nested: Any = value
        for name in reversed(dotted.split(".")):
            nested = {name: nested}
        _merge(config, nested, "")
    _validate(config)
    return config


def _validate_webhooks(webhooks: list[WebhookConfig]) -> None:
    names = [w.name for w in webhooks]
    for i, webhook in enumerate(webhooks):
        where = f"flows.webhooks[{i}]"
        if not webhook.name:
            raise ConfigError(f"{where}.name is required")
        if not webhook.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url must be an http:// or https:// URL, got {webhook.url!r}")
        if webhook.timeout_s <= 0 or webhook.retries < 0:
            raise ConfigError(f"{where}: timeout_s must be > 0 and retries >= 0")
    if len(set(names)) != len(names):
        raise ConfigError("flows.webhooks names must be unique")


ENVIRONMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _validate_models(models: ModelsConfig) -> None:
    names = [p.name for p in models.providers]
    for i, provider in enumerate(models.providers):
        where = f"models.providers[{i}]"
        if not ENVIRONMENT_NAME.match(provider.name or "-"):
            raise ConfigError(f"{where}.name is required: letters, digits and _ (flows name it)")
        if not provider.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{where}.base_url must be an http:// or https:// URL, got {provider.base_url!r}"
            )
        if not provider.model:
            raise ConfigError(f"{where}.model is required (the model's name on that server)")
        if provider.api_key_env and not ENVIRONMENT_NAME.match(provider.api_key_env):
            # Never echoed: a key written here by mistake must not reach a log.
            raise ConfigError(
                f"{where}.api_key_env must be the NAME of the environment variable that holds the key"
                " (e.g. OPENAI_API_KEY), never the key itself"
            )
        checks = [
            (provider.timeout_s > 0, "timeout_s must be > 0"),
            (provider.max_duration_s > 0, "max_duration_s must be > 0"),
            (provider.retries >= 0, "retries must be >= 0"),
            (provider.max_tokens >= 1, "max_tokens must be >= 1"),
            (0.0 <= provider.temperature <= 2.0, "temperature must be between 0 and 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{where}.{message}")
    if len(set(names)) != len(names):
        raise ConfigError("models.providers names must be unique")
    budget = models.budget
    if budget.tokens_per_day < 0:
        raise ConfigError("models.budget.tokens_per_day must be 0 (no limit) or more")
    for tenant, tokens in budget.tenants.items():
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ConfigError(f"models.budget.tenants.{tenant} must be a number of tokens (0: no limit)")
    if models.max_concurrent < 1:
        raise ConfigError("models.max_concurrent must be >= 1")


def _validate(config: ConfabConfig) -> None:
    _validate_webhooks(config.flows.webhooks)
    _validate_models(config.models)
    checks = [
        (config.engine.shards >= 0, "engine.shards must be 0 (one per CPU) or more"),
        (
            config.engine.resident_conversations_per_shard >= 1,
            "engine.resident_conversations_per_shard must be >= 1",
        ),
        (config.engine.max_commands_per_batch >= 1, "engine.max_commands_per_batch must be >= 1"),
        (config.engine.max_batches_in_flight >= 1, "engine.max_batches_in_flight must be >= 1"),
        (config.engine.max_queued_per_shard >= 1, "engine.max_queued_per_shard must be >= 1"),
        (config.engine.shard_timeout_s > 0, "engine.shard_timeout_s must be > 0"),
        (config.engine.turns_kept >= 1, "engine.turns_kept must be >= 1"),
        (config.engine.history_retention_s >= 0, "engine.history_retention_s must be 0 (off) or more"),
        (config.engine.heartbeat_interval_s > 0, "engine.heartbeat_interval_s must be > 0"),
        (
            config.engine.heartbeat_timeout_s > config.engine.heartbeat_interval_s,
            "engine.heartbeat_timeout_s must be longer than engine.heartbeat_interval_s",
        ),
        (
            config.engine.idempotency_window_s >= config.engine.shard_timeout_s,
            "engine.idempotency_window_s must be at least engine.shard_timeout_s"
            " (a re-sent command must still be recognised)",
        ),
        (config.server.shutdown_grace_s >= 0, "server.shutdown_grace_s must be >= 0"),
        (config.server.max_batch_messages >= 1, "server.max_batch_messages must be >= 1"),
        (config.server.stream_idle_timeout_s > 0, "server.stream_idle_timeout_s must be > 0"),
        (0 <= config.server.edges <= 64, "server.edges must be 0 (auto) to 64"),
        (
            config.store.synchronous.upper() in SYNCHRONOUS_MODES,
            f"store.synchronous must be one of {SYNCHRONOUS_MODES}",
        ),
        (
            config.telemetry.metrics_listen == ""
            or config.telemetry.metrics_listen.rpartition(":")[2].isdigit(),
            "telemetry.metrics_listen must be HOST:PORT (or empty)",
        ),
        (config.limits.max_id_chars >= 1, "limits.max_id_chars must be >= 1"),
        (config.limits.max_text_chars >= 1, "limits.max_text_chars must be >= 1"),
        (config.limits.max_payload_chars >= 1, "limits.max_payload_chars must be >= 1"),
        (config.limits.max_concurrent_streams >= 1, "limits.max_concurrent_streams must be >= 1"),
        (config.limits.max_in_flight_rpcs >= 1, "limits.max_in_flight_rpcs must be >= 1"),
        (config.limits.tenant_rate_per_s >= 0, "limits.tenant_rate_per_s must be 0 (off) or more"),
        (config.limits.tenant_burst >= 1, "limits.tenant_burst must be >= 1"),
        (config.logging.level.upper() in LOG_LEVELS, f"logging.level must be one of {LOG_LEVELS}"),
        (config.logging.format in LOG_FORMATS, f"logging.format must be one of {LOG_FORMATS}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _validate_auth(config.auth)
    _validate_tls(config.tls)
    _validate_cluster(config.cluster, config.store.path)
    _validate_data_plane(config.cluster, config.data_plane)


def _validate_cluster(cluster: ClusterConfig, store_path: str) -> None:
    if cluster.enabled:
        if cluster.advertise in ("0.0.0.0", "::", "*"):
            raise ConfigError(
                "cluster.advertise (--advertise) must be the one address of this host the other hosts"
                " reach it at, never all interfaces"
            )
        if not is_database_url(store_path):
            raise ConfigError(
                "a cluster's hosts share one PostgreSQL store: with cluster.advertise (--advertise),"
                " store.path (--store) must be a postgresql:// URL"
            )
    checks = [
        (1 <= cluster.vshards <= 65536, "cluster.vshards must be 1..65536"),
        (
            bool(re.fullmatch(r"[A-Za-z0-9._-]{1,64}", cluster.name)),
            "cluster.name must be 1-64 characters of A-Z a-z 0-9 . _ -",
        ),
        (cluster.heartbeat_every_s > 0, "cluster.heartbeat_every_s must be > 0"),
        (
            cluster.lost_after_s > 2 * cluster.heartbeat_every_s,
            "cluster.lost_after_s must be more than twice cluster.heartbeat_every_s",
        ),
        (
            cluster.lease_s > 2 * cluster.renew_every_s > 0,
            "cluster.lease_s must be more than twice cluster.renew_every_s (and both > 0)",
        ),
        (cluster.handoff_timeout_s >= 0, "cluster.handoff_timeout_s must be >= 0"),
        ("/" not in cluster.host_id, "cluster.host_id must not contain '/'"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _validate_data_plane(cluster: ClusterConfig, plane: DataPlaneConfig) -> None:
    checks = [
        (plane.max_frame_bytes >= 64 * 1024, "data_plane.max_frame_bytes must be at least 65536"),
        (plane.max_connections >= 1, "data_plane.max_connections must be >= 1"),
        (plane.idle_timeout_s > 0, "data_plane.idle_timeout_s must be > 0"),
        (plane.handshake_timeout_s > 0, "data_plane.handshake_timeout_s must be > 0"),
        (plane.max_inbound_frames >= 1, "data_plane.max_inbound_frames must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    files = {"cluster.ca_file": cluster.ca_file, "cluster.cert_file": cluster.cert_file}
    files["cluster.key_file"] = cluster.key_file
    given = {key: path for key, path in files.items() if path}
    if cluster.insecure_plaintext:
        if given:
            raise ConfigError(f"cluster.insecure_plaintext is true: {', '.join(given)} would not be used")
        return
    if given and len(given) < len(files):
        missing = sorted(set(files) - set(given))
        raise ConfigError(
            f"{', '.join(missing)} missing: the cluster's TLS needs the CA, a certificate and its key"
        )
    if cluster.advertise and not given:
        raise ConfigError(
            "a cluster (cluster.advertise) needs cluster.ca_file, cluster.cert_file and cluster.key_file"
            " (--cluster-ca, --cluster-cert, --cluster-key; `confab cluster certs` makes them), or"
            " cluster.insecure_plaintext on a network nobody else can reach"
        )
    if given:
        _check_tls_files(cluster.ca_file, cluster.cert_file, cluster.key_file)


def _check_tls_files(ca_file: str, cert_file: str, key_file: str) -> None:
    """Load the cluster's TLS files as the data plane will, so that a bad one stops the start."""
    for key, path in (
        ("cluster.ca_file", ca_file),
        ("cluster.cert_file", cert_file),
        ("cluster.key_file", key_file),
    ):
        if not Path(path).is_file():
            raise ConfigError(f"{key}: no such file: {path}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cluster.ca_file {ca_file}: not a PEM CA certificate ({exc})") from exc
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cluster.cert_file {cert_file} and cluster.key_file {key_file} do not load as a certificate"
            f" and its key ({exc})"
        ) from exc


def _validate_auth(auth: AuthConfig) -> None:
    if auth.mode not in AUTH_MODES:
        raise ConfigError(f"auth.mode must be one of {AUTH_MODES}, got {auth.mode!r}")
    for i, key in enumerate(auth.api_keys):
        where = f"auth.api_keys[{i}]"
        if not key.name:
            raise ConfigError(f"{where}.name is required")
        if len(key.sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key.sha256):
            raise ConfigError(f"{where}.sha256 must be 64 hex digits (see `confab keys hash`)")
        if not key.tenant and "operator" not in key.roles:
            raise ConfigError(f"{where}.tenant is required (only an operator key may have none)")
    names = [key.name for key in auth.api_keys]
    if len(set(names)) != len(names):
        raise ConfigError("auth.api_keys names must be unique")
    jwt = auth.jwt
    unknown = set(jwt.algorithms) - set(JWT_ALGORITHMS)
    if unknown:
        raise ConfigError(f"auth.jwt.algorithms: unknown {sorted(unknown)}; known: {list(JWT_ALGORITHMS)}")
    if jwt.hs256_secret and jwt.hs256_secret_file:
        raise ConfigError("auth.jwt: set hs256_secret or hs256_secret_file, not both")
    jwt_configured = bool(jwt.hs256_secret or jwt.hs256_secret_file or jwt.public_key_files)
    if jwt_configured and not (jwt.issuer and jwt.audience):
        # Without them, any token its issuer signed for any other service would be accepted.
        raise ConfigError("auth.jwt.issuer and auth.jwt.audience are required once a JWT key is set")
    if jwt_configured and not (jwt.tenant_claim and jwt.roles_claim):
        raise ConfigError("auth.jwt.tenant_claim and auth.jwt.roles_claim must not be empty")
    if jwt.leeway_s < 0:
        raise ConfigError("auth.jwt.leeway_s must be >= 0")
    if auth.mode == "required" and not (auth.api_keys or jwt_configured):
        raise ConfigError("auth.mode is required but no api_keys and no JWT key are configured")


def _validate_tls(tls: TlsConfig) -> None:
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("tls.cert_file and tls.key_file go together")
    if tls.client_ca_file and not tls.cert_file:
        raise ConfigError("tls.client_ca_file needs tls.cert_file and tls.key_file")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _merge(target: Any, data: dict[str, Any], prefix: str) -> None:
    for key, value in data.items():
        _set(target, key, value, f"{prefix}{key}")


def _set(target: Any, key: str, value: Any, where: str) -> None:
    names = {f.name: f for f in dataclasses.fields(target)}
    if key not in names:
        if key == "api_key" and isinstance(target, ModelProviderConfig):
            raise ConfigError(
                f"{where}: a key never goes in the config; put it in an environment variable and"
                " name that variable in api_key_env"
            )
        raise ConfigError(f"unknown config key {where!r}; expected one of {sorted(names)}")
    current = getattr(target, key)
    if dataclasses.is_dataclass(current):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {where!r} must be a mapping")
        _merge(current, value, f"{where}.")
        return
    if isinstance(current, list):
        setattr(target, key, _list_value(target, key, value, where))
        return
    kind = type(current)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        # YAML 1.1 reads unquoted off/on/yes/no as booleans (auth.mode: off).
        hint = "; quote it" if kind is str and isinstance(value, bool) else ""
        raise ConfigError(f"config key {where!r} must be {kind.__name__}, got {value!r}{hint}")
    setattr(target, key, value)


def _list_value(target: Any, key: str, value: Any, where: str) -> list[Any]:
    """A list from a file replaces the default whole; each item is checked like any other key."""
    if not isinstance(value, list):
        raise ConfigError(f"config key {where!r} must be a list, got {value!r}")
    item_type: Any
    (item_type,) = typing.get_args(typing.get_type_hints(type(target))[key])
    items: list[Any] = []
    for i, item in enumerate(value):
        item_where = f"{where}[{i}]"
        if isinstance(item_type, type) and dataclasses.is_dataclass(item_type):
            if not isinstance(item, dict):
                raise ConfigError(f"config key {item_where!r} must be a mapping")
            built = item_type()
            _merge(built, item, f"{item_where}.")
            items.append(built)
        elif isinstance(item, item_type) and not isinstance(item, bool):
            items.append(item)
        else:
            raise ConfigError(f"config key {item_where!r} must be {item_type.__name__}, got {item!r}")
    return items
