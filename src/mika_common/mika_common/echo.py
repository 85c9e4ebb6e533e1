"""Values a sender controls, cut to a few dozen characters for log lines and errors.

An encoding name, a format string or a list of labels comes from whoever publishes; echoed
whole, a 1 MB string makes a 1 MB log line (and a throttled one still costs its repr).
``echo`` is ``repr`` with strings, lists and their entries cut, saying how long a cut
string was. ROS-free.
"""
from __future__ import annotations

import reprlib
from typing import Any

#: Characters kept of an echoed string (its repr adds quotes and the length).
ECHO_CHARS = 60

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 24  # each entry of a list, set or dict
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = 8
_REPR.maxlevel = 2


def echo(value: Any) -> str:
    """``repr(value)``, at most about 300 characters: a long string keeps its first
    :data:`ECHO_CHARS` and says its length; a container shows 8 entries, each cut."""
    if isinstance(value, (str, bytes, bytearray)):
        if len(value) <= ECHO_CHARS:
            return repr(value)
        unit = 'characters' if isinstance(value, str) else 'bytes'
        return f'{value[:ECHO_CHARS]!r}... ({len(value)} {unit})'
    return _REPR.repr(value)
