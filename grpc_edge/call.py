"""What the edge knows about the call being served, for every layer of it.

The guards (``grpc_edge.guards``) create one :class:`CallInfo` per call and make it
current for everything that runs inside the call: the guards themselves
(authentication fills ``principal``) and the services (which name the request id in
their responses and note the tenant and conversation they found in the request);
when the call ends it is what the access line and the metrics are written from.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from confab.runtime.model import new_id


@dataclass(slots=True)
class CallInfo:
    method: str
    # The client's address, read when the call starts: once a call has ended, gRPC may no
    # longer be able to tell it (and asking then has crashed the process, see observe.py).
    peer: str = ""
    request_id: str = field(default_factory=new_id)
    started: float = field(default_factory=time.perf_counter)
    # Who is calling, once authenticated (see grpc_edge.auth); None when auth is off.
    principal: Any = None
    tenant_id: str = ""
    conversation_id: str = ""
    # For the access line: the trace the call started in, and its text when logging text is on.
    trace_id: str = ""
    text: str = ""


_current: ContextVar[CallInfo | None] = ContextVar("confab_call", default=None)


def current_call() -> CallInfo | None:
    return _current.get()


def enter_call(call: CallInfo | None) -> None:
    """Make ``call`` the current call (each call runs in its own task, so its own context)."""
    _current.set(call)


def request_id() -> str:
    """The current call's request id (a fresh one outside any call)."""
    call = _current.get()
    return call.request_id if call is not None else new_id()


def note_text(text: str) -> None:
    """Record the message text of the current call (the access line shows it only when
    ``logging.log_message_text`` says so)."""
    call = _current.get()
    if call is not None:
        call.text = text


def note_target(tenant_id: str, conversation_id: str) -> None:
    """Record which conversation the current call is about (for logs and traces)."""
    call = _current.get()
    if call is not None:
        call.tenant_id, call.conversation_id = tenant_id, conversation_id
