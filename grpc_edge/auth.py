"""Who is calling, and which tenant they may act on.

:class:`AuthGuard` (a call guard, ``grpc_edge.guards``) turns the call's credentials
into a :class:`Principal` and puts it into the call's
:class:`~confab.grpc_edge.call.CallInfo`, or fails the call with UNAUTHENTICATED.
Two kinds of credentials are accepted:

- ``x-api-key: KEY``: configured only as the key's SHA-256, bound to a tenant and roles;
- ``authorization: Bearer JWT``: HS256, RS256 or ES256, with issuer, audience and
  expiry checked by PyJWT; tenant and roles come from configurable claims.

Health and reflection stay open, so load balancers and tooling need no secret.

Services then call :func:`authorize_tenant` wherever a request names a tenant
(every request does), and :func:`require_role` before anything privileged. With
``auth.mode: off`` there is no principal and both let everything through.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from confab.grpc_edge.call import CallInfo, current_call
from confab.grpc_edge.guards import CallGuard, Context, Handler
from confab.runtime.config import AuthConfig, ConfigError, JwtConfig
from confab.runtime.errors import InternalError, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

# Methods any caller may use: probes and tooling must work without a secret.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/mcp.health.v2.Health/", "/grpc.reflection.")
# The Admin API's two roles: a tenant's administrator acts on that tenant's conversations only;
# an operator runs the service (cluster-wide views and actions, every tenant) and needs no tenant.
ADMIN_ROLE = "admin"
OPERATOR_ROLE = "operator"
# A person who answers a tenant's handed-off conversations: Admin.SendAgentMessage alone.
AGENT_ROLE = "agent"
API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
API_KEY_PREFIX = "cfb_"  # lets secret scanners recognise a leaked key
MIN_HS256_SECRET_BYTES = 32  # RFC 7518 §3.2: at least the hash size
MIN_RSA_BITS = 2048


class CredentialKind(enum.StrEnum):
    API_KEY = "api_key"
    JWT = "jwt"


@dataclass(frozen=True, slots=True)
class Principal:
    # For an API key "key:<name>", for a JWT its `sub` claim.
    subject: str
    tenant_id: str
    roles: frozenset[str]
    credential: CredentialKind


def is_open(method: str) -> bool:
    return method.startswith(OPEN_METHOD_PREFIXES)


# API keys ---------------------------------------------------------------------


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest that the config stores instead of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class _ApiKey:
    name: str
    digest: bytes
    principal: Principal


class _ApiKeys:
    def __init__(self, keys: Iterable[_ApiKey]) -> None:
        self.keys = tuple(keys)

    def verify(self, presented: str) -> Principal:
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found: Principal | None = None
        # Every key is compared, in constant time, so timing tells nothing about which matched.
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key.principal
        if found is None:
            raise Unauthenticated("invalid API key")
        return found


# JWT ----------------------------------------------------------------------------

# PyJWT's reasons, in words a client can act on; the signature is checked before any claim.
_JWT_ERRORS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.ExpiredSignatureError, "bearer token has expired"),
    (jwt.ImmatureSignatureError, "bearer token is not valid yet"),
    (jwt.InvalidAudienceError, "bearer token is for another audience"),
    (jwt.InvalidIssuerError, "bearer token is from an unknown issuer"),
)


class _JwtVerifier:
    def __init__(self, config: JwtConfig, keys_by_algorithm: dict[str, list[Any]]) -> None:
        self.config = config
        self.keys_by_algorithm = keys_by_algorithm

    @classmethod
    def from_config(cls, config: JwtConfig) -> _JwtVerifier | None:
        keys: dict[str, list[Any]] = {}
        secret = _hs256_secret(config)
        if secret is not None:
            keys.setdefault("HS256", []).append(secret)
        for path in config.public_key_files:
            algorithm, key = _public_key(path)
            keys.setdefault(algorithm, []).append(key)
        if not keys:
            return None
        disabled = sorted(set(keys) - set(config.algorithms))
        if disabled:
            raise ConfigError(f"auth.jwt: keys for {disabled} are configured but not in auth.jwt.algorithms")
        return cls(config, keys)

    def verify(self, token: str) -> Principal:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated("malformed bearer token") from exc
        keys = self.keys_by_algorithm.get(algorithm) if isinstance(algorithm, str) else None
        if not keys or not isinstance(algorithm, str):
            raise Unauthenticated(f"bearer tokens signed with {algorithm!r} are not accepted")
        claims = self._decode(token, algorithm, keys)
        roles = self._roles(claims.get(self.config.roles_claim))
        tenant_id = claims.get(self.config.tenant_claim, "")
        # Only an operator's token may name no tenant: it then acts on no tenant's conversations.
        if not isinstance(tenant_id, str) or not (tenant_id or OPERATOR_ROLE in roles):
            raise Unauthenticated(f"bearer token has no {self.config.tenant_claim!r} claim")
        subject = claims.get("sub", "")
        return Principal(
            subject=subject if isinstance(subject, str) else str(subject),
            tenant_id=tenant_id,
            roles=roles,
            credential=CredentialKind.JWT,
        )

    def _decode(self, token: str, algorithm: str, keys: list[Any]) -> dict[str, Any]:
        # Several keys per algorithm allow rotation: the token is good if any of them signed it.
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],  # never the token's own choice of algorithm
                    audience=self.config.audience,
                    issuer=self.config.issuer,
                    leeway=self.config.leeway_s,
                    options={"require": ["exp", "iss", "aud"]},
                )
                return claims
            except jwt.InvalidSignatureError:
                continue
            except jwt.MissingRequiredClaimError as exc:
                raise Unauthenticated(f"bearer token has no {exc.claim!r} claim") from exc
            except jwt.InvalidTokenError as exc:
                reason = next((m for kind, m in _JWT_ERRORS if isinstance(exc, kind)), "invalid bearer token")
                raise Unauthenticated(reason) from exc
        raise Unauthenticated("bearer token signature does not verify")

    def _roles(self, claim: Any) -> frozenset[str]:
        if claim is None:
            return frozenset()
        if isinstance(claim, str):  # OAuth-style "scope" strings are space-separated
            return frozenset(claim.split())
        if isinstance(claim, list) and all(isinstance(role, str) for role in claim):
            return frozenset(claim)
        raise Unauthenticated(f"bearer token claim {self.config.roles_claim!r} must be a list of strings")


def _hs256_secret(config: JwtConfig) -> bytes | None:
    if config.hs256_secret_file:
        try:
            secret = Path(config.hs256_secret_file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise ConfigError(f"auth.jwt.hs256_secret_file: {exc}") from exc
    elif config.hs256_secret:
        secret = config.hs256_secret.encode("utf-8")
    else:
        return None
    if len(secret) < MIN_HS256_SECRET_BYTES:
        raise ConfigError(f"auth.jwt: the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes")
    return secret


def _public_key(path: str) -> tuple[str, Any]:
    """The algorithm a PEM public key verifies, and the key."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"auth.jwt.public_key_files: {path}: {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"auth.jwt.public_key_files: {path}: RSA keys need {MIN_RSA_BITS} bits or more")
        return "RS256", key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256", key
    raise ConfigError(f"auth.jwt.public_key_files: {path}: expected an RSA or P-256 public key")


# Authentication ---------------------------------------------------------------


class Authenticator:
    """Turns a call's metadata into a Principal, or raises Unauthenticated."""

    def __init__(self, api_keys: _ApiKeys, jwt_verifier: _JwtVerifier | None) -> None:
        self.api_keys = api_keys
        self.jwt_verifier = jwt_verifier

    @classmethod
    def from_config(cls, config: AuthConfig) -> Authenticator | None:
        """None when auth is off. Reads key files now, so a bad one stops the server at start."""
        if config.mode == "off":
            return None
        api_keys = _ApiKeys(
            _ApiKey(
                key.name,
                bytes.fromhex(key.sha256),
                Principal(f"key:{key.name}", key.tenant, frozenset(key.roles), CredentialKind.API_KEY),
            )
            for key in config.api_keys
        )
        return cls(api_keys, _JwtVerifier.from_config(config.jwt))

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        api_keys = _values(metadata, API_KEY_HEADER)
        authorizations = _values(metadata, AUTHORIZATION_HEADER)
        if len(api_keys) + len(authorizations) > 1:
            raise Unauthenticated(f"send exactly one credential: {API_KEY_HEADER} or {AUTHORIZATION_HEADER}")
        if api_keys:
            return self.api_keys.verify(api_keys[0])
        if authorizations:
            scheme, _, token = authorizations[0].partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated(f"{AUTHORIZATION_HEADER} must be 'Bearer <token>'")
            if self.jwt_verifier is None:
                raise Unauthenticated("bearer tokens are not accepted by this server")
            return self.jwt_verifier.verify(token)
        raise Unauthenticated(f"credentials required: {API_KEY_HEADER} or {AUTHORIZATION_HEADER}: Bearer")


def _values(metadata: Iterable[tuple[str, str | bytes]] | None, header: str) -> list[str]:
    values = []
    for key, value in metadata or ():
        if key == header:
            values.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    return values


class AuthGuard(CallGuard):
    """Authenticates every call but health and reflection; ``None`` (auth off) lets all through."""

    def __init__(self, authenticator: Authenticator | None) -> None:
        self.authenticator = authenticator

    def covers(self, method: str, handler: Handler) -> bool:
        return self.authenticator is not None and not is_open(method)

    def enter(self, call: CallInfo, request: Any, context: Context) -> None:
        assert self.authenticator is not None
        try:
            call.principal = self.authenticator.authenticate(context.invocation_metadata())
        except Unauthenticated as exc:
            log.debug(
                "unauthenticated call to %s: %s", call.method, exc.message
            )  # the access log has the code
            raise


# Authorization ----------------------------------------------------------------


def current_principal() -> Principal | None:
    """The authenticated caller of the current call; None when auth is off."""
    call = current_call()
    principal = call.principal if call is not None else None
    if principal is None or isinstance(principal, Principal):
        return principal
    raise InternalError(f"CallInfo.principal holds a {type(principal).__name__}, not a Principal")


def authorize_tenant(tenant_id: str) -> None:
    """Raise PermissionDenied unless the caller belongs to ``tenant_id``. The one tenant check."""
    principal = current_principal()
    if principal is not None and principal.tenant_id != tenant_id:
        if not principal.tenant_id:
            raise PermissionDenied("operator credentials belong to no tenant; use a key of the tenant")
        raise PermissionDenied(
            f"credentials of tenant {principal.tenant_id!r} may not act on tenant {tenant_id!r}"
        )


def require_role(role: str) -> None:
    """Raise PermissionDenied unless the caller has ``role`` (e.g. :data:`OPERATOR_ROLE`)."""
    principal = current_principal()
    if principal is not None and role not in principal.roles:
        raise PermissionDenied(f"this call needs the {role!r} role")


def admin_tenant_scope(requested_tenant_id: str) -> str:
    """The tenant an Admin API call may see: "" (every tenant) for operators and with auth off.

    A tenant's administrator sees its own tenant only, whatever it asked for; asking for
    another tenant is refused rather than silently narrowed, so a script notices.
    """
    principal = current_principal()
    if principal is None or OPERATOR_ROLE in principal.roles:
        return requested_tenant_id
    if ADMIN_ROLE not in principal.roles:
        raise PermissionDenied(f"this call needs the {ADMIN_ROLE!r} or {OPERATOR_ROLE!r} role")
    if requested_tenant_id and requested_tenant_id != principal.tenant_id:
        raise PermissionDenied(
            f"an administrator of tenant {principal.tenant_id!r} may not see tenant {requested_tenant_id!r}"
        )
    return principal.tenant_id


def admin_scope() -> str | None:
    """The tenant an authorized Admin API call is confined to, as the shards enforce it too:
    None (every tenant) for an operator and with auth off, else the caller's own tenant."""
    principal = current_principal()
    if principal is None or OPERATOR_ROLE in principal.roles:
        return None
    return principal.tenant_id


def authorize_agent_of(tenant_id: str) -> None:
    """Raise PermissionDenied unless the caller may speak as a person in ``tenant_id``'s
    conversations: that tenant's ``agent`` or ``admin``, or an operator."""
    principal = current_principal()
    if principal is None or OPERATOR_ROLE in principal.roles:
        return
    if not principal.roles & {ADMIN_ROLE, AGENT_ROLE}:
        raise PermissionDenied(
            f"this call needs the {AGENT_ROLE!r}, {ADMIN_ROLE!r} or {OPERATOR_ROLE!r} role"
        )
    if principal.tenant_id != tenant_id:
        raise PermissionDenied(
            f"credentials of tenant {principal.tenant_id!r} may not act on tenant {tenant_id!r}"
        )


def authorize_admin_of(tenant_id: str) -> None:
    """Raise PermissionDenied unless the caller may administer ``tenant_id``'s conversations."""
    admin_tenant_scope(tenant_id)
