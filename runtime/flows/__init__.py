"""The conversation logic a shard's conversations run, behind a small interface.

A :class:`Flow` decides what a conversation says and which state it moves to.
It receives a working copy of the state and may change it freely: its host keeps
the copy only if the whole turn succeeds, so a flow that raises leaves
no half-applied state behind.

The built-in :class:`EchoFlow` greets, echoes and counts; declarative flows plug
in through the same interface. The rest is in three sub-packages:

* ``language``: the flow file language (schema, document, loader, expressions,
  templates, masking);
* ``execution``: running flows (a conversation's ``turn``, the interpreter, slots,
  intents and NLU, the catalog of flows a server runs);
* ``authoring``: tools for flow authors (dialogues, the in-process runner, replay).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from confab.runtime.model import (
    Content,
    ConversationKey,
    ConversationState,
    InboundMessage,
    JsonDict,
    QuickReply,
)
from confab.runtime.models import GENERATE as GENERATE
from confab.runtime.models import RECOGNIZE as RECOGNIZE


@dataclass(slots=True)
class FlowReply:
    """What a flow produced for one turn (the turn adds the state and the timings)."""

    response: Content
    context_updates: JsonDict = field(default_factory=dict)
    actions_performed: list[str] = field(default_factory=list)
    ab_variant: str = ""
    # What the store may keep of the message's text (masked: docs/flows.md, "Masking");
    # None when nothing needed masking, so the text may be kept as it came.
    recorded_input: str | None = None
    # For analytics (runtime.flows.execution.analytics): a session began in this turn, and the
    # reason of a handoff as the flow file writes it (a name from the file, never rendered text).
    session_started: bool = False
    handoff_reason: str = ""


# What a turn may wait on (WebhookCall.kind): an HTTP webhook, or a language model's answer to
# a generate step (or generative fallback) or to a recognizer that asks one what a message means
# (GENERATE, RECOGNIZE: the kinds runtime.models names).
WEBHOOK = "webhook"
MODEL_CALLS = frozenset({GENERATE, RECOGNIZE})


def call_label(kind: str, name: str) -> str:
    """A call as operators see it: a webhook's name, or ``generate:PROVIDER`` /
    ``recognize:PROVIDER`` (``default``: the first provider configured), which is also the
    action a turn leaves for a model call that answered."""
    return f"{kind}:{name or 'default'}" if kind in MODEL_CALLS else name


@dataclass(frozen=True, slots=True)
class WebhookCall:
    """An outside call a turn must hear back from before it can finish: a webhook, or a
    language model's answer (``kind`` GENERATE or RECOGNIZE: ``name`` is the model provider,
    "" for the first configured, and ``body`` the request, ``runtime.models``)."""

    key: str  # which call of the turn ("0", "1", ...): the turn is replayed with its result
    name: str
    body: JsonDict
    kind: str = WEBHOOK

    @property
    def to_model(self) -> bool:
        """Whether a language model answers it (a provider of ``runtime.models``, not a webhook)."""
        return self.kind in MODEL_CALLS

    @property
    def label(self) -> str:
        """The call as operators see it (``call_label``)."""
        return call_label(self.kind, self.name)


class NeedsWebhook(Exception):
    """Raised by a turn that reached a webhook (or a model call) whose result it does not have yet.

    Turns are deterministic given (state, message, now, webhook results), so the
    turn (``runtime.flows.execution.turn``) simply runs again, from the same state, once the result is in.
    """

    def __init__(self, call: WebhookCall) -> None:
        super().__init__(call.name)
        self.call = call


class UnknownState(LookupError):
    pass


# The flow_memory key where a flow notes that a person has the conversation (the value is the reason).
HANDOFF = "handoff"


def in_handoff(state: ConversationState) -> bool:
    """Whether a person, not the flow, has the conversation now."""
    return HANDOFF in state.flow_memory


class Flow(Protocol):
    flow_id: str
    version: str

    def force(self, state: ConversationState, name: str) -> None:
        """Move ``state`` to the state ``name`` at an operator's request (UnknownState if none)."""
        ...

    def start(self, now: float, key: ConversationKey) -> ConversationState:
        """The state of a conversation that has just begun (or was reset)."""
        ...

    def handle(
        self,
        state: ConversationState,
        message: InboundMessage,
        now: float,
        webhook_results: Mapping[str, JsonDict] | None = None,
    ) -> FlowReply:
        """Run one turn: read and update ``state`` in place, return the reply.

        May raise :class:`NeedsWebhook`; ``webhook_results`` then holds, by call key,
        the results of the webhooks this turn asked for so far.
        """
        ...

    def redact_text(self, text: str) -> str:
        """``text`` with what the flow declares sensitive masked: for logs and stored text."""
        ...

    def redact_state(self, state: ConversationState) -> ConversationState:
        """A copy of ``state`` fit for operators' eyes (sensitive slots masked); ``state`` is untouched."""
        ...


class EchoFlow:
    """Greets on the first message, then echoes each message back."""

    flow_id = "echo"
    version = "1"
    START = "start"
    CHATTING = "chatting"

    def force(self, state: ConversationState, name: str) -> None:
        if name not in (self.START, self.CHATTING):
            raise UnknownState(
                f"the echo flow has no state {name!r}; it has {self.START!r}, {self.CHATTING!r}"
            )
        _move(state, name)

    def redact_text(self, text: str) -> str:
        return text  # the echo flow declares nothing sensitive

    def redact_state(self, state: ConversationState) -> ConversationState:
        return copy.deepcopy(state)

    def start(self, now: float, key: ConversationKey) -> ConversationState:
        return ConversationState(
            current_state=self.START,
            flow_id=self.flow_id,
            flow_version=self.version,
            created_at=now,
            last_activity=now,
        )

    def handle(
        self,
        state: ConversationState,
        message: InboundMessage,
        now: float,
        webhook_results: Mapping[str, JsonDict] | None = None,
    ) -> FlowReply:
        said = message.content.text or message.content.payload
        updates: JsonDict = {"last_message": said}
        state.variables.update(updates)
        if state.current_state == self.START:
            _move(state, self.CHATTING)
            return FlowReply(
                response=Content(
                    text=f"Hello! You said: {said}",
                    quick_replies=[QuickReply(title="Say hi", payload="hi")],
                ),
                context_updates=updates,
                actions_performed=["greet", "echo"],
            )
        return FlowReply(
            response=Content(text=f"You said: {said}"),
            context_updates=updates,
            actions_performed=["echo"],
        )


def _move(state: ConversationState, to: str) -> None:
    state.previous_states.append(state.current_state)
    state.current_state = to


class UnknownFlow(LookupError):
    pass


class FlowRegistry:
    """The flows a shard can run: by id and version, and by tenant.

    Every version ever loaded stays here, so a conversation keeps running the
    version it started on after a newer one is loaded.
    """

    def __init__(self, flows: list[Flow], default_flow_id: str) -> None:
        self._versions: dict[tuple[str, str], Flow] = {}
        self._latest: dict[tuple[str, str], Flow] = {}  # (tenant, flow id) -> newest
        self._tenant_default_id: dict[str, str] = {}  # a tenant's first flow of its own
        self.add(flows)
        if ("", default_flow_id) not in self._latest:
            raise UnknownFlow(f"default flow {default_flow_id!r} is not loaded")
        self.default_flow_id = default_flow_id

    def add(self, flows: list[Flow]) -> None:
        """Make ``flows`` the latest of their ids; older versions stay available."""
        for flow in flows:
            tenant = getattr(flow, "tenant", "")
            self._versions[(flow.flow_id, flow.version)] = flow
            self._latest[(tenant, flow.flow_id)] = flow
            if tenant:
                self._tenant_default_id.setdefault(tenant, flow.flow_id)

    @property
    def default(self) -> Flow:
        return self._latest[("", self.default_flow_id)]

    def for_new_conversation(self, tenant_id: str) -> Flow:
        """The newest version of the tenant's own flow if it has one, else of the default."""
        own = self._tenant_default_id.get(tenant_id)
        return self._latest[(tenant_id, own)] if own else self.default

    def by_id(self, flow_id: str, tenant_id: str) -> Flow:
        """The newest version of a flow by id, the tenant's own before a shared one."""
        flow = self._latest.get((tenant_id, flow_id)) or self._latest.get(("", flow_id))
        if flow is None:
            raise UnknownFlow(f"no flow {flow_id!r} for tenant {tenant_id!r}")
        return flow

    def for_state(self, state: ConversationState) -> Flow:
        """The flow (and version) a conversation started on, else that flow's latest version."""
        flow = self._versions.get((state.flow_id, state.flow_version))
        if flow is not None:
            return flow
        for (_, flow_id), latest in self._latest.items():
            if flow_id == state.flow_id:
                return latest
        return self.default


def builtin_flows() -> list[Flow]:
    return [EchoFlow()]
