"""Face emotion model files and the classifier the node calls.

ROS-free. A model file is a Keras 3 ``.keras`` archive with one extra entry,
``mika.json``, that carries what the model cannot say about itself: the label order of
its outputs, the :class:`~mika_perception.preprocessing.PreprocessSpec` its inputs were
prepared with, and a format version. Keras ignores the extra entry; our loader reads it.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from mika_common import litert_cache
from mika_common.emotions import EMOTION_LABELS
from mika_perception.preprocessing import PreprocessSpec, preprocess_face, preprocess_faces
from mika_perception.resources import resolve_model_path

METADATA_ENTRY = 'mika.json'
MODEL_FORMAT = 'mika-face-model/1'
DEFAULT_MODEL_PATH = resolve_model_path('face_emotion.keras')  # installed, else source tree
HOW_TO_GET_A_MODEL = (
    'train one with `python -m mika_perception.training.train_face --output <path>` '
    '(see src/mika_perception/models/MODEL_CARD.md) or point the model_paths parameter '
    'at the default model shipped in src/mika_perception/models/face_emotion.keras')


class ModelFileError(RuntimeError):
    """A model file is missing, unreadable or lacks our metadata."""

    def __init__(self, path: str, problem: str):
        super().__init__(f'face model {path!r}: {problem}; {HOW_TO_GET_A_MODEL}')
        self.path = path


@dataclass
class ModelMetadata:
    """What travels with the weights inside the model file."""

    label_names: List[str]
    preprocess: PreprocessSpec
    model_id: str
    format: str = MODEL_FORMAT
    training: Dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            'format': self.format,
            'model_id': self.model_id,
            'label_names': list(self.label_names),
            'input_shape': list(self.preprocess.input_shape),
            'preprocess': self.preprocess.to_dict(),
            'training': self.training,
        }

    @classmethod
    def from_dict(cls, values: dict) -> 'ModelMetadata':
        if not isinstance(values, dict):
            raise ValueError(f'expected a JSON object, got {type(values).__name__}')
        if values.get('format') != MODEL_FORMAT:
            raise ValueError(
                f'metadata format {values.get("format")!r}, expected {MODEL_FORMAT!r}')
        if not isinstance(values.get('preprocess'), dict):
            raise ValueError('preprocess must be a JSON object')
        names = list(values['label_names'])
        if sorted(names) != sorted(EMOTION_LABELS):
            raise ValueError(f'label names {names} are not the seven emotions')
        return cls(label_names=names,
                   preprocess=PreprocessSpec.from_dict(values['preprocess']),
                   model_id=str(values['model_id']),
                   training=dict(values.get('training', {})))


def save_model(model, path: str, metadata: ModelMetadata) -> None:
    """Write ``model`` without optimiser state (small file) plus ``mika.json``."""
    import keras

    if tuple(model.input_shape[1:]) != metadata.preprocess.input_shape:
        raise ValueError(f'model input {model.input_shape[1:]} does not match the '
                         f'preprocessing {metadata.preprocess.input_shape}')
    # Same layers and weights, but never compiled: the file carries no optimiser state.
    inference_model = keras.Model(model.inputs, model.outputs, name=model.name)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix='.keras', delete=False) as tmp:
        temporary = tmp.name
    try:
        inference_model.save(temporary)
        with zipfile.ZipFile(temporary, 'a') as archive:
            archive.writestr(METADATA_ENTRY, json.dumps(metadata.to_dict(), indent=2))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_metadata(path: str) -> ModelMetadata:
    """The ``mika.json`` of a model file, without loading Keras."""
    if not os.path.isfile(path):
        raise ModelFileError(path, 'no such file')
    try:
        with zipfile.ZipFile(path) as archive:
            raw = archive.read(METADATA_ENTRY)
    except KeyError:
        raise ModelFileError(path, f'no {METADATA_ENTRY} metadata inside') from None
    except litert_cache.ARCHIVE_ERRORS as error:  # zlib.error: a corrupt deflate stream
        raise ModelFileError(path, f'not a .keras archive (corrupt or truncated: '
                                   f'{type(error).__name__}: {error})') from None
    try:
        return ModelMetadata.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise ModelFileError(path, f'invalid {METADATA_ENTRY}: {error}') from None


def load_model(path: str):
    """(keras model, metadata), loaded with ``safe_mode=True``."""
    metadata = read_metadata(path)
    return _load_keras(path, metadata), metadata


def _load_keras(path: str, metadata: ModelMetadata):
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a damaged archive.
        raise ModelFileError(path, f'Keras could not load it ({error})') from None
    _check_input_shape(path, model.input_shape, metadata)
    return model


def _check_input_shape(path: str, shape, metadata: ModelMetadata) -> None:
    if tuple(shape[1:]) != metadata.preprocess.input_shape:
        raise ModelFileError(path, f'model input {tuple(shape[1:])} does not match '
                                   f'its metadata {metadata.preprocess.input_shape}')


def network_key(path: str) -> str:
    """The file's LiteRT cache key (:func:`mika_common.litert_cache.network_key`)."""
    try:
        return litert_cache.network_key(path, METADATA_ENTRY)
    except litert_cache.ARCHIVE_ERRORS as error:
        raise ModelFileError(path, f'corrupt archive ({type(error).__name__}: {error})'
                             ) from None


RUNTIMES = ('auto', 'tflite', 'keras')


class _KerasRunner:
    """Runs a Keras model through ``predict_on_batch`` (a compiled graph, not eager)."""

    name = 'keras'

    def __init__(self, model):
        self.model = model

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)


def parity_probe(spec: PreprocessSpec, count: int = 8, seed: int = 0) -> np.ndarray:
    """A fixed batch of smooth random images in the model's input range."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (count, 6, 6), dtype=np.uint8)
    return np.stack([preprocess_face(cv2.resize(s, (spec.size, spec.size)), None, spec)
                     for s in small])


class FaceEmotionClassifier:
    """Classifies every face of a frame in one batch; probabilities in canonical order.

    ``model_paths``: one file, or several whose outputs are averaged (an ensemble; all
    must share one preprocessing spec). ``flip_tta`` averages each face with its mirror
    image (run in the same batch). ``runtime``: 'tflite' uses the exported TFLite model
    only if its outputs equal Keras' within ``parity_tolerance`` on a probe batch, and
    'auto' falls back to Keras (reason in :attr:`runtime_notes`) where it does not. An
    export that passed is cached (:mod:`mika_common.litert_cache`): the next start loads
    it without importing Keras or TensorFlow (:attr:`from_cache`, one flag per member).
    """

    def __init__(self, model_paths: Sequence[str], flip_tta: bool = False,
                 runtime: str = 'auto', num_threads: int = 1,
                 parity_tolerance: float = 1e-4):
        if isinstance(model_paths, str):
            model_paths = [model_paths]
        if not model_paths:
            raise ValueError('at least one model path is needed')
        if runtime not in RUNTIMES:
            raise ValueError(f'runtime must be one of {RUNTIMES}, got {runtime!r}')
        self.flip_tta = bool(flip_tta)
        self.runtime_notes: List[str] = []
        self.parity_errors: List[float] = []
        self.from_cache: List[bool] = []
        self._members = []
        for path in model_paths:
            metadata = read_metadata(path)
            if self._members and metadata.preprocess != self.spec:
                raise ValueError(f'{path} uses preprocessing {metadata.preprocess}, the '
                                 f'ensemble uses {self.spec}; ensemble members must agree')
            order = [metadata.label_names.index(name) for name in EMOTION_LABELS]
            runner = self._choose_runner(path, metadata, runtime, num_threads,
                                         parity_tolerance)
            self._members.append((runner, order, metadata))

    @property
    def spec(self) -> PreprocessSpec:
        return self._members[0][2].preprocess

    @property
    def model_id(self) -> str:
        return '+'.join(m.model_id for _, _, m in self._members) + (
            '+flip' if self.flip_tta else '')

    @property
    def runtimes(self) -> List[str]:
        return [runner.name for runner, _, _ in self._members]

    def _choose_runner(self, path, metadata, runtime, num_threads, tolerance):
        if runtime == 'keras':
            self.from_cache.append(False)
            return _KerasRunner(_load_keras(path, metadata))
        choice = litert_cache.litert_runner(
            network_key(path), lambda: _load_keras(path, metadata),
            lambda model, batch: _KerasRunner(model)(batch), parity_probe(metadata.preprocess),
            tolerance, num_threads)
        if choice.parity_error is not None:
            self.parity_errors.append(choice.parity_error)
        if choice.runner is None and runtime == 'tflite':
            raise RuntimeError(f'{path}: ' + '; '.join(choice.notes))
        self.runtime_notes += [f'{path}: {note}' for note in choice.notes]
        self.from_cache.append(choice.from_cache)
        if choice.runner is None:
            self.runtime_notes[-1] += '; using Keras'
            return _KerasRunner(choice.keras_model)
        _check_input_shape(path, choice.runner.input_shape, metadata)
        return choice.runner

    def classify_batch(self, batch: np.ndarray) -> np.ndarray:
        """(N, size, size, 1) preprocessed faces -> (N, 7) canonical probabilities."""
        batch = np.asarray(batch, dtype=np.float32)
        expected = self.spec.input_shape
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f'expected a batch of shape (N, {expected}), got {batch.shape}')
        count = batch.shape[0]
        if count == 0:
            return np.zeros((0, len(EMOTION_LABELS)), np.float32)
        if self.flip_tta:
            batch = np.concatenate([batch, batch[:, :, ::-1]])
        total = np.zeros((count, len(EMOTION_LABELS)), np.float64)
        for runner, order, _ in self._members:
            output = runner(batch)[:, order]
            total += output[:count]
            if self.flip_tta:
                total += output[count:]
        total /= len(self._members) * (2 if self.flip_tta else 1)
        return total.astype(np.float32)

    def classify_faces(self, image: np.ndarray, boxes: Sequence,
                       rolls_deg: Optional[Sequence[Optional[float]]] = None) -> np.ndarray:
        """Every face box (x, y, w, h) of one BGR/grey frame, in one batch; ``rolls_deg``:
        each face's eye-line angle where the detector gives one (see ``face_crop``)."""
        return self.classify_batch(preprocess_faces(image, boxes, self.spec, rolls_deg))
