"""Who is signed in: server-side sessions, the cookie that names one, and its CSRF token.

The credential a person typed stays here, in this process's memory, and nowhere else: the
browser holds only a random session id in an HttpOnly, SameSite=Strict cookie (never in
the page's script or in a URL). Each session has its own CSRF token, which every form that
changes something posts back. A session ends at sign-out, after ``idle_s`` without a
request, or after ``max_age_s`` whatever happens.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from confab.tools.console.backend import Credential

COOKIE = "confab_console"
IDLE_S = 30 * 60.0
MAX_AGE_S = 12 * 3600.0
MAX_SESSIONS = 1000  # the oldest is dropped beyond this: a flood of sign-ins cannot fill memory


@dataclass(slots=True)
class Session:
    credential: Credential
    role: str  # "operator" | "admin"
    tenant: str  # an admin's tenant as far as the console has seen it ("" unknown / operator)
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) for the next page

    @property
    def who(self) -> str:
        if self.role == "operator":
            return "operator"
        return f"admin of {self.tenant}" if self.tenant else "tenant admin"

    def csrf_ok(self, presented: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), presented.encode())

    def say(self, kind: str, text: str) -> None:
        self.flash.append((kind, text))

    def take_flash(self) -> list[tuple[str, str]]:
        said, self.flash = self.flash, []
        return said


class Sessions:
    def __init__(self, idle_s: float = IDLE_S, max_age_s: float = MAX_AGE_S) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self._by_id: dict[str, Session] = {}

    def open(self, credential: Credential, role: str, tenant: str) -> tuple[str, Session]:
        self._expire()
        while len(self._by_id) >= MAX_SESSIONS:
            oldest = min(self._by_id, key=lambda k: self._by_id[k].created)
            del self._by_id[oldest]
        session_id = secrets.token_urlsafe(32)
        session = Session(credential, role, tenant)
        self._by_id[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.used > self.idle_s or now - session.created > self.max_age_s:
            del self._by_id[session_id]
            return None
        session.used = now
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_id)

    def _expire(self) -> None:
        now = time.monotonic()
        for key, session in list(self._by_id.items()):
            if now - session.used > self.idle_s or now - session.created > self.max_age_s:
                del self._by_id[key]
