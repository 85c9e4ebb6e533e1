"""Run inference off the ROS executor on the newest input only.

Sensor callbacks must return at once (the executor also serves parameters, timers and
other subscriptions); a camera at 30 FPS must not queue frames the classifier cannot keep
up with. :class:`LatestOnlyWorker` holds one pending item; a newer one replaces it and the
replacement is reported as a drop, so the node can count it.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional


class LatestOnlyWorker:
    """A daemon thread that calls ``process(item)`` on the newest submitted item.

    An exception from ``process`` goes to ``on_error(item, error)`` and the worker keeps
    running: one bad input never stops processing for good.
    """

    _STOP = object()

    def __init__(self, process: Callable[[Any], None],
                 on_error: Callable[[Any, BaseException], None], name: str = 'mika-worker'):
        self._process = process
        self._on_error = on_error
        self._condition = threading.Condition()
        self._pending: Optional[Any] = None
        self._has_pending = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Queue ``item``; True when it replaced an item that was never processed (a drop)."""
        with self._condition:
            dropped = self._has_pending
            self._pending, self._has_pending = item, True
            self._condition.notify()
        return dropped

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until nothing is pending or running (tests and orderly shutdown)."""
        with self._condition:
            return self._condition.wait_for(
                lambda: not self._has_pending and not self._busy, timeout)

    def stop(self, timeout: float = 2.0) -> None:
        with self._condition:
            self._pending, self._has_pending = self._STOP, True
            self._condition.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._has_pending)
                item, self._pending, self._has_pending = self._pending, None, False
                if item is self._STOP:
                    return
                self._busy = True
            try:
                self._process(item)
            except Exception as error:  # noqa: BLE001 - reported, never swallowed
                self._on_error(item, error)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()
