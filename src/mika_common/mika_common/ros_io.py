"""QoS profiles, time conversion, node start-up and the input watchdog shared by Mika nodes.

The watchdog exists because the commonest ROS support question is a silent node: a topic
that is not wired, or a QoS mismatch (a reliable subscriber never hears a best-effort
camera). Every subscription made through :class:`InputWatchdog` says, a few seconds after
start and then throttled, which topic it waits on and which topics of that type other nodes
publish, and logs incompatible-QoS events with the setting to change.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Type

import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy)

try:  # Iron and newer
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

from mika_common.node_params import RELIABILITY_CHOICES  # ROS-free, for the parameter lists
from mika_common.process_signals import (
    begin_stopping, ignore_interrupts, interrupt_on_stop_signals)


def sensor_qos(reliability: str = 'best_effort', depth: int = 1) -> QoSProfile:
    """Sensor-data QoS keeping only the newest ``depth`` messages.

    Best effort hears both best-effort and reliable publishers; 'reliable' is offered for
    transports that need it.
    """
    if reliability not in RELIABILITY_CHOICES:
        raise ValueError(f'reliability must be one of {RELIABILITY_CHOICES}, got {reliability!r}')
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=(ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort'
                     else ReliabilityPolicy.RELIABLE),
        durability=DurabilityPolicy.VOLATILE)


def results_qos(depth: int = 10) -> QoSProfile:
    """Reliable, volatile: per-modality results, where every message counts."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos(depth: int = 1) -> QoSProfile:
    """Reliable, transient-local: a subscriber that starts late still gets the last state."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(seconds: float) -> Time:
    whole = int(seconds // 1)
    nanosec = int(round((seconds - whole) * 1e9))
    if nanosec >= 1_000_000_000:
        whole, nanosec = whole + 1, nanosec - 1_000_000_000
    return Time(sec=whole, nanosec=nanosec)


def run_node(node_factory: Callable[[], Node], args: Optional[List[str]] = None,
             *, finished: Optional[Callable[[Node], bool]] = None,
             on_exit: Optional[Callable[[Node], None]] = None,
             exit_code: Optional[Callable[[Node], int]] = None,
             ros_signal_handlers: bool = True) -> int:
    """Create the node, spin it on one thread until Ctrl-C or shutdown, and clean up.

    One thread because rclpy 9.1.2's MultiThreadedExecutor submits a task still waiting for
    a worker to its pool again on every turn of its loop (ros2/rclpy#1223): its main thread
    spins at full CPU and callbacks come late (bench/results/executor.md); long work belongs
    on a node's own worker thread.

    A node that refuses to start (missing model, invalid parameters) raises from its
    constructor: the reason is printed and the process exits 1, so launch's respawn and
    the user both see why. For a node with an end of its own: ``finished`` stops spinning
    once it says so, ``on_exit`` runs before the node is destroyed however spinning ended
    (save partial work), ``exit_code`` gives the process's status.
    ``ros_signal_handlers`` False keeps rclpy's handlers out, so that ``on_exit`` can still
    publish before ROS shuts down: once the node exists, the first SIGINT or SIGTERM only
    ends the spinning (an exception raised in the spinning thread can land inside rclpy's
    message conversion, which turns it into a RuntimeError: exit code 1 after 7 of 15
    Ctrl-Cs of the recorder beside two busy processes). Only the first stop signal
    interrupts (rclpy's handlers chain to Python's): a second SIGINT, as launch forwards
    after a terminal's Ctrl-C, must not break into the clean-up nor kill the exiting
    interpreter (see :mod:`mika_common.process_signals`).
    """
    from rclpy.signals import SignalHandlerOptions
    interrupt_on_stop_signals()
    rclpy.init(args=args if args is not None else sys.argv,
               signal_handler_options=(SignalHandlerOptions.ALL if ros_signal_handlers
                                       else SignalHandlerOptions.NO))
    node = executor = None
    stop_requested = threading.Event()
    try:
        node = node_factory()
        if not ros_signal_handlers:
            for stop_signal in (signal.SIGINT, signal.SIGTERM):
                signal.signal(stop_signal, lambda signum, frame: stop_requested.set())
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if finished is None and ros_signal_handlers:
            executor.spin()
        else:
            while (rclpy.ok() and not stop_requested.is_set()
                   and not (finished is not None and finished(node))):
                executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, RuntimeError, OSError) as error:
        print(f'[FATAL] {error}', file=sys.stderr, flush=True)
        return 1
    finally:
        begin_stopping()
        if not ros_signal_handlers:  # stopping: SIGINT does nothing more, SIGTERM ends it
            interrupt_on_stop_signals()
        if node is not None and on_exit is not None:
            on_exit(node)
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()  # uninstalls rclpy's signal handlers
        ignore_interrupts()
    return exit_code(node) if exit_code is not None else 0


class InputWatchdog:
    """Creates subscriptions that complain when they hear nothing.

    ``first_after_s`` after start, and then every ``repeat_every_s`` while a watched topic
    is still silent, one warning names the topic, its type, the topics of that type that other
    nodes publish, and the publishers' reliability when they offer less than we request.
    """

    def __init__(self, node: Node, first_after_s: float = 5.0, repeat_every_s: float = 30.0,
                 qos_parameter: Optional[str] = None):
        self._node = node
        self._first_after_s = first_after_s
        self._repeat_every_s = repeat_every_s
        self._qos_parameter = qos_parameter
        self._started = time.monotonic()
        self._last_warning: Dict[str, float] = {}
        self._heard: Dict[str, bool] = {}
        self._types: Dict[str, str] = {}
        self._subscriptions: Dict[str, object] = {}
        self._timer = node.create_timer(1.0, self._check)

    def subscribe(self, msg_type: Type, topic: str, callback: Callable, qos: QoSProfile):
        type_name = _type_name(msg_type)
        resolved = {'name': topic}  # the full name is known once the subscription exists
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info: self._on_incompatible_qos(resolved['name'], qos, info))
        subscription = self._node.create_subscription(
            msg_type, topic, self._marking(topic, callback), qos, event_callbacks=events)
        name = resolved['name'] = subscription.topic_name
        self._heard[name] = False
        self._types[name] = type_name
        self._subscriptions[topic] = subscription
        return subscription

    def publisher_events(self, topic: str) -> PublisherEventCallbacks:
        """Event callbacks for a publisher: logs subscribers that request more than we offer."""
        return PublisherEventCallbacks(
            incompatible_qos=lambda info: self._node.get_logger().warning(
                f'a subscriber of {topic} requests a QoS this node does not offer '
                f'(policy {_policy_name(info.last_policy_kind)}); it will receive nothing. '
                'Make the subscriber match the publisher (see `ros2 topic info -v`).',
                throttle_duration_sec=10.0))

    def _marking(self, topic: str, callback: Callable) -> Callable:
        def wrapped(msg):
            subscription = self._subscriptions.get(topic)
            if subscription is not None:
                self._heard[subscription.topic_name] = True
            callback(msg)
        return wrapped

    def _check(self) -> None:
        now = time.monotonic()
        if now - self._started < self._first_after_s:
            return
        for name, heard in self._heard.items():
            if heard:
                continue
            last = self._last_warning.get(name)
            if last is not None and now - last < self._repeat_every_s:
                continue
            self._last_warning[name] = now
            self._node.get_logger().warning(self._silence_report(name))

    def _silence_report(self, name: str) -> str:
        type_name = self._types[name]
        waited = time.monotonic() - self._started
        # remap candidates are other nodes' topics; not this node's outputs (a face node would
        # hear its own debug image) nor its other inputs (fusion would hear one modality twice)
        own = {endpoint.topic_name
               for endpoint in (*self._node.publishers, *self._node.subscriptions)}
        same_type = sorted(
            topic for topic, types in self._node.get_topic_names_and_types()
            if type_name in types and topic not in own and self._node.count_publishers(topic))
        publishers = self._node.get_publishers_info_by_topic(name)
        text = f'no message on {name} ({type_name}) after {waited:.0f} s. '
        if publishers:
            offered = sorted({_reliability_name(p.qos_profile.reliability) for p in publishers})
            text += (f'It has {len(publishers)} publisher(s) offering reliability '
                     f'{"/".join(offered)}: they publish nothing yet, or their QoS does not '
                     'match ours. ')
        else:
            text += 'Nobody publishes it. '
        if same_type:
            text += (f'Topics of that type published by other nodes: {", ".join(same_type)} '
                     f'(remap one onto {name}).')
        else:
            text += 'No other node publishes a topic of that type.'
        return text

    def _on_incompatible_qos(self, topic: str, requested: QoSProfile, info) -> None:
        policy = _policy_name(info.last_policy_kind)
        hint = ''
        if policy == 'RELIABILITY' and self._qos_parameter:
            hint = (' The publisher is best-effort and we request reliable: set '
                    f"parameter '{self._qos_parameter}' to best_effort.")
        elif policy == 'RELIABILITY':
            hint = (' The publisher is best-effort; this input must not lose messages: '
                    'make its publisher reliable.')
        elif policy == 'DURABILITY':
            hint = ' The publisher is volatile and we request transient-local.'
        self._node.get_logger().error(
            f'incompatible QoS on {topic}: policy {policy} differs from what a publisher '
            f'offers (we request reliability '
            f'{_reliability_name(requested.reliability)}); no message will arrive.{hint}',
            throttle_duration_sec=10.0)


def _type_name(msg_type: Type) -> str:
    module = msg_type.__module__.split('.')
    return f'{module[0]}/{module[1]}/{msg_type.__name__}'


def _policy_name(kind) -> str:
    try:
        return QoSPolicyKind(kind).name
    except ValueError:
        return str(kind)


def _reliability_name(reliability) -> str:
    return {ReliabilityPolicy.BEST_EFFORT: 'best_effort',
            ReliabilityPolicy.RELIABLE: 'reliable'}.get(reliability, str(reliability))
