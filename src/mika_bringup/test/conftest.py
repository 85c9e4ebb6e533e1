"""A probe node in the test process, shared by the process-level tests of one module."""
import pytest


@pytest.fixture(scope='module')
def ros_node():
    """An rclpy node and executor in this process, on the domain the node processes use."""
    rclpy = pytest.importorskip('rclpy')
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('mika_test_probe', context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)
