"""play_bag: publish a rosbag2 bag (MCAP or sqlite3) in real time, for machines without rosbag2.

Where ROS 2 is installed from its repositories, use ``ros2 bag play BAG --clock``; this
player does the same with ``rosbags`` and rclpy (ROS 2 from PyPI wheels has no rosbag2).
Each message goes out as recorded (its serialized bytes, unchanged header stamps) at its
log time, scaled by ``--rate``; topics keep their recorded QoS (latched ``/audio_info``
transient-local). With ``--clock`` it publishes ``/clock`` in bag time (at HZ, and each
message's time just before the message), so nodes started with ``use_sim_time:=true`` run
on the bag's clock: their state stamps and the sensor stamps in the bag share one time base.
With ``--wait-for-results emotion/face`` it also holds /clock after each camera frame until
the face node is done with it: a result stamped with that frame arrived, or the node's
/diagnostics count the frame as handled (a frame without a face), or ``--result-timeout``
passed. Bag time stands still while the face node works, so a machine too slow for real
time (or a node stalled for seconds) loses no frame, and a live evaluation sees every
frame as the offline one does.

    play_bag /tmp/eval_private --clock --wait-for-subscribers 30 --delay 1
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from mika_evaluation.bag_format import BagError
from mika_evaluation.playback import Pacer, TopicPlan, topic_plans

#: ``ros2 bag play --clock`` publishes /clock at 40 Hz by default.
DEFAULT_CLOCK_HZ = 40.0
#: Kept alive this long after the last message, so reliable readers get the last ones.
LINGER_S = 0.5
#: Message types whose messages ``--wait-for-results`` holds the clock after.
FRAME_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
SHUTDOWN_TIMEOUT_S = 10.0


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``, or ``None`` when it is not installed."""
    package, _, name = msgtype.split('/')
    try:
        return getattr(importlib.import_module(f'{package}.msg'), name)
    except (ImportError, AttributeError):
        return None


class ResultGate:
    """Holds the player after a frame until the node publishing ``topic``
    (``mika_msgs/EmotionResult``) is done with it: a result stamped at or after the frame
    came, or the node's /diagnostics count that it has handled (processed, rejected,
    dropped or skipped) every frame sent so far (a frame without a face gives no result).
    ``timeout_s`` bounds the hold for a node that does neither (stalled, or not a Mika node).
    """

    #: /diagnostics totals (``<key> total``) whose sum counts the frames a node is done with.
    HANDLED_KEYS = ('processed', 'rejected', 'dropped (worker busy)', 'skipped (max_rate_hz)')

    def __init__(self, node, topic: str, timeout_s: float):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        from mika_common.ros_io import results_qos
        from mika_msgs.msg import EmotionResult
        self.topic = topic
        self.timeout_s = timeout_s
        self.newest_ns = -1
        self.handled: Optional[int] = None  # frames the node is done with, per /diagnostics
        self._handled_before: Optional[int] = None
        self.frames = 0
        self.timeouts = 0
        self.held_s = 0.0
        node.create_subscription(EmotionResult, topic, self._on_result, results_qos(depth=50))
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self._node = node
        self._executor = SingleThreadedExecutor(context=node.context)
        self._executor.add_node(node)

    def _on_result(self, msg) -> None:
        self.newest_ns = max(self.newest_ns,
                             msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)

    def _on_diagnostics(self, msg) -> None:
        names = {f'{info.node_name}: ' for info in
                 self._node.get_publishers_info_by_topic(self._node.resolve_topic_name(
                     self.topic))}
        for status in msg.status:
            if any(status.name.startswith(name) for name in names):
                totals = {value.key: value.value for value in status.values}
                self.handled = sum(int(totals.get(f'{key} total', 0))
                                   for key in self.HANDLED_KEYS)

    def has_publisher(self) -> bool:
        return self._node.count_publishers(self.topic) > 0

    def wait(self, stamp_ns: int, tick) -> float:
        """Spin until the node is done with the frame stamped ``stamp_ns`` (at most the
        timeout, counted), calling ``tick()`` meanwhile; the seconds waited."""
        if self._handled_before is None:
            self._handled_before = self.handled or 0
        self.frames += 1
        started = time.monotonic()
        while not self._done(stamp_ns) and time.monotonic() - started < self.timeout_s:
            tick()
            self._executor.spin_once(timeout_sec=0.005)
        self.timeouts += not self._done(stamp_ns)
        waited = time.monotonic() - started
        self.held_s += waited
        return waited

    def _done(self, stamp_ns: int) -> bool:
        return self.newest_ns >= stamp_ns or (
            self.handled is not None and self.handled >= self._handled_before + self.frames)


class BagPlayer:
    """Publishers for the planned topics and the paced loop that feeds them."""

    def __init__(self, node, plans: Sequence[TopicPlan], clock_hz: Optional[float],
                 gate: Optional[ResultGate] = None):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        self.node = node
        self.publishers: Dict[str, object] = {}
        self.skipped: List[str] = []
        self.gate = gate
        self.frame_classes: Dict[str, type] = {}  # camera topics the gate holds after
        for plan in plans:
            cls = message_class(plan.msgtype)
            if cls is None:
                self.skipped.append(f'{plan.topic} ({plan.msgtype} is not installed: '
                                    'source the package that defines it)')
                continue
            gated = gate is not None and plan.msgtype in FRAME_TYPES
            # a gated frame goes out reliable (which best-effort readers hear too): a reader
            # that asks for reliability then loses none while the gate holds
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=plan.depth,
                reliability=(ReliabilityPolicy.RELIABLE if plan.reliable or gated
                             else ReliabilityPolicy.BEST_EFFORT),
                durability=(DurabilityPolicy.TRANSIENT_LOCAL if plan.latched
                            else DurabilityPolicy.VOLATILE))
            self.publishers[plan.topic] = node.create_publisher(cls, plan.topic, qos)
            if gated:
                self.frame_classes[plan.topic] = cls
        self.clock_period = 1.0 / clock_hz if clock_hz else None
        self._clock_pub = None
        if clock_hz:
            from rosgraph_msgs.msg import Clock
            self._clock_msg = Clock
            self._clock_pub = node.create_publisher(Clock, '/clock', 10)
        self._next_tick = 0.0
        self._clock_value: Optional[float] = None

    def publish_clock(self, bag_time: float) -> None:
        """/clock := ``bag_time``, never backwards."""
        from mika_common.ros_io import sec_to_stamp
        if self._clock_pub is None or (self._clock_value is not None
                                       and bag_time < self._clock_value):
            return
        self._clock_value = bag_time
        self._clock_pub.publish(self._clock_msg(clock=sec_to_stamp(bag_time)))

    def _tick(self, bag_time: float) -> None:
        """Publish /clock at its rate while nothing else is due."""
        now = time.monotonic()
        if self.clock_period is not None and now >= self._next_tick:
            self.publish_clock(bag_time)
            self._next_tick = now + self.clock_period

    def wait_for_subscribers(self, timeout_s: float, bag_start: float) -> List[str]:
        """Wait until every topic has a subscriber, at most ``timeout_s``; the topics still
        without one. /clock holds the bag start meanwhile."""
        deadline = time.monotonic() + timeout_s
        while True:
            waiting = [t for t, p in self.publishers.items() if p.get_subscription_count() == 0]
            if self.gate is not None and not self.gate.has_publisher():
                waiting.append(f'{self.gate.topic} (no publisher of results)')
            if not waiting or time.monotonic() >= deadline:
                return waiting
            self._tick(bag_start)
            time.sleep(0.02)

    def hold(self, seconds: float, bag_start: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._tick(bag_start)
            time.sleep(0.02)

    def play(self, messages, pacer: Pacer) -> Dict:
        """Publish ``messages`` ((connection, log time ns, raw CDR) in time order) on time,
        /clock set to each message's time just before it (so a subscriber's clock reads its
        bag time on receipt) and ticking at its rate in between; with a gate, held after
        each camera frame until its result came. Returns counts and how late the messages
        went out (the holds not counted)."""
        from rclpy.serialization import deserialize_message
        sent: Dict[str, int] = {}
        late: List[float] = []
        last_time = pacer.bag_start
        for connection, timestamp, raw in messages:
            publisher = self.publishers.get(connection.topic)
            if publisher is None:
                continue
            last_time = timestamp * 1e-9
            due = pacer.wall_time(last_time)
            while True:
                now = time.monotonic()
                if now >= due:
                    break
                self._tick(pacer.bag_time(now))
                wake = due if self.clock_period is None else min(due, self._next_tick)
                time.sleep(max(0.0, min(wake - now, 0.05)))
            self.publish_clock(last_time)
            publisher.publish(bytes(raw))
            late.append(time.monotonic() - due)
            sent[connection.topic] = sent.get(connection.topic, 0) + 1
            frame_class = self.frame_classes.get(connection.topic)
            if frame_class is not None:
                stamp = deserialize_message(bytes(raw), frame_class).header.stamp
                pacer.hold(self.gate.wait(stamp.sec * 10**9 + stamp.nanosec,
                                          lambda: self._tick(last_time)))
        time.sleep(LINGER_S)  # the clock stays at the last message
        values = np.asarray(late) * 1e3
        return {'sent': sent, 'bag_end': last_time,
                'held_s': self.gate.held_s if self.gate else 0.0,
                'result_timeouts': self.gate.timeouts if self.gate else 0,
                'late_p95_ms': float(np.percentile(values, 95)) if values.size else 0.0,
                'late_max_ms': float(values.max()) if values.size else 0.0}


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog=__doc__.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', type=Path, help='rosbag2 directory (MCAP or sqlite3)')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='playback speed, times real time (default 1)')
    parser.add_argument('--clock', type=float, nargs='?', const=DEFAULT_CLOCK_HZ, default=None,
                        metavar='HZ', help='publish /clock in bag time at HZ '
                        f'(default {DEFAULT_CLOCK_HZ:g} when given without a value)')
    parser.add_argument('--topics', nargs='+', default=None, help='play only these topics')
    parser.add_argument('--wait-for-subscribers', type=float, default=0.0, metavar='S',
                        help='before playing, wait up to S seconds until every topic has a '
                             'subscriber (nodes still starting would miss the first messages)')
    parser.add_argument('--wait-for-results', default=None, metavar='TOPIC',
                        help='with --clock: after each camera frame, hold /clock until TOPIC '
                             '(mika_msgs/EmotionResult, e.g. emotion/face) carries a result '
                             'stamped at or after the frame, or the node\'s /diagnostics '
                             'count the frame as handled: no frame is lost to a slow node')
    parser.add_argument('--result-timeout', type=float, default=5.0, metavar='S',
                        help='longest hold for one frame, for a node that neither answers '
                             'nor reports (default 5 s)')
    parser.add_argument('--delay', type=float, default=0.0, metavar='S',
                        help='then wait S seconds more: a subscriber matches the player a '
                             'moment after the player matched it (1 s is plenty)')
    args = parser.parse_args(argv)
    if not 0.01 <= args.rate <= 100:
        parser.error(f'--rate {args.rate} is outside 0.01..100')
    if args.clock is not None and not 1 <= args.clock <= 1000:
        parser.error(f'--clock {args.clock} Hz is outside 1..1000')
    if args.wait_for_results is not None and args.clock is None:
        parser.error('--wait-for-results needs --clock (only bag time can stand still)')
    if not 0 < args.result_timeout <= 600:
        parser.error(f'--result-timeout {args.result_timeout} s is outside 0..600')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from mika_evaluation.offline import open_bag
    try:
        reader = open_bag(args.bag)
    except BagError as error:
        print(f'play_bag: {error}', file=sys.stderr)
        return 2
    rclpy.init(args=['play_bag'])
    node = rclpy.create_node('play_bag')
    log = node.get_logger()
    status = 0
    try:
        plans = topic_plans(reader.connections, args.topics)
        gate = (ResultGate(node, args.wait_for_results, args.result_timeout)
                if args.wait_for_results else None)
        player = BagPlayer(node, plans, args.clock, gate)
        for text in player.skipped:
            log.warning(f'not playing {text}')
        if not player.publishers:
            raise BagError('no topic of the bag can be played')
        start = reader.start_time * 1e-9
        player.publish_clock(start)
        if args.wait_for_subscribers > 0:
            waiting = player.wait_for_subscribers(args.wait_for_subscribers, start)
            if waiting:
                log.warning(f'no subscriber after {args.wait_for_subscribers:g} s on: '
                            f'{", ".join(waiting)}; playing anyway')
        player.hold(args.delay, start)
        duration = (reader.end_time - reader.start_time) * 1e-9
        log.info(f'playing {args.bag} ({duration:.1f} s, '
                 f'{sum(p.count for p in plans)} messages on {len(player.publishers)} topics) '
                 f'at {args.rate:g}x' + (f', /clock at {args.clock:g} Hz' if args.clock else ''))
        wanted = [c for c in reader.connections if c.topic in player.publishers]
        started = time.monotonic()
        try:
            summary = player.play(reader.messages(connections=wanted),
                                  Pacer(start, time.monotonic(), args.rate))
        except (KeyboardInterrupt, ExternalShutdownException):
            raise
        except Exception as error:  # rosbags raises several types for a damaged file
            raise BagError(f'bag {args.bag} could not be read to the end '
                           f'({type(error).__name__}: {error})') from None
        log.info(f'played {sum(summary["sent"].values())} messages in '
                 f'{time.monotonic() - started:.1f} s; sent late by p95 '
                 f'{summary["late_p95_ms"]:.1f} ms, at most {summary["late_max_ms"]:.1f} ms'
                 + (f'; held {summary["held_s"]:.1f} s for results on {gate.topic}, '
                    f'{summary["result_timeouts"]} frames neither answered nor reported '
                    f'handled within {gate.timeout_s:g} s' if gate else ''))
    except BagError as error:
        print(f'play_bag: {error}', file=sys.stderr)
        status = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        reader.close()
        if not shut_down_within(node, SHUTDOWN_TIMEOUT_S):
            print(f'play_bag: the middleware did not shut down within {SHUTDOWN_TIMEOUT_S:g} s '
                  '(Fast DDS can block on a subscriber that stopped reading); exiting anyway',
                  file=sys.stderr, flush=True)
            os._exit(status)  # only the DDS teardown is abandoned
    return status


def shut_down_within(node, timeout_s: float) -> bool:
    """Destroy ``node`` and shut rclpy down in a helper thread, waiting ``timeout_s`` at most:
    False if the middleware's teardown is still blocked then (the player must not hang a
    test or a script after its work is done)."""
    import rclpy
    finished = threading.Event()

    def close():
        node.destroy_node()
        rclpy.try_shutdown()
        finished.set()
    threading.Thread(target=close, name='play_bag_shutdown', daemon=True).start()
    return finished.wait(timeout_s)


if __name__ == '__main__':
    sys.exit(main())
