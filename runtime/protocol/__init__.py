"""The shard protocol: what the engine's client side and the shards say to each other.

``codec`` owns every byte Confab writes between its processes and into its store
(msgpack). ``records`` are the messages, ``transport`` carries their frames over a Unix
socket on one host or TCP between hosts. ``wire_pb`` is the one codec of the gRPC API's
messages (protobuf): a ProcessMessage request travels in its frames as the client
serialized it, and the shard makes the serialized response there.
"""
