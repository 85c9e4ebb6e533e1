"""The nodes' parameter lists and pipeline assembly work without ROS, as offline tools
(evaluation, tuning, personal fine-tuning) use them on machines that have no rclpy."""
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]

WITHOUT_ROS = '''
import sys
for name in ('rclpy', 'rcl_interfaces', 'rcl_interfaces.msg'):
    sys.modules[name] = None  # any import of them now fails

from mika_evaluation.node_config import (
    ConfigError, NodeParameters, build_face_pipeline, build_voice_pipeline, fusion_config)
from mika_perception.sample_frames import face_frame

params = NodeParameters.load(sys.argv[1])
print(fusion_config(params.fusion).half_life_s)
face, face_classifier, _ = build_face_pipeline({**params.face, 'runtime': 'keras'})
face.process_image(face_frame(), 0.0)  # a new face is reported from its second frame
print(len(face.process_image(face_frame(), 0.04).faces), face_classifier.model_id)
voice, voice_classifier, _ = build_voice_pipeline(params.voice)
print(voice.segmenter.config.hangover_ms, voice.features.keywords['feature_set'])
try:
    fusion_config({**params.fusion, 'face_selection': 'track_id', 'target_track_id': -1})
except ConfigError as error:
    print('refused:', error)
'''


def test_the_shipped_config_builds_the_node_pipelines_without_rclpy():
    environment = {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, '-c', WITHOUT_ROS, str(REPO / 'config' / 'perception.yaml')],
        capture_output=True, text=True, timeout=120, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == '0.5'  # half_life_s of config/perception.yaml
    faces, model_id = lines[1].split()
    assert faces == '1' and model_id.startswith('face_emotion')
    assert lines[2] == '400 librosa'  # hangover_s 0.4; the shipped model's feature set
    assert lines[3] == "refused: fusion_node: face_selection 'track_id' needs target_track_id >= 0"
