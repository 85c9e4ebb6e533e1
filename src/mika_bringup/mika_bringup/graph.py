"""The node graph of Mika perception, described once.

``launch/perception.launch.py`` turns this description into launch_ros ``Node`` actions;
:mod:`mika_bringup.run_graph` starts the same nodes as plain processes where the ``launch``
packages are not installed (a machine with ROS 2 from PyPI wheels). Both take the same
arguments, so they cannot drift apart.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

#: Launch arguments: name -> (default, description, choices or None).
ARGUMENTS: Dict[str, Tuple[str, str, Tuple[str, ...] | None]] = {
    'params_file': ('', 'YAML with the parameters of every node; empty: the installed '
                        'config/perception.yaml of mika_bringup.', None),
    'namespace': ('', 'Namespace of all nodes and their relative topics '
                      '(empty: /emotion/fused at the root).', None),
    'camera_topic': ('camera/image_raw', 'sensor_msgs/Image topic of the camera; the '
                     'CompressedImage topic is this name plus /compressed.', None),
    'audio_topic': ('audio', 'audio_common_msgs topic prefix of the microphone driver: '
                    '<audio_topic> (AudioData), <audio_topic>_stamped (AudioDataStamped), '
                    '<audio_topic>_info (AudioInfo).', None),
    'enable_face': ('true', 'Start the face node (camera -> emotion/face).', ('true', 'false')),
    'enable_voice': ('true', 'Start the voice node (microphone -> emotion/voice).',
                     ('true', 'false')),
    'enable_fusion': ('true', 'Start the fusion node (-> emotion/fused).', ('true', 'false')),
    'enable_logger': ('false', 'Start the example behaviour node that logs emotion/fused.',
                      ('true', 'false')),
    'respawn': ('true', 'Restart a node that exits.', ('true', 'false')),
    'log_level': ('info', 'Log level of all nodes.', ('debug', 'info', 'warn', 'error')),
    'use_sim_time': ('false', 'Use /clock (replaying a bag).', ('true', 'false')),
}


@dataclass(frozen=True)
class NodeSpec:
    package: str
    executable: str
    name: str
    enable_argument: str
    remappings: List[Tuple[str, str]] = field(default_factory=list)


def node_specs(arguments: Dict[str, str]) -> List[NodeSpec]:
    """The nodes for ``arguments`` (launch argument values), enabled or not."""
    camera = arguments['camera_topic']
    audio = arguments['audio_topic']
    return [
        NodeSpec('mika_perception', 'face_node', 'face_node', 'enable_face',
                 [('image', camera), ('image/compressed', camera + '/compressed')]),
        NodeSpec('mika_voice', 'voice_node', 'voice_node', 'enable_voice',
                 [('audio', audio), ('audio_stamped', audio + '_stamped'),
                  ('audio_info', audio + '_info')]),
        NodeSpec('mika_fusion', 'fusion_node', 'fusion_node', 'enable_fusion'),
        NodeSpec('mika_fusion', 'emotion_logger', 'emotion_logger', 'enable_logger'),
    ]


def resolve_params_file(arguments: Dict[str, str], share_directory: str) -> str:
    """The params file to use: the argument, or the installed config/perception.yaml.

    A file that does not exist is refused: launch_ros would only warn and start every node
    on its defaults, so a typo in params_file:= would go unnoticed.
    """
    path = arguments['params_file'] or os.path.join(share_directory, 'config', 'perception.yaml')
    if not os.path.isfile(path):
        raise ValueError(f'params_file {path} does not exist: pass an existing YAML '
                         '(params_file:=/path/perception.yaml) or rebuild mika_bringup')
    return path


def default_arguments() -> Dict[str, str]:
    return {name: default for name, (default, _, _) in ARGUMENTS.items()}


def validate_arguments(arguments: Dict[str, str]) -> None:
    """Raise ValueError naming an unknown argument or a value outside its choices."""
    for name, value in arguments.items():
        if name not in ARGUMENTS:
            raise ValueError(f'unknown argument {name!r}; known: {", ".join(ARGUMENTS)}')
        choices = ARGUMENTS[name][2]
        if choices is not None and value not in choices:
            raise ValueError(f'{name}:={value} is not one of {", ".join(choices)}')


def is_true(value: str) -> bool:
    return value.lower() == 'true'
