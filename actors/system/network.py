"""Thespian listens only on the address Confab advertises, never on every interface.

Thespian's TCP transport binds each of its sockets (the admin's, the logger's, every
actor's and every external endpoint's) to ``('', port)``, that is every interface,
whatever address it advertises; nothing in Thespian 4.0.1 changes that. Those
sockets carry unauthenticated pickles, so :func:`bind_thespian_to` makes every one
of them bind the advertised address instead (loopback on a single host, the
address the operator names in a cluster). It sets ``THESPIAN_BASE_IPADDR``, which
Thespian advertises, and wraps the one constructor that picks the bind address;
processes Thespian forks inherit both.
"""

from __future__ import annotations

import os
from typing import Any

_ADDRESS_VARIABLE = "THESPIAN_BASE_IPADDR"
_installed = False


def bind_thespian_to(address: str) -> None:
    """Call before the actor system is created, in the process that creates it."""
    global _installed
    os.environ[_ADDRESS_VARIABLE] = address
    if _installed:
        return
    _installed = True
    from thespian.system.transport import IPBase

    original = IPBase.IPActorAddress.__init__

    def bind_advertised(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        advertised = os.environ.get(_ADDRESS_VARIABLE)
        if advertised and self.bindname[0] == "" and self.sockname[0] == advertised:
            self.bindname = (advertised, self.bindname[1])

    IPBase.IPActorAddress.__init__ = bind_advertised
