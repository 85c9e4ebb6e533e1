"""play_bag: publish a rosbag2 bag (MCAP or sqlite3) in real time, for machines without rosbag2.

Where ROS 2 is installed from its repositories, use ``ros2 bag play BAG --clock``; this
player does the same with ``rosbags`` and rclpy (ROS 2 from PyPI wheels has no rosbag2).
Each message goes out as recorded (its serialized bytes, unchanged header stamps) at its
log time, scaled by ``--rate``; topics keep their recorded QoS (latched ``/audio_info``
transient-local). With ``--clock`` it publishes ``/clock`` in bag time (at HZ, and each
message's time just before the message), so nodes started with ``use_sim_time:=true`` run
on the bag's clock: their state stamps and the sensor stamps in the bag share one time base.

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
SHUTDOWN_TIMEOUT_S = 10.0


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``, or ``None`` when it is not installed."""
    package, _, name = msgtype.split('/')
    try:
        return getattr(importlib.import_module(f'{package}.msg'), name)
    except (ImportError, AttributeError):
        return None


class BagPlayer:
    """Publishers for the planned topics and the paced loop that feeds them."""

    def __init__(self, node, plans: Sequence[TopicPlan], clock_hz: Optional[float]):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        self.node = node
        self.publishers: Dict[str, object] = {}
        self.skipped: List[str] = []
        for plan in plans:
            cls = message_class(plan.msgtype)
            if cls is None:
                self.skipped.append(f'{plan.topic} ({plan.msgtype} is not installed: '
                                    'source the package that defines it)')
                continue
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=plan.depth,
                reliability=(ReliabilityPolicy.RELIABLE if plan.reliable
                             else ReliabilityPolicy.BEST_EFFORT),
                durability=(DurabilityPolicy.TRANSIENT_LOCAL if plan.latched
                            else DurabilityPolicy.VOLATILE))
            self.publishers[plan.topic] = node.create_publisher(cls, plan.topic, qos)
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
        bag time on receipt) and ticking at its rate in between. Returns counts and how
        late the messages went out."""
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
        time.sleep(LINGER_S)  # the clock stays at the last message
        values = np.asarray(late) * 1e3
        return {'sent': sent, 'bag_end': last_time,
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
    parser.add_argument('--delay', type=float, default=0.0, metavar='S',
                        help='then wait S seconds more: a subscriber matches the player a '
                             'moment after the player matched it (1 s is plenty)')
    args = parser.parse_args(argv)
    if not 0.01 <= args.rate <= 100:
        parser.error(f'--rate {args.rate} is outside 0.01..100')
    if args.clock is not None and not 1 <= args.clock <= 1000:
        parser.error(f'--clock {args.clock} Hz is outside 1..1000')
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
        player = BagPlayer(node, plans, args.clock)
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
                 f'{summary["late_p95_ms"]:.1f} ms, at most {summary["late_max_ms"]:.1f} ms')
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
