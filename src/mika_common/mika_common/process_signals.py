"""Stop signals for the processes that own other processes or save work on exit.

Python turns Ctrl-C into ``KeyboardInterrupt`` only when SIGINT was not ignored at start,
and a shell ignores it for every command it starts in the background (``cmd &``, CI
runners, some service managers): such a process would ignore Ctrl-C, be killed, and leave
its children running. SIGTERM (``docker stop``, systemd) ends Python without cleanup.
"""
from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1  # prctl(2)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def interrupt_on_stop_signals() -> None:
    """Make SIGINT and SIGTERM raise ``KeyboardInterrupt`` in the main thread, whatever
    the parent left them as, so that the ``except KeyboardInterrupt`` cleanup runs."""
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _raise_interrupt)


def die_with_parent() -> None:
    """``preexec_fn`` for a child process: on Linux it gets SIGINT when its parent dies,
    even by SIGKILL, instead of living on as an orphan that still publishes."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # not inherited as ignored
    if sys.platform.startswith('linux'):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
