"""The nodes' parameters from the launch file's params YAML, and the cores built from them.

The face, voice and fusion nodes declare their parameters (defaults, ranges, choices) in
their node modules; those lists are imported here so the evaluator validates and defaults
every value exactly as the nodes do. The pipelines are then assembled the way the nodes
assemble them (``FaceNode._build_pipeline``, ``VoiceNode._make_segmenter``): importing the
node modules needs rclpy installed, but nothing here starts ROS or DDS.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

NODE_KEYS = ('face_node', 'voice_node', 'fusion_node')


class ConfigError(ValueError):
    """A params file (or override) the nodes themselves would refuse."""


def _specs(node_key: str):
    if node_key == 'face_node':
        from mika_perception.face_node import PARAMETERS
    elif node_key == 'voice_node':
        from mika_voice.voice_node import PARAMETERS
    else:
        from mika_fusion.fusion_node import PARAMETERS
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
    from mika_fusion.fusion import FusionConfig
    fields = {f.name for f in dataclasses.fields(FusionConfig)}
    try:
        return FusionConfig(**{k: v for k, v in values.items() if k in fields})
    except ValueError as error:
        raise ConfigError(f'fusion_node: {error}') from None


def build_face_pipeline(values: Dict[str, Any], model_paths: Optional[Sequence[str]] = None):
    """FacePipeline as FaceNode builds it; returns (pipeline, classifier, notes)."""
    import cv2

    from mika_perception.detection import create_detector
    from mika_perception.face_model import FaceEmotionClassifier
    from mika_perception.pipeline import FacePipeline
    from mika_perception.resources import resolve_model_path
    from mika_perception.tracking import FaceTracker, TrackerConfig
    cv2.setNumThreads(values['threads'])
    paths = [resolve_model_path(p) for p in (model_paths or values['model_paths'])]
    classifier = FaceEmotionClassifier(paths, flip_tta=values['flip_tta'],
                                       runtime=values['runtime'], num_threads=values['threads'])
    notes: List[str] = list(classifier.runtime_notes)
    detector, note = create_detector(
        values['detector'], min_score=values['detector_min_score'],
        min_face_px=values['min_face_px'], haar_scale_factor=values['haar_scale_factor'],
        haar_min_neighbors=values['haar_min_neighbors'],
        haar_max_width=values['haar_max_width'], num_threads=values['threads'])
    if note:
        notes.append(note)
    tracker = FaceTracker(TrackerConfig(
        iou_threshold=values['tracker_iou_threshold'],
        centre_gate=values['tracker_centre_gate'],
        confirm_hits=values['tracker_confirm_hits'],
        max_misses=values['tracker_max_misses'],
        min_cutoff_hz=values['box_smoothing_min_cutoff_hz'],
        beta=values['box_smoothing_beta']))
    pipeline = FacePipeline(detector, tracker, classifier, values['probability_time_constant_s'])
    return pipeline, classifier, notes


def build_voice_pipeline(values: Dict[str, Any], model_path: Optional[str] = None):
    """VoicePipeline as VoiceNode builds it (decoder set later from AudioInfo or the
    format parameters); returns (pipeline, classifier, notes)."""
    from mika_voice import features
    from mika_voice.pipeline import VoicePipeline
    from mika_voice.segmentation import SegmenterConfig, UtteranceSegmenter
    from mika_voice.voice_model import load_voice_model
    from mika_voice.voice_node import default_model_path
    notes: List[str] = []
    path = model_path or values['model_path'] or default_model_path()
    classifier = load_voice_model(path)  # VoiceModelError names the path and the fix
    features.warm_up()
    vad = values['vad']
    if vad == 'webrtc' and importlib.util.find_spec('webrtcvad') is None:
        notes.append('webrtcvad is not installed: using the energy VAD')
        vad = 'energy'
    segmenter = UtteranceSegmenter(SegmenterConfig(
        sample_rate=classifier.metadata.sample_rate, vad=vad,
        aggressiveness=values['vad_aggressiveness'],
        min_utterance_s=values['min_utterance_s'], max_utterance_s=values['max_utterance_s'],
        hangover_ms=int(values['hangover_s'] * 1000), padding_ms=int(values['padding_s'] * 1000),
        running_window_s=values['running_window_s'], running_hop_s=values['running_hop_s']))
    pipeline = VoicePipeline(None, segmenter, features.extract_features, classifier,
                             max_clipped_fraction=values['max_clipped_fraction'])
    pipeline.normaliser = classifier.new_stream_normaliser(
        values['normaliser_prior_weight'], values['normaliser_half_life'])
    return pipeline, classifier, notes
