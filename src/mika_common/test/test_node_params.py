"""In-process rclpy test: declared descriptors, runtime validation and start-up refusal."""
import pytest
import rclpy
from rclpy.parameter import Parameter

from mika_common.node_params import ParameterSet, ParamSpec

SPECS = [
    ParamSpec('rate_hz', 10.0, 'Publication rate.', min_value=0.1, max_value=100.0),
    ParamSpec('policy', 'largest', 'Which face to follow.',
              choices=('largest', 'most_confident', 'track_id')),
    ParamSpec('max_faces', 4, 'Faces classified per frame.', min_value=1, max_value=32),
    ParamSpec('topics', ['a', 'b'], 'Inputs.',
              validator=lambda v: None if len(set(v)) == len(v) else 'topics must be unique'),
]


@pytest.fixture(scope='module', autouse=True)
def ros_context():
    rclpy.init()
    yield
    rclpy.shutdown()


def make(overrides=None, on_change=None):
    node = rclpy.create_node('params_under_test', parameter_overrides=overrides or [])
    return node, ParameterSet(node, SPECS, on_change)


def test_descriptors_carry_description_and_range():
    node, params = make()
    descriptor = node.describe_parameter('rate_hz')
    assert descriptor.description == 'Publication rate.'
    assert descriptor.floating_point_range[0].to_value == 100.0
    assert 'One of: largest' in node.describe_parameter('policy').description
    assert params['max_faces'] == 4
    node.destroy_node()


def test_runtime_changes_are_validated_with_a_reason_and_applied():
    seen = []
    node, params = make(on_change=seen.append)
    refused = node.set_parameters([Parameter('rate_hz', value=500.0)])[0]
    # rclpy enforces the descriptor's range itself, with its own wording
    assert not refused.successful and 'out of range' in refused.reason
    refused = node.set_parameters([Parameter('policy', value='loudest')])[0]
    assert not refused.successful and 'not one of' in refused.reason
    refused = node.set_parameters([Parameter('topics', value=['a', 'a'])])[0]
    assert not refused.successful and 'unique' in refused.reason
    refused = node.set_parameters([Parameter('max_faces', value='four')])[0]
    assert not refused.successful and 'must be of type int' in refused.reason
    accepted = node.set_parameters([Parameter('rate_hz', value=5)])[0]  # 5 accepted for 5.0
    assert accepted.successful
    assert params['rate_hz'] == 5.0 and seen == [{'rate_hz': 5.0}]
    node.destroy_node()


def test_a_node_change_hook_can_refuse_a_combination():
    def refuse(changed):
        raise ValueError('not with this model')

    node, params = make(on_change=refuse)
    result = node.set_parameters([Parameter('max_faces', value=8)])[0]
    assert not result.successful and result.reason == 'not with this model'
    assert params['max_faces'] == 4
    node.destroy_node()


def test_invalid_values_from_a_params_file_stop_the_node_at_start():
    with pytest.raises(ValueError, match='invalid parameters: .*rate_hz out of range'):
        make([Parameter('rate_hz', value=0.0)])
