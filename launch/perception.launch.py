"""Mika perception: camera and microphone in, a debounced emotion state on emotion/fused.

    ros2 launch mika_bringup perception.launch.py camera_topic:=/camera/color/image_raw

Every argument is declared with a description (`ros2 launch ... --show-args`). The node
list comes from mika_bringup.graph, which the process runner used without launch shares.
"""
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from mika_bringup.graph import (
    ARGUMENTS, is_true, node_specs, resolve_params_file, validate_arguments)


def _nodes(context):
    arguments = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    validate_arguments(arguments)
    params_file = resolve_params_file(arguments, get_package_share_directory('mika_bringup'))
    return [
        Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            namespace=arguments['namespace'],
            parameters=[params_file, {'use_sim_time': is_true(arguments['use_sim_time'])}],
            remappings=spec.remappings,
            respawn=is_true(arguments['respawn']),
            respawn_delay=2.0,
            ros_arguments=['--log-level', arguments['log_level']],
            output='screen',
            emulate_tty=True,
        )
        for spec in node_specs(arguments) if is_true(arguments[spec.enable_argument])
    ]


def generate_launch_description():
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description,
                              **({'choices': list(choices)} if choices else {}))
        for name, (default, description, choices) in ARGUMENTS.items()
    ]
    return LaunchDescription(declared + [OpaqueFunction(function=_nodes)])
