"""The engine's client side: what the gRPC edge calls to reach the conversations.

:class:`Engine` routes each conversation to its shard over the data plane
(``link``), keeps the shards' directory current from its :class:`ShardHost`, and
answers operators (``runtime.inspection`` records). ``events`` carries what the
runtime does to live subscribers (Admin.TailEvents).
"""

from confab.runtime.engine.engine import Engine, EngineStatistics, ShardHost, TurnRequest, WireTurnRequest
from confab.runtime.engine.link import DeltaListener, LinkSettings, LinkStatistics
from confab.runtime.protocol.records import ConversationEvent, Outcome, TextDelta, WireReply

__all__ = [
    "ConversationEvent",
    "DeltaListener",
    "Engine",
    "EngineStatistics",
    "LinkSettings",
    "LinkStatistics",
    "Outcome",
    "ShardHost",
    "TextDelta",
    "TurnRequest",
    "WireReply",
    "WireTurnRequest",
]
