"""The shard protocol: what the engine's client side and the shards say to each other.

``codec`` owns every byte Confab writes between its processes and into its store
(msgpack; protobuf stays at the gRPC edge). ``records`` are the messages, ``transport``
carries their frames over a Unix socket on one host or TCP between hosts.
"""
