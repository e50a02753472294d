"""The Thespian part of the shard side: the actors, their control records, and the processes they run in.

- ``host``: :class:`~confab.actors.system.host.ActorHost`, run by the edge's process; it starts
  this host's actor system, watches its supervisor, and hands the engine the shards' directory;
- ``launcher``: the small process, forked once at start, that starts every actor system for it;
- ``lifecycle``: ties every actor process to the edge, so none outlives it;
- ``network``: keeps every Thespian socket on loopback;
- ``supervisor``: starts this host's shards and replaces any that dies;
- ``shard_actor``: the thin actor around one shard process's plain objects;
- ``messages``: the control records they exchange (Thespian pickles them).

Only control goes through Thespian (start, locate, replace, assign); requests go over the data
plane to the plain objects of ``actors`` (``shard``, ``data_server``, ``conversation``), which
know nothing of Thespian, and import nothing from here.
"""
