"""The voice node's parameters and the voice pipeline they configure, without ROS.

The node (:mod:`mika_voice.voice_node`) and offline evaluation
(:mod:`mika_evaluation.node_config`) validate a params file against :data:`PARAMETERS`
and build the pipeline with these functions, so one set of values means the same
segmentation, features and normalisation everywhere.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple

from mika_common.node_params import ParamSpec
from mika_voice import features
from mika_voice.pipeline import VoicePipeline
from mika_voice.segmentation import VAD_METHODS, SegmenterConfig, UtteranceSegmenter
from mika_voice.voice_model import DEFAULT_HALF_LIFE, DEFAULT_PRIOR_WEIGHT

MODEL_FILE = 'voice_emotion.keras'
INPUT_CHOICES = ('auto', 'stamped', 'plain')
RELIABILITY_CHOICES = ('auto', 'reliable', 'best_effort')
#: Parameters that shape segmentation: a change rebuilds the segmenter.
SEGMENTER_PARAMETERS = ('vad', 'vad_aggressiveness', 'min_utterance_s', 'max_utterance_s',
                        'hangover_s', 'padding_s', 'running_window_s', 'running_hop_s',
                        'noise_floor_margin_db', 'min_speech_modulation_db')


def default_model_path() -> str:
    """share/mika_voice/models/voice_emotion.keras when installed, else the source copy."""
    try:
        from ament_index_python.packages import get_package_share_directory
        return str(Path(get_package_share_directory('mika_voice')) / 'models' / MODEL_FILE)
    except (ImportError, LookupError, ValueError):
        return str(Path(__file__).resolve().parents[1] / 'models' / MODEL_FILE)


PARAMETERS = [
    ParamSpec('model_path', '', 'Voice emotion model (.keras with mika.json); empty: the '
              'model installed with mika_voice (share/mika_voice/models/voice_emotion.keras). '
              'A runtime change loads the new file first and is refused, with the reason, '
              'if it does not load; the running model stays until then.'),
    ParamSpec('input', 'auto', 'Which audio topic to use with ros-drivers audio_common_msgs: '
              "'stamped' (audio_stamped, sensor stamps), 'plain' (audio, stamped on arrival), "
              "'auto' (audio_stamped while it has a publisher, else audio).",
              choices=INPUT_CHOICES, read_only=True),
    ParamSpec('reliability', 'auto', "Audio subscription reliability; 'auto': reliable for "
              'audio_capture (it publishes reliable; no chunk lost unnoticed), best_effort for '
              "mgonzs13's SensorDataQoS publisher.", choices=RELIABILITY_CHOICES,
              read_only=True),
    ParamSpec('queue_depth', 50, 'Audio subscription depth in messages (50 = 5 s of '
              '100 ms chunks).', min_value=1, max_value=1000, read_only=True),
    ParamSpec('sample_rate', 16000, 'Stream sample rate in Hz, used until an AudioInfo '
              'arrives (audio_capture default 16000).', min_value=4000, max_value=384000),
    ParamSpec('channels', 1, 'Interleaved channels, used until an AudioInfo arrives.',
              min_value=1, max_value=64),
    ParamSpec('sample_format', 'S16LE', 'Sample format, used until an AudioInfo arrives.',
              choices=('U8', 'S8', 'S16LE', 'S16BE', 'S24LE', 'S32LE', 'S32BE', 'F32LE',
                       'F32BE', 'F64LE')),
    ParamSpec('coding_format', 'wave', "Coding, used until an AudioInfo arrives: only raw "
              "PCM ('wave') can be analysed.", choices=('wave', 'raw', 'pcm', 'mp3')),
    ParamSpec('frame_id', 'microphone', 'frame_id of results for plain AudioData (stamped '
              'input keeps the header frame_id).'),
    ParamSpec('vad', 'webrtc', 'Voice activity detector: webrtc, or energy (adaptive '
              'threshold; used automatically if webrtcvad is missing).', choices=VAD_METHODS),
    ParamSpec('vad_aggressiveness', 1, 'webrtcvad mode: 0 lenient .. 3 strict.',
              min_value=0, max_value=3),
    ParamSpec('min_utterance_s', 0.5, 'Speech shorter than this is ignored (s).',
              min_value=0.25, max_value=5.0),
    ParamSpec('max_utterance_s', 8.0, 'Longer speech is cut into pieces of this length (s).',
              min_value=1.0, max_value=30.0),
    ParamSpec('hangover_s', 0.4, 'Silence that ends an utterance (s); also the delay '
              'before a result.', min_value=0.09, max_value=3.0),
    ParamSpec('padding_s', 0.15, 'Audio kept before the speech onset and after its end (s).',
              min_value=0.0, max_value=1.0),
    ParamSpec('running_window_s', 3.0, 'Long speech: window of the running estimates (s).',
              min_value=1.0, max_value=30.0),
    ParamSpec('running_hop_s', 1.0, 'Long speech: a running estimate every this many '
              'seconds; 0 disables them.', min_value=0.0, max_value=30.0),
    ParamSpec('noise_floor_margin_db', 6.0, 'webrtcvad over a floor of -44 dBFS or louder (a '
              'fan, hum): a frame is speech only this far above the lowest level of the last '
              '2 s (dB); 0 disables.', min_value=0.0, max_value=30.0),
    ParamSpec('min_speech_modulation_db', 0.5, 'Utterances whose level fluctuates less than '
              'this at syllable rate (dB RMS, 1-10 Hz) are stationary noise and dropped; '
              '0 disables.', min_value=0.0, max_value=10.0),
    ParamSpec('max_clipped_fraction', 0.01, 'Utterances with more samples at digital full '
              'scale than this fraction are not classified (gain too high).',
              min_value=0.0, max_value=1.0),
    ParamSpec('max_pending_utterances', 4, 'Utterances waiting for the classifier; beyond '
              'it the oldest (running windows first) is dropped and counted.',
              min_value=1, max_value=100, read_only=True),
    ParamSpec('burst_factor', 3.0, 'Warn when audio arrives faster than this multiple of '
              'real time (a replay burst or a wrong sample_rate).', min_value=1.1,
              max_value=1000.0),
    ParamSpec('normaliser_prior_weight', DEFAULT_PRIOR_WEIGHT, 'Per-stream feature '
              "normalisation: weight of the training population's statistics, in "
              'utterances.', min_value=0.1, max_value=10000.0, read_only=True),
    ParamSpec('normaliser_half_life', DEFAULT_HALF_LIFE, 'Per-stream feature normalisation: '
              'half-life in utterances (a new voice takes over).', min_value=1.0,
              max_value=100000.0, read_only=True),
]


def load_voice_classifier(values: Mapping[str, Any], model_path: Optional[str] = None):
    """The model of ``model_path``, else of the values' ``model_path``, else the installed
    one, in LiteRT where its export matches Keras (cached: no Keras import at the next
    start). Raises ``VoiceModelError`` naming the path and how to train a model."""
    from mika_voice.voice_model import load_voice_model
    return load_voice_model(model_path or values['model_path'] or default_model_path(),
                            runtime='auto')


def voice_model_id(classifier) -> str:
    """The id results carry: the model's own, else its file name."""
    return classifier.metadata.model_id or Path(classifier.path).name


def feature_extractor(classifier):
    """``features(samples, sample_rate)`` of the feature set the model was trained on."""
    return functools.partial(features.extract_features,
                             feature_set=classifier.metadata.feature_set)


def make_segmenter(values: Mapping[str, Any], sample_rate: int
                   ) -> Tuple[UtteranceSegmenter, Optional[str]]:
    """The segmenter of ``values``, and a note when the energy VAD stands in for a missing
    webrtcvad. Raises ``ValueError`` for an inconsistent combination (e.g. running_window_s
    longer than max_utterance_s)."""
    vad, note = values['vad'], None
    if vad == 'webrtc' and importlib.util.find_spec('webrtcvad') is None:
        vad, note = 'energy', ('webrtcvad is not installed: using the energy VAD '
                               '(pip install webrtcvad-wheels)')
    config = SegmenterConfig(
        sample_rate=sample_rate, vad=vad, aggressiveness=values['vad_aggressiveness'],
        min_utterance_s=values['min_utterance_s'], max_utterance_s=values['max_utterance_s'],
        hangover_ms=int(values['hangover_s'] * 1000), padding_ms=int(values['padding_s'] * 1000),
        running_window_s=values['running_window_s'], running_hop_s=values['running_hop_s'],
        noise_floor_margin_db=values['noise_floor_margin_db'],
        min_speech_modulation_db=values['min_speech_modulation_db'])
    return UtteranceSegmenter(config), note


def assemble_voice_pipeline(values: Mapping[str, Any], classifier
                            ) -> Tuple[VoicePipeline, List[str]]:
    """Segmenter, features and stream normaliser of ``values`` around ``classifier``; the
    decoder is set later, from AudioInfo or the format parameters."""
    segmenter, note = make_segmenter(values, classifier.metadata.sample_rate)
    pipeline = VoicePipeline(None, segmenter, feature_extractor(classifier), classifier,
                             max_clipped_fraction=values['max_clipped_fraction'])
    pipeline.normaliser = classifier.new_stream_normaliser(
        values['normaliser_prior_weight'], values['normaliser_half_life'])
    return pipeline, [note] if note else []


def build_voice_pipeline(values: Mapping[str, Any], model_path: Optional[str] = None):
    """The voice pipeline as the node builds it at start: ``(pipeline, classifier,
    notes)``, with librosa's first-call compilation paid here."""
    classifier = load_voice_classifier(values, model_path)
    features.warm_up()
    pipeline, notes = assemble_voice_pipeline(values, classifier)
    return pipeline, classifier, notes
