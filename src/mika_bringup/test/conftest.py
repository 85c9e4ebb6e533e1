"""A probe node in the test process, shared by the process-level tests of one module."""
import pytest


@pytest.fixture(scope='module')
def ros_node():
    """An rclpy node and executor in this process, on the domain the node processes use."""
    pytest.importorskip('rclpy')
    from mika_common.testing import probe_node
    with probe_node('mika_test_probe') as probe:
        yield probe
