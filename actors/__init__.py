"""The shard side: shards and the conversations they run, and the Thespian actors that host them.

The modules here are plain objects and threads, which know nothing of Thespian: a shard
(``shard``) and its conversations (``conversation``), the data-plane server that feeds it
(``data_server``) and answers queries (``queries``), its virtual shards' leases
(``ownership``), a shard's settings (``settings``), and a host's view of its cluster
(``cluster``, ``placement``). The Thespian actors, their messages and the processes they run
in are ``actors.system``.
"""
