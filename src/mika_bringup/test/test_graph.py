"""The graph description shared by the launch file and the process runner."""
import importlib
import os
import pathlib
import subprocess

import pytest
import yaml

from mika_bringup.graph import (
    ARGUMENTS, default_arguments, node_specs, validate_arguments)
from mika_bringup.run_graph import node_command, parse_arguments

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_every_argument_is_described_and_defaults_lie_within_choices():
    for name, (default, description, choices) in ARGUMENTS.items():
        assert len(description) > 20, name
        if choices:
            assert default in choices, name
    validate_arguments(default_arguments())


@pytest.mark.parametrize('arguments, message', [
    ({'enable_face': 'yes'}, 'enable_face:=yes is not one of true, false'),
    ({'camera': '/x'}, "unknown argument 'camera'"),
])
def test_bad_arguments_are_refused_with_a_reason(arguments, message):
    with pytest.raises(ValueError, match=message):
        validate_arguments(arguments)


def test_topics_are_relative_and_remapped_from_arguments():
    arguments = {**default_arguments(), 'camera_topic': '/cam/rgb', 'audio_topic': '/mic'}
    remaps = {spec.name: dict(spec.remappings) for spec in node_specs(arguments)}
    assert remaps['face_node'] == {'image': '/cam/rgb', 'image/compressed': '/cam/rgb/compressed'}
    assert remaps['voice_node'] == {'audio': '/mic', 'audio_stamped': '/mic_stamped',
                                    'audio_info': '/mic_info'}


def test_the_runner_builds_the_command_launch_would():
    arguments = {**default_arguments(), 'namespace': 'robot1', 'log_level': 'debug',
                 'params_file': str(REPO / 'config' / 'perception.yaml')}
    spec = next(s for s in node_specs(arguments) if s.name == 'fusion_node')
    command = node_command(spec, arguments)
    assert command[0].endswith('lib/mika_fusion/fusion_node')
    assert command[1:] == [
        '--ros-args', '-r', '__node:=fusion_node', '--params-file', arguments['params_file'],
        '-p', 'use_sim_time:=false', '--log-level', 'debug', '-r', '__ns:=/robot1']


def test_env_sh_puts_the_runner_on_path():
    # the README runs `run_graph ...` after `source scripts/env.sh`; from a bare environment,
    # since the test run's own may have it on PATH already
    runner = REPO / 'install' / 'mika_bringup' / 'lib' / 'mika_bringup' / 'run_graph'
    if not runner.exists():
        pytest.skip('the workspace is not built (scripts/setup.sh)')
    bare = {'PATH': os.defpath, 'HOME': os.environ.get('HOME', '/'),
            **{k: v for k, v in os.environ.items() if k == 'MIKA_VENV'}}
    result = subprocess.run(
        ['bash', '-c', f'. {REPO / "scripts" / "env.sh"} && command -v run_graph && run_graph -h'],
        env=bare, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(runner)
    assert 'arguments (name:=value)' in result.stdout


def test_runner_command_line_parsing():
    arguments, options = parse_arguments(['enable_voice:=false', '--duration', '3'])
    assert arguments == {'enable_voice': 'false'} and options.duration == 3.0
    with pytest.raises(SystemExit):
        parse_arguments(['enable_voice=false'])


def test_the_params_file_holds_every_declared_parameter_of_every_node_and_nothing_else():
    config = yaml.safe_load((REPO / 'config' / 'perception.yaml').read_text())
    for spec in node_specs(default_arguments()):
        module = importlib.import_module(f'{spec.package}.{spec.executable}')
        declared = {p.name: p for p in getattr(module, 'PARAMETERS', [])}
        in_yaml = config[f'/**/{spec.name}']['ros__parameters']
        assert set(in_yaml) == set(declared), spec.name
        for name, value in in_yaml.items():
            assert declared[name].check(declared[name].coerce(value)) is None, (spec.name, name)
