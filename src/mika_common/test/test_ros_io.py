"""In-process rclpy test: what the input watchdog proposes for a silent input."""
import pytest

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import KeyValue  # noqa: E402

from mika_common.ros_io import InputWatchdog, results_qos  # noqa: E402
from mika_common.testing import spin_until  # noqa: E402

PREFIX = '/mika_watchdog_test'


def test_a_silent_input_is_offered_only_topics_that_other_nodes_publish():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('watched', context=context)
    other = rclpy.create_node('other', context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        watchdog = InputWatchdog(node)
        for topic in ('face', 'voice'):  # two inputs of one type, as fusion_node has
            watchdog.subscribe(KeyValue, f'{PREFIX}/{topic}', lambda msg: None, results_qos())
        node.create_publisher(KeyValue, f'{PREFIX}/debug', 1)  # an output of that type too
        other.create_publisher(KeyValue, f'{PREFIX}/voice', 1)
        other.create_publisher(KeyValue, f'{PREFIX}/camera', 1)
        assert spin_until(executor, lambda: all(
            node.count_publishers(f'{PREFIX}/{topic}') for topic in ('debug', 'voice', 'camera')),
            5.0)
        report = watchdog._silence_report(f'{PREFIX}/face')
        assert f'{PREFIX}/camera' in report, report
        assert f'{PREFIX}/debug' not in report, report  # it would hear itself
        assert f'{PREFIX}/voice' not in report, report  # it would hear one input twice
    finally:
        executor.shutdown()
        other.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=context)
