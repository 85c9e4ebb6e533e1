"""Voice emotion model files, per-speaker/per-stream normalisation and the classifier.

ROS-free. A model is a Keras 3 ``.keras`` archive with one extra entry, ``mika.json``,
holding what the node needs to use it correctly: feature version and names, sample rate,
label order, normalisation statistics and the calibration temperature. Loading always
uses ``safe_mode=True`` and only built-in layers (no Lambda, no pickles).

The network sees features standardised per speaker (training) or per stream (node):
acted corpora differ far more between speakers and microphones than between emotions,
and without this a model collapses onto one class on a new voice.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from mika_common import litert_cache
from mika_common.emotions import EMOTION_LABELS, reorder_to_canonical

METADATA_ENTRY = 'mika.json'
METADATA_FORMAT = 'mika-voice-emotion/1'
MIN_STD = 1e-3  # floor for standard deviations: constant features must not explode
#: Stream normaliser defaults (also the voice node's): the population prior counts as this
#: many utterances (2 measured best among 0.5-16, models/MODEL_CARD.md), and a stream's
#: past utterances lose half their weight after this many new ones.
DEFAULT_PRIOR_WEIGHT = 2.0
DEFAULT_HALF_LIFE = 100.0

TRAIN_HINT = (
    'train one with `python -m mika_voice.training.train_voice --output-dir /tmp/voice_eval '
    '--model-out src/mika_voice/models/voice_emotion.keras` (reads ../shared/data/ravdess; '
    'see src/mika_voice/models/MODEL_CARD.md)')


class VoiceModelError(RuntimeError):
    """A model file is missing, unreadable, or does not match this code."""


@dataclass
class VoiceModelMetadata:
    """Everything besides the weights that decides what a model's outputs mean."""
    feature_version: str
    feature_set: str
    feature_names: list
    sample_rate: int
    label_names: list
    #: Mean of the raw features over all training clips: the stream normaliser's prior.
    population_mean: list
    #: Root-mean-square of the per-speaker standard deviations: the prior spread.
    within_speaker_std: list
    temperature: float = 1.0
    model_id: str = ''
    normalisation: str = 'per-speaker standardisation (training), running per-stream (node)'
    training: Dict = field(default_factory=dict)
    format: str = METADATA_FORMAT

    def check(self) -> None:
        """Raise ``ValueError`` if the fields contradict each other."""
        dims = len(self.feature_names)
        if len(self.population_mean) != dims or len(self.within_speaker_std) != dims:
            raise ValueError('normalisation statistics do not match the feature count')
        if sorted(self.label_names) != sorted(EMOTION_LABELS):
            raise ValueError(f'label names {self.label_names} are not the seven emotions')
        if type(self.sample_rate) is not int or self.sample_rate <= 0:
            raise ValueError(f'sample rate must be a positive integer, got {self.sample_rate!r}')
        if not self.temperature > 0:
            raise ValueError(f'temperature must be positive, got {self.temperature}')


class SpeakerStandardiser:
    """Standardise each speaker's features by that speaker's own mean and spread.

    Used in training and offline evaluation, where a speaker's clips are all known.
    """

    @staticmethod
    def transform(features: np.ndarray, groups: Sequence) -> np.ndarray:
        features = np.asarray(features, dtype=np.float64)
        groups = np.asarray(groups)
        result = np.empty_like(features)
        for group in np.unique(groups):
            rows = groups == group
            mean = features[rows].mean(axis=0)
            std = np.maximum(features[rows].std(axis=0), MIN_STD)
            result[rows] = (features[rows] - mean) / std
        return result.astype(np.float32)


def population_statistics(features: np.ndarray, groups: Sequence):
    """(mean over all rows, RMS of per-group std): priors for :class:`RunningStandardiser`."""
    features = np.asarray(features, dtype=np.float64)
    groups = np.asarray(groups)
    variances = [features[groups == g].var(axis=0) for g in np.unique(groups)]
    within = np.sqrt(np.mean(variances, axis=0))
    return features.mean(axis=0), np.maximum(within, MIN_STD)


class RunningStandardiser:
    """Per-stream standardisation the node applies before the classifier.

    Starts from the training population's statistics (worth ``prior_weight`` utterances)
    and moves toward the statistics of the utterances heard on this stream; older
    utterances fade with ``half_life`` (in utterances) so a new speaker or microphone
    takes over. ``reset()`` when the stream is known to change.
    """

    def __init__(self, prior_mean, prior_std, prior_weight: float = DEFAULT_PRIOR_WEIGHT,
                 half_life: float = DEFAULT_HALF_LIFE):
        self._prior_mean = np.asarray(prior_mean, dtype=np.float64).copy()
        prior_std = np.maximum(np.asarray(prior_std, dtype=np.float64), MIN_STD)
        if self._prior_mean.shape != prior_std.shape or self._prior_mean.ndim != 1:
            raise ValueError('prior mean and std must be 1-D arrays of equal length')
        if prior_weight <= 0 or half_life <= 0:
            raise ValueError('prior_weight and half_life must be positive')
        self._prior_variance = prior_std ** 2
        self.prior_weight = float(prior_weight)
        self._decay = 0.5 ** (1.0 / float(half_life))
        self.reset()

    def reset(self) -> None:
        self._weight = 0.0
        self._sum = np.zeros_like(self._prior_mean)
        self._sum_squares = np.zeros_like(self._prior_mean)
        self.count = 0

    def update(self, features) -> None:
        """Add one utterance's raw features to this stream's statistics."""
        x = np.asarray(features, dtype=np.float64).reshape(-1)
        if x.shape != self._prior_mean.shape or not np.all(np.isfinite(x)):
            raise ValueError(f'expected {self._prior_mean.size} finite features, '
                             f'got shape {x.shape}')
        self._weight = self._weight * self._decay + 1.0
        self._sum = self._sum * self._decay + x
        self._sum_squares = self._sum_squares * self._decay + x * x
        self.count += 1

    def _stream_moments(self):
        if self._weight == 0.0:
            return self._prior_mean, self._prior_variance
        mean = self._sum / self._weight
        return mean, np.maximum(self._sum_squares / self._weight - mean ** 2, 0.0)

    @property
    def mean(self) -> np.ndarray:
        stream_mean, _ = self._stream_moments()
        return ((self.prior_weight * self._prior_mean + self._weight * stream_mean)
                / (self.prior_weight + self._weight))

    @property
    def std(self) -> np.ndarray:
        """Prior and stream variances pooled by weight (the prior's mean does not
        inflate the spread of a stream whose level differs from the population's)."""
        _, stream_variance = self._stream_moments()
        variance = ((self.prior_weight * self._prior_variance + self._weight * stream_variance)
                    / (self.prior_weight + self._weight))
        return np.sqrt(np.maximum(variance, MIN_STD ** 2))

    def transform(self, features) -> np.ndarray:
        """Standardise raw features (1-D or rows) with the current statistics."""
        x = np.asarray(features, dtype=np.float64)
        return ((x - self.mean) / self.std).astype(np.float32)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of held-out (speaker) logits."""
    from scipy.optimize import minimize_scalar
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)

    def nll(log_t):
        p = softmax(logits, np.exp(log_t))
        return -np.mean(np.log(np.maximum(p[np.arange(len(labels)), labels], 1e-12)))
    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method='bounded').x))


class VoiceEmotionClassifier:
    """A loaded model: standardised features in, calibrated probabilities out.

    ``model`` is the Keras model (None where LiteRT serves from the cache); ``runner``,
    where given, computes the logits instead of Keras (a parity-checked LiteRT export).
    """

    def __init__(self, model, metadata: VoiceModelMetadata, path: Optional[Path] = None,
                 runner=None):
        self.model = model
        self.metadata = metadata
        self.path = path
        self.feature_dims = len(metadata.feature_names)
        self._run = runner if runner is not None else model.predict_on_batch
        self.runtime = 'tflite' if runner is not None else 'keras'
        self.from_cache = False
        self.runtime_notes: List[str] = []

    @property
    def label_names(self):
        """Always the canonical :data:`EMOTION_LABELS` order of :meth:`predict_proba`."""
        return list(EMOTION_LABELS)

    def new_stream_normaliser(self, prior_weight: float = DEFAULT_PRIOR_WEIGHT,
                              half_life: float = DEFAULT_HALF_LIFE) -> RunningStandardiser:
        return RunningStandardiser(self.metadata.population_mean,
                                   self.metadata.within_speaker_std,
                                   prior_weight=prior_weight, half_life=half_life)

    def logits(self, standardised: np.ndarray) -> np.ndarray:
        x = np.asarray(standardised, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.feature_dims:
            raise ValueError(f'expected (n, {self.feature_dims}) features, got {x.shape}')
        if not np.all(np.isfinite(x)):
            raise ValueError('features contain NaN or infinite values')
        return np.asarray(self._run(x), dtype=np.float64)

    def predict_proba(self, standardised: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, rows in :data:`EMOTION_LABELS` order."""
        probabilities = softmax(self.logits(standardised), self.metadata.temperature)
        if list(self.metadata.label_names) == list(EMOTION_LABELS):
            return probabilities
        return np.stack([reorder_to_canonical(self.metadata.label_names, row)
                         for row in probabilities])


def save_voice_model(model, path, metadata: VoiceModelMetadata) -> Path:
    """Write ``model`` as a .keras archive with ``mika.json`` inside, then verify it loads."""
    metadata.check()
    path = Path(path)
    if path.suffix != '.keras':
        raise ValueError(f'{path}: a voice model file must end in .keras')
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + '.tmp.keras')
    try:
        model.save(tmp)
        with zipfile.ZipFile(tmp, 'a', compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(METADATA_ENTRY, json.dumps(asdict(metadata), indent=1))
        load_voice_model(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path


def read_metadata(path) -> VoiceModelMetadata:
    """The ``mika.json`` of a model file, without loading Keras."""
    path = Path(path)
    if not path.is_file():
        raise VoiceModelError(f'voice model {path} not found; {TRAIN_HINT}')
    try:
        with zipfile.ZipFile(path) as archive:
            raw = json.loads(archive.read(METADATA_ENTRY))
    except KeyError:
        raise VoiceModelError(
            f'{path} is a Keras archive without {METADATA_ENTRY} (not a Mika voice model); '
            f'{TRAIN_HINT}') from None
    except (*litert_cache.ARCHIVE_ERRORS, RecursionError) as error:  # zlib.error, bad JSON
        raise VoiceModelError(f'voice model {path} is corrupt ({type(error).__name__}: '
                              f'{error}); {TRAIN_HINT}') from None
    if not isinstance(raw, dict):
        raise VoiceModelError(f'{path}: {METADATA_ENTRY} is {type(raw).__name__}, not a JSON '
                              f'object; {TRAIN_HINT}')
    if raw.get('format') != METADATA_FORMAT:
        raise VoiceModelError(f'{path}: metadata format {raw.get("format")!r}, '
                              f'expected {METADATA_FORMAT!r}; {TRAIN_HINT}')
    try:
        metadata = VoiceModelMetadata(**raw)
        metadata.check()
    except (TypeError, ValueError) as error:
        raise VoiceModelError(f'{path}: invalid metadata ({error}); {TRAIN_HINT}') from None
    return metadata


RUNTIMES = ('keras', 'auto')
#: LiteRT serves only where its logits equal Keras' within this on a probe batch.
PARITY_TOLERANCE = 1e-4


def load_voice_model(path, expected_feature_version: Optional[str] = None,
                     runtime: str = 'keras') -> VoiceEmotionClassifier:
    """Load and check a model file; raises :class:`VoiceModelError` naming the path.

    ``expected_feature_version`` defaults to this code's version for the model's feature
    set: a model trained on other features would give silently wrong answers. ``runtime``
    'keras' gives a classifier whose ``model`` can be trained further; 'auto' (the node's)
    runs a parity-checked LiteRT export, from the cache without importing Keras where one
    exists (:mod:`mika_common.litert_cache`), and falls back to Keras (reason in
    ``runtime_notes``) where the export fails or differs.
    """
    from mika_voice import features
    if runtime not in RUNTIMES:
        raise ValueError(f'runtime must be one of {RUNTIMES}, got {runtime!r}')
    path = Path(path)
    metadata = read_metadata(path)
    if expected_feature_version is None:
        try:
            expected_feature_version = features.feature_version(metadata.feature_set)
        except ValueError as error:
            raise VoiceModelError(f'{path}: {error}') from None
    if metadata.feature_version != expected_feature_version:
        raise VoiceModelError(
            f'{path} was trained on features {metadata.feature_version!r} but this code '
            f'computes {expected_feature_version!r}; retrain: {TRAIN_HINT}')
    if metadata.feature_names != features.feature_names(metadata.feature_set):
        raise VoiceModelError(f'{path}: feature names differ from this code; {TRAIN_HINT}')
    if runtime == 'keras':
        return VoiceEmotionClassifier(_load_keras(path, metadata), metadata, path)
    try:
        key = litert_cache.network_key(path, METADATA_ENTRY)
    except litert_cache.ARCHIVE_ERRORS as error:
        raise VoiceModelError(f'voice model {path} is corrupt ({type(error).__name__}: '
                              f'{error}); {TRAIN_HINT}') from None
    probe = np.random.default_rng(0).standard_normal((8, len(metadata.feature_names)))
    choice = litert_cache.litert_runner(
        key, lambda: _load_keras(path, metadata),
        lambda model, batch: model.predict_on_batch(batch), probe, PARITY_TOLERANCE)
    if choice.runner is not None:
        _check_shapes(path, choice.runner.input_shape, choice.runner.output_shape, metadata)
    classifier = VoiceEmotionClassifier(choice.keras_model, metadata, path, choice.runner)
    classifier.from_cache = choice.from_cache
    classifier.runtime_notes = [f'{path}: {note}' for note in choice.notes]
    if choice.runner is None:
        classifier.runtime_notes[-1] += '; using Keras'
    return classifier


def _load_keras(path: Path, metadata: VoiceModelMetadata):
    import keras
    try:
        model = keras.saving.load_model(str(path), safe_mode=True, compile=False)
    except Exception as error:  # Keras raises many types for a damaged archive
        raise VoiceModelError(
            f'voice model {path} could not be loaded by Keras ({type(error).__name__}: '
            f'{error}); {TRAIN_HINT}') from None
    _check_shapes(path, model.input_shape, model.output_shape, metadata)
    return model


def _check_shapes(path: Path, inputs, outputs, metadata: VoiceModelMetadata) -> None:
    if inputs[-1] != len(metadata.feature_names) or outputs[-1] != len(metadata.label_names):
        raise VoiceModelError(
            f'{path}: model maps {inputs} to {outputs}, metadata says '
            f'{len(metadata.feature_names)} features and {len(metadata.label_names)} labels')
