"""The real launch file, where launch_ros is installed (a ROS 2 from /opt/ros)."""
import importlib.util
import os
import pathlib
import re
import signal
import sys

import pytest
import yaml

from mika_bringup.graph import ARGUMENTS
from mika_common.testing import NodeProcess, spin_until

launch_ros = pytest.importorskip(
    'launch_ros', reason='launch_ros is not installed (ROS 2 from PyPI wheels has no launch; '
    'this test runs on a machine with /opt/ros/<distro> sourced)')
import launch  # noqa: E402

LAUNCH_FILE = pathlib.Path(__file__).resolve().parents[3] / 'launch' / 'perception.launch.py'
PARAMS_FILE = LAUNCH_FILE.parents[1] / 'config' / 'perception.yaml'


def load_description():
    spec = importlib.util.spec_from_file_location('perception_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def test_declares_every_argument_with_its_description_default_and_choices():
    description = load_description()
    declared = {a.name: a for a in description.entities
                if isinstance(a, launch.actions.DeclareLaunchArgument)}
    assert set(declared) == set(ARGUMENTS)
    context = launch.LaunchContext()
    for name, (default, text, choices) in ARGUMENTS.items():
        # launch appends "Valid choices are: [...]" to the description of an argument
        assert declared[name].description.startswith(text)
        assert declared[name].choices == (list(choices) if choices else None)
        assert launch.utilities.perform_substitutions(
            context, declared[name].default_value) == default


def resolve(**values):
    """The Node actions the launch file starts for ``values`` given as ``name:=value``."""
    description = load_description()
    context = launch.LaunchContext()
    context.launch_configurations.update({'params_file': str(PARAMS_FILE), **values})
    for action in description.entities:
        if isinstance(action, launch.actions.DeclareLaunchArgument):
            action.execute(context)  # fills in the defaults, refuses a value outside choices
    return description.entities[-1].execute(context)


def test_resolves_to_the_enabled_nodes():
    assert sorted(node.node_executable for node in resolve(enable_voice='false')) == [
        'face_node', 'fusion_node']
    assert [node.node_executable for node in resolve(
        enable_face='false', enable_voice='false', enable_logger='true')] == [
        'fusion_node', 'emotion_logger']


def test_refuses_a_value_outside_the_choices():
    with pytest.raises(RuntimeError, match='enable_face'):
        resolve(enable_face='yes')


def test_refuses_a_params_file_that_does_not_exist():
    with pytest.raises(ValueError, match='does not exist'):
        resolve(params_file=str(PARAMS_FILE.with_name('no_such_file.yaml')))


# Runs the launch file as `ros2 launch` does (ros2cli is not needed): argv[1] the file, then
# name:=value arguments.
RUN_LAUNCH_FILE = """
import sys
import launch
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = launch.LaunchService()
service.include_launch_description(launch.actions.IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]),
    launch_arguments=[tuple(a.split(':=', 1)) for a in sys.argv[2:]]))
sys.exit(service.run())
"""


def remote_parameter(node, executor, node_name, name):
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python
    client = node.create_client(GetParameters, f'{node_name}/get_parameters')
    try:
        assert client.wait_for_service(timeout_sec=20.0), f'{node_name} has no parameters'
        for _ in range(10):  # a request sent before the server matched us is lost: ask again
            future = client.call_async(GetParameters.Request(names=[name]))
            if spin_until(executor, future.done, 2.0):
                return parameter_value_to_python(future.result().values[0])
        raise AssertionError(f'{node_name} does not answer get_parameters')
    finally:
        node.destroy_client(client)


def test_runs_in_a_namespace_with_the_yaml_parameters_and_respawns_a_killed_node(
        ros_node, tmp_path):
    node, executor = ros_node
    # the project's YAML with one non-default value, under the YAML's own node key: the key
    # must match the node in a namespace too (a plain `fusion_node:` key does not)
    params = yaml.safe_load(PARAMS_FILE.read_text())
    key = next(k for k in params if k.rsplit('/', 1)[-1] == 'fusion_node')
    params[key]['ros__parameters']['voice_weight'] = 0.35
    params_file = tmp_path / 'perception.yaml'
    params_file.write_text(yaml.safe_dump(params))
    launched = NodeProcess([
        sys.executable, '-c', RUN_LAUNCH_FILE, str(LAUNCH_FILE), f'params_file:={params_file}',
        'namespace:=mika_launch_test', 'enable_face:=false', 'enable_voice:=false'])
    started = re.compile(r'\[fusion_node-1\]: process started with pid \[(\d+)\]')
    try:
        assert spin_until(executor, lambda: node.count_publishers(
            '/mika_launch_test/emotion/fused') == 1, 30.0), launched.output()
        assert remote_parameter(
            node, executor, '/mika_launch_test/fusion_node', 'voice_weight') == 0.35, \
            f'{PARAMS_FILE} key {key!r} does not reach /mika_launch_test/fusion_node'

        os.kill(int(started.search(launched.output()).group(1)), signal.SIGKILL)
        assert spin_until(executor, lambda: len(started.findall(launched.output())) == 2,
                          15.0), launched.output()
        assert remote_parameter(
            node, executor, '/mika_launch_test/fusion_node', 'voice_weight') == 0.35
    finally:
        assert launched.stop() == 0, launched.output()
