"""Counters and timings each Mika node reports on /diagnostics.

:class:`RateWindow` is ROS-free (tests and benchmarks use it); :class:`NodeDiagnostics`
publishes a ``diagnostic_msgs/DiagnosticArray`` once a second with rates, latency
percentiles, drops and rejected inputs by reason.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Deque, Dict, Optional, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node

LEVELS = {'ok': DiagnosticStatus.OK, 'warn': DiagnosticStatus.WARN,
          'error': DiagnosticStatus.ERROR, 'stale': DiagnosticStatus.STALE}


class RateWindow:
    """Totals, per-second rates and latency percentiles over a sliding time window."""

    def __init__(self, window_s: float = 10.0, max_latencies: int = 2000):
        self.window_s = window_s
        self.totals: Dict[str, int] = collections.Counter()
        self._events: Deque[Tuple[float, str, int]] = collections.deque()
        self._latencies: Deque[Tuple[float, float]] = collections.deque(maxlen=max_latencies)
        self._lock = threading.Lock()

    def count(self, key: str, n: int = 1, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.totals[key] += n
            self._events.append((now, key, n))
            self._trim(now)

    def observe_latency(self, seconds: float, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._latencies.append((now, seconds))

    def rates(self, now: Optional[float] = None) -> Dict[str, float]:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            sums: Dict[str, int] = collections.Counter()
            for _, key, n in self._events:
                sums[key] += n
        return {key: value / self.window_s for key, value in sums.items()}

    def latency_percentiles(self, now: Optional[float] = None) -> Dict[str, float]:
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [value for stamp, value in self._latencies if now - stamp <= self.window_s]
        if not recent:
            return {}
        p50, p95, p_max = np.percentile(recent, [50, 95, 100])
        return {'p50': float(p50), 'p95': float(p95), 'max': float(p_max)}

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()


class NodeDiagnostics:
    """Publishes one DiagnosticStatus for the node at 1 Hz on /diagnostics.

    ``latency_warn_s``: a p95 processing latency above it turns the status to WARN.
    """

    def __init__(self, node: Node, name: str, latency_warn_s: float = 0.1,
                 period_s: float = 1.0, window_s: float = 10.0):
        self._node = node
        self._name = f'{node.get_name()}: {name}'
        self._hardware_id = node.get_fully_qualified_name()
        self._latency_warn_s = latency_warn_s
        self.window = RateWindow(window_s)
        self._rejected: Dict[str, int] = collections.Counter()
        self._state = ('ok', 'starting')
        self._publisher = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # steady time: a node on a paused simulated clock (a bag held) still reports
        self._timer = node.create_timer(period_s, self.publish,
                                        clock=Clock(clock_type=ClockType.STEADY_TIME))

    def count(self, key: str, n: int = 1) -> None:
        self.window.count(key, n)

    def reject(self, reason: str) -> None:
        """Count one rejected input under ``reason`` (also in the 'rejected' total)."""
        self._rejected[reason] += 1
        self.window.count('rejected')

    def observe_latency(self, seconds: float) -> None:
        self.window.observe_latency(seconds)

    def set_state(self, level: str, message: str) -> None:
        if level not in LEVELS:
            raise ValueError(f'level must be one of {sorted(LEVELS)}')
        self._state = (level, message)

    @property
    def rejected(self) -> Dict[str, int]:
        return dict(self._rejected)

    def publish(self) -> None:
        level, message = self._state
        values = [KeyValue(key=f'{key} total', value=str(total))
                  for key, total in sorted(self.window.totals.items())]
        values += [KeyValue(key=f'{key} per s', value=f'{rate:.2f}')
                   for key, rate in sorted(self.window.rates().items())]
        latency = self.window.latency_percentiles()
        values += [KeyValue(key=f'latency {k} ms', value=f'{v * 1e3:.2f}')
                   for k, v in latency.items()]
        values += [KeyValue(key=f'rejected: {reason}', value=str(n))
                   for reason, n in sorted(self._rejected.items())]
        if level == 'ok' and latency.get('p95', 0.0) > self._latency_warn_s:
            level = 'warn'
            message = (f'p95 latency {latency["p95"] * 1e3:.1f} ms above '
                       f'{self._latency_warn_s * 1e3:.0f} ms')
        status = DiagnosticStatus(level=LEVELS[level], name=self._name, message=message,
                                  hardware_id=self._hardware_id, values=values)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._publisher.publish(array)
