"""Lines typed ahead: finished in the terminal while a reply was still to come.

``confab chat`` reads the next line only once the reply to the last one is shown; meanwhile
the terminal keeps what the user types (echoed; in its canonical mode a line is finished by
Enter) in its input queue. Such a line was written by a user who had not seen that reply: it
must say the turn of the reply that was on the screen when Enter was pressed, not the one
shown since (docs/api.md, "Which turn the user has seen"), and a number in it picks from the
choices that were on the screen then, which only the server still knows.

So right before a reply is shown, :meth:`TypeAhead.reply_coming` asks the terminal how many
bytes of finished lines wait in its queue (``FIONREAD``) and notes them with the turn the user
had seen. Lines are read from the front of the queue, so :meth:`TypeAhead.line_read` counts
each line's bytes off those notes: a line that starts inside them was typed ahead.
"""

from __future__ import annotations

import collections
import struct
import threading
from dataclasses import dataclass
from typing import TextIO

try:  # Unix terminals only; elsewhere lines are taken as typed after what is shown
    import fcntl
    import termios
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]
    termios = None  # type: ignore[assignment]


@dataclass(slots=True)
class _Ahead:
    """Bytes of finished lines that waited in the queue when a reply came, and what their user saw."""

    left: int
    seen_turn: int


class TypeAhead:
    """Which lines read from a terminal were finished before the reply now on the screen came."""

    def __init__(self, fd: int, encoding: str) -> None:
        self.fd = fd
        self.encoding = encoding
        self._lock = threading.Lock()
        self._shown: int | None = None  # the turn of the last reply shown; None: none yet
        self._ahead: collections.deque[_Ahead] = collections.deque()  # oldest first

    @classmethod
    def of(cls, stream: TextIO) -> TypeAhead | None:
        """For a terminal's input; None for anything else (the lines of a pipe or a file are
        all written before any reply: there is no screen their writer looked at)."""
        if fcntl is None or not stream.isatty():
            return None
        return cls(stream.fileno(), stream.encoding or "utf-8")

    def reply_coming(self, turn: int) -> None:
        """A reply of ``turn`` is about to be shown: the finished lines waiting now were written
        having seen the reply shown before it (or, when none was shown here, at most the one
        before it: ``turn - 1``)."""
        with self._lock:
            seen = self._shown if self._shown is not None and self._shown < turn else max(turn - 1, 0)
            waiting = self._waiting()
            noted = sum(ahead.left for ahead in self._ahead)
            if waiting < noted:  # read some other way than line_read counts: forget the difference
                self._count_off(noted - waiting)
            elif waiting > noted:
                self._ahead.append(_Ahead(waiting - noted, seen))
            self._shown = turn

    def line_read(self, line: str) -> int | None:
        """``line`` (as input() returned it) was just read: the turn its user had seen when it
        was typed ahead, or None when it was typed with the last reply on the screen."""
        with self._lock:
            if not self._ahead:
                return None
            seen = self._ahead[0].seen_turn
            self._count_off(len(line.encode(self.encoding, errors="replace")) + 1)  # and its newline
            return seen

    def forget(self) -> None:
        """The conversation starts over (its turns count from 0 again): no reply of it was shown."""
        with self._lock:
            self._shown = None

    def _count_off(self, size: int) -> None:
        while size > 0 and self._ahead:
            first = self._ahead[0]
            taken = min(size, first.left)
            first.left -= taken
            size -= taken
            if not first.left:
                self._ahead.popleft()

    def _waiting(self) -> int:
        """Bytes of finished lines in the terminal's input queue (in canonical mode: whole lines)."""
        assert fcntl is not None and termios is not None
        try:
            raw = fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:  # the terminal went away: nothing waits
            return 0
        count: int = struct.unpack("i", raw)[0]
        return count
