"""The real launch file, where launch_ros is installed (a ROS 2 from /opt/ros)."""
import importlib.util
import pathlib

import pytest

from mika_bringup.graph import ARGUMENTS

launch_ros = pytest.importorskip(
    'launch_ros', reason='launch_ros is not installed (ROS 2 from PyPI wheels has no launch; '
    'this test runs on a machine with /opt/ros/<distro> sourced)')
import launch  # noqa: E402

LAUNCH_FILE = pathlib.Path(__file__).resolve().parents[3] / 'launch' / 'perception.launch.py'


def load_description():
    spec = importlib.util.spec_from_file_location('perception_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def test_declares_every_argument_with_its_description():
    description = load_description()
    declared = {a.name: a for a in description.entities
                if isinstance(a, launch.actions.DeclareLaunchArgument)}
    assert set(declared) == set(ARGUMENTS)
    for name, (default, text, _) in ARGUMENTS.items():
        assert declared[name].description == text


def test_resolves_to_the_enabled_nodes():
    description = load_description()
    context = launch.LaunchContext()
    for action in description.entities:
        if isinstance(action, launch.actions.DeclareLaunchArgument):
            action.visit(context)
    context.launch_configurations.update({
        'enable_voice': 'false', 'params_file': str(LAUNCH_FILE.parents[1] / 'config' /
                                                    'perception.yaml')})
    opaque = description.entities[-1]
    nodes = opaque.execute(context)
    names = sorted(node.node_executable for node in nodes)
    assert names == ['face_node', 'fusion_node']
