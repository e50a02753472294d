"""Confab: an actor-based conversation runtime served over gRPC.

The package's folders are the architecture (imports point one way, see README
"Architecture"): ``grpc_edge`` serves the wire API and calls the engine's client
side, ``runtime.engine``; that reaches the shards over the shard protocol,
``runtime.protocol``; the shards (``actors``) run conversations on the domain,
flows and store of ``runtime``. ``tools`` holds the ``confab`` command.

What a program that embeds or extends Confab may rely on is named here.
"""

from confab.runtime import VERSION as __version__
from confab.runtime.config import ConfabConfig, ConfigError, load_config
from confab.runtime.errors import (
    ConfabError,
    ConversationNotFound,
    DeadlineExceeded,
    InternalError,
    InvalidArgument,
    Overloaded,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from confab.runtime.model import (
    Content,
    ConversationKey,
    ConversationState,
    InboundMessage,
    ResetResult,
    StateResult,
    TurnResult,
)

__all__ = [
    "ConfabConfig",
    "ConfabError",
    "ConfigError",
    "Content",
    "ConversationKey",
    "ConversationNotFound",
    "ConversationState",
    "DeadlineExceeded",
    "InboundMessage",
    "InternalError",
    "InvalidArgument",
    "Overloaded",
    "PermissionDenied",
    "RateLimited",
    "ResetResult",
    "StateResult",
    "TurnResult",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "__version__",
    "load_config",
]
