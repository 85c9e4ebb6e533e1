"""The nodes' parameters from the launch file's params YAML, and the cores built from them.

The face, voice and fusion nodes declare their parameters (defaults, ranges, choices) and
assemble their pipelines in ROS-free modules (:mod:`mika_perception.face_parameters`,
:mod:`mika_voice.voice_parameters`, :mod:`mika_fusion.fusion_parameters`). This module
validates and defaults every value with those lists and builds the cores with those
functions, so an evaluation runs what the nodes run; it needs no rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

NODE_KEYS = ('face_node', 'voice_node', 'fusion_node')


class ConfigError(ValueError):
    """A params file (or override) the nodes themselves would refuse."""


def _specs(node_key: str):
    if node_key == 'face_node':
        from mika_perception.face_parameters import PARAMETERS
    elif node_key == 'voice_node':
        from mika_voice.voice_parameters import PARAMETERS
    else:
        from mika_fusion.fusion_parameters import PARAMETERS
    return PARAMETERS


def section_keys(document: Dict, node_key: str) -> List[str]:
    """Keys of ``document`` that address the node as ROS 2 params files do: ``face_node``,
    ``/face_node``, ``/**/face_node``, ``/ns/face_node``, and the wildcards ``/**``, ``**``;
    wildcards first, so that the node's own section wins."""
    wildcards = [k for k in document if k in ('/**', '**')]
    own = [k for k in document if isinstance(k, str) and k not in ('/**', '**')
           and k.rstrip('/').rsplit('/', 1)[-1] == node_key]
    return wildcards + own


def read_params_file(path: Optional[Path]) -> Dict[str, Dict[str, Any]]:
    """``{node_key: ros__parameters}`` of the file (empty dicts where a node is absent)."""
    result: Dict[str, Dict[str, Any]] = {key: {} for key in NODE_KEYS}
    if path is None:
        return result
    try:
        document = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f'params file {path}: {error}') from None
    if not isinstance(document, dict):
        raise ConfigError(f'params file {path}: not a mapping of node names')
    for key in NODE_KEYS:
        for name in section_keys(document, key):
            section = document[name]
            if isinstance(section, dict) and isinstance(section.get('ros__parameters'), dict):
                result[key].update(section['ros__parameters'])
    return result


def resolve(node_key: str, given: Dict[str, Any]) -> Dict[str, Any]:
    """Every declared parameter of the node: the given value checked like the node checks
    it, else the node's default. Unknown names are ignored, as a node ignores them."""
    values, problems = {}, []
    for spec in _specs(node_key):
        value = spec.coerce(given[spec.name]) if spec.name in given else spec.default
        problem = spec.check(value)
        if problem:
            problems.append(problem)
        values[spec.name] = value
    if problems:
        raise ConfigError(f'{node_key}: ' + '; '.join(problems))
    return values


@dataclass
class NodeParameters:
    face: Dict[str, Any]
    voice: Dict[str, Any]
    fusion: Dict[str, Any]
    source: str

    @classmethod
    def load(cls, path: Optional[Path], overrides: Optional[Dict[str, Dict]] = None
             ) -> 'NodeParameters':
        given = read_params_file(path)
        for key, values in (overrides or {}).items():
            given[key] = {**given[key], **values}
        return cls(resolve('face_node', given['face_node']),
                   resolve('voice_node', given['voice_node']),
                   resolve('fusion_node', given['fusion_node']),
                   str(path) if path else 'node defaults')


def fusion_config(values: Dict[str, Any]):
    """The FusionConfig the fusion node makes of ``values``; ConfigError where it refuses."""
    from mika_fusion.fusion_parameters import fusion_config as node_fusion_config
    try:
        return node_fusion_config(values)
    except ValueError as error:
        raise ConfigError(f'fusion_node: {error}') from None


def build_face_pipeline(values: Dict[str, Any], model_paths: Optional[Sequence[str]] = None):
    """The face node's pipeline, ``(pipeline, classifier, notes)``: see
    :func:`mika_perception.face_parameters.build_face_pipeline`."""
    from mika_perception.face_parameters import build_face_pipeline as build
    return build(values, model_paths)


def build_voice_pipeline(values: Dict[str, Any], model_path: Optional[str] = None):
    """The voice node's pipeline, ``(pipeline, classifier, notes)``, its decoder set later
    from AudioInfo or the format parameters: see
    :func:`mika_voice.voice_parameters.build_voice_pipeline`."""
    from mika_voice.voice_parameters import build_voice_pipeline as build
    return build(values, model_path)
