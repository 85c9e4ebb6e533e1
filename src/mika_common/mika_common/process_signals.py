"""Stop signals for the processes that own other processes or save work on exit.

Python turns Ctrl-C into ``KeyboardInterrupt`` only when SIGINT was not ignored at start,
and a shell ignores it for every command it starts in the background (``cmd &``, CI
runners, some service managers): such a process would ignore Ctrl-C, be killed, and leave
its children running. SIGTERM (``docker stop``, systemd) ends Python without cleanup.

A terminal's Ctrl-C reaches every process of its group, and ``ros2 launch`` forwards its own
SIGINT too, so a node gets two: only the first may interrupt, or the second breaks into the
clean-up that the first started (a ``KeyboardInterrupt`` traceback, exit code -2).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

_PR_SET_PDEATHSIG = 1  # prctl(2)
_stopping = False


def _raise_interrupt(signum, frame):
    global _stopping
    if not _stopping:
        _stopping = True
        raise KeyboardInterrupt
    if signum == signal.SIGTERM:  # an escalation (launch's, when SIGINT was not enough)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def interrupt_on_stop_signals() -> None:
    """Make the first SIGINT or SIGTERM raise ``KeyboardInterrupt`` in the main thread,
    whatever the parent left them as, so that the ``except KeyboardInterrupt`` cleanup runs.
    Once the process is stopping, SIGINT does nothing and SIGTERM ends it at once."""
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _raise_interrupt)


def begin_stopping() -> None:
    """The clean-up starts: from now on SIGINT does not interrupt it."""
    global _stopping
    _stopping = True


def ignore_interrupts() -> None:
    """SIGINT does nothing until the process exits, also while the interpreter finalizes
    (which restores its default action, death: exit code -2, and takes seconds where
    TensorFlow is loaded). Call it once no library handler (rclpy's) is installed over
    Python's, or rclpy would restore its predecessor, Python's, over SIG_IGN."""
    begin_stopping()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def die_with_parent() -> None:
    """``preexec_fn`` for a child process: on Linux it gets SIGINT when its parent dies,
    even by SIGKILL, instead of living on as an orphan that still publishes."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # not inherited as ignored
    if sys.platform.startswith('linux'):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)


def stop_process_group(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Ctrl-C to the group ``process`` leads (as a terminal sends it), SIGKILL after
    ``timeout_s`` if it is still there; returns once it has exited."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
