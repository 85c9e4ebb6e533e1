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
    with pytest.raises(RuntimeError, match='does not exist'):
        resolve(params_file=str(PARAMS_FILE.with_name('no_such_file.yaml')))
