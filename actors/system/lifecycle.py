"""No actor process outlives the process that started the actor system.

Thespian leaves its processes running when the process that created the actor
system dies: the Admin detaches itself (``setsid`` and a double fork, so it is
not even in the caller's process group) and everything under it stays alive.
:func:`tie_actor_processes_to_this_one` registers a fork hook, inherited by every
process Thespian forks, that ties each new process to its parent:

* the Admin watches the root process through a pidfd and kills itself when it
  ends (its real parent, a short-lived stub, exits immediately);
* every other process (logger, supervisor, shards) gets ``PR_SET_PDEATHSIG``,
  so it is killed when its parent dies.

Killing the root with SIGKILL therefore takes every actor process down within
milliseconds. Thespian forks from the main thread of each process, which matters
because the death signal follows the forking *thread*.

Edge processes (``confab serve --edges N``) are not forked but started afresh
(``tools.edges``), so no fork hook runs in them: each calls
:func:`die_with_parent` first thing, which arms the same signal. The root starts
them from its main thread, the one thread that lives as long as the root does.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import threading

_PR_SET_PDEATHSIG = 1
_root_pid = 0
_fork_parent = {"pid": 0, "session_leader": False}
_installed = False


def tie_actor_processes_to_this_one() -> None:
    """Call once, before creating the actor system, in the process that owns it."""
    global _installed, _root_pid
    if _installed:
        return
    _installed = True
    _root_pid = os.getpid()
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def _before_fork() -> None:
    _fork_parent["pid"] = os.getpid()
    _fork_parent["session_leader"] = os.getsid(0) == os.getpid()


def _after_fork_in_child() -> None:
    parent = _fork_parent["pid"]
    if _fork_parent["session_leader"] and parent != _root_pid:
        # The Admin: forked by a stub that called setsid() and exits at once.
        try:
            pidfd = os.pidfd_open(_root_pid)
        except ProcessLookupError:
            os._exit(1)
        threading.Thread(
            target=_kill_self_when_readable, args=(pidfd,), name="confab-root-watch", daemon=True
        ).start()
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _kill_self_when_readable(pidfd: int) -> None:
    select.select([pidfd], [], [])
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent_pid: int) -> None:
    """Be killed when ``parent_pid``, this process's parent, ends (exits at once if it has already)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
