"""Moved: a shard's settings are ``actors.settings``, the Thespian records ``actors.system.messages``.

Kept only while ``actors/shard.py`` imports :class:`ShardSettings` from here: import it from
``confab.actors.settings`` instead, and delete this module once nothing imports it.
"""

from confab.actors.settings import ShardSettings

__all__ = ["ShardSettings"]
