"""Everything behind the gRPC edge but the shards themselves.

The domain (``model``, ``errors``, ``config``, ``inspection``, ...); the engine's client side
(``runtime.engine``: routing, a link per shard); the shard protocol (``runtime.protocol``); the
store (``runtime.store``) and the flows (``runtime.flows``) the shards run; telemetry.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("confab")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0+unknown"
