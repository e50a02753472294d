"""The engine's client side: what the gRPC edge calls to reach the conversations.

:class:`Engine` routes each conversation to its shard over the data plane
(``link``), keeps the shards' directory current from its :class:`ShardHost`, and
answers operators (``runtime.inspection`` records). ``events`` carries what the
runtime does to live subscribers (Admin.TailEvents).
"""

from confab.runtime.engine.engine import Engine, EngineStatistics, ShardHost, TurnRequest, WireTurnRequest
from confab.runtime.engine.link import LinkSettings, LinkStatistics
from confab.runtime.protocol.records import ConversationEvent, WireReply

__all__ = [
    "ConversationEvent",
    "Engine",
    "EngineStatistics",
    "LinkSettings",
    "LinkStatistics",
    "ShardHost",
    "TurnRequest",
    "WireReply",
    "WireTurnRequest",
]
