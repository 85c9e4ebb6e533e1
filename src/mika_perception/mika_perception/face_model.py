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
from typing import Dict, List, Sequence

import cv2
import numpy as np

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
        if values.get('format') != MODEL_FORMAT:
            raise ValueError(
                f'metadata format {values.get("format")!r}, expected {MODEL_FORMAT!r}')
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
    except zipfile.BadZipFile:
        raise ModelFileError(path, 'not a .keras archive (corrupt or truncated)') from None
    except KeyError:
        raise ModelFileError(path, f'no {METADATA_ENTRY} metadata inside') from None
    try:
        return ModelMetadata.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFileError(path, f'invalid {METADATA_ENTRY}: {error}') from None


def load_model(path: str):
    """(keras model, metadata), loaded with ``safe_mode=True``."""
    metadata = read_metadata(path)
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a damaged archive.
        raise ModelFileError(path, f'Keras could not load it ({error})') from None
    if tuple(model.input_shape[1:]) != metadata.preprocess.input_shape:
        raise ModelFileError(path, f'model input {model.input_shape[1:]} does not match '
                                   f'its metadata {metadata.preprocess.input_shape}')
    return model, metadata


RUNTIMES = ('auto', 'tflite', 'keras')


class _KerasRunner:
    """Runs a Keras model through ``predict_on_batch`` (a compiled graph, not eager)."""

    name = 'keras'

    def __init__(self, model):
        self.model = model

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)


class _LiteRTRunner:
    """The same model exported to TFLite and run by the LiteRT interpreter."""

    name = 'tflite'

    def __init__(self, model, num_threads: int):
        from ai_edge_litert.interpreter import Interpreter

        with tempfile.TemporaryDirectory() as directory:
            exported = os.path.join(directory, 'model.tflite')
            model.export(exported, format='litert', verbose=False)
            with open(exported, 'rb') as stream:
                self.flatbuffer = stream.read()
        self.interpreter = Interpreter(model_content=self.flatbuffer, num_threads=num_threads)
        self.input_index = self.interpreter.get_input_details()[0]['index']
        self.output_index = self.interpreter.get_output_details()[0]['index']
        self.batch_size = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] != self.batch_size:
            self.interpreter.resize_tensor_input(self.input_index, list(batch.shape))
            self.interpreter.allocate_tensors()
            self.batch_size = batch.shape[0]
        self.interpreter.set_tensor(self.input_index, np.ascontiguousarray(batch, np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index).copy()


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
    'auto' falls back to Keras (reason in :attr:`runtime_notes`) where it does not.
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
        self._members = []
        for path in model_paths:
            model, metadata = load_model(path)
            if self._members and metadata.preprocess != self.spec:
                raise ValueError(f'{path} uses preprocessing {metadata.preprocess}, the '
                                 f'ensemble uses {self.spec}; ensemble members must agree')
            order = [metadata.label_names.index(name) for name in EMOTION_LABELS]
            runner = self._choose_runner(path, model, metadata.preprocess, runtime,
                                         num_threads, parity_tolerance)
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

    def _choose_runner(self, path, model, spec, runtime, num_threads, tolerance):
        keras_runner = _KerasRunner(model)
        if runtime == 'keras':
            return keras_runner
        try:
            lite_runner = _LiteRTRunner(model, num_threads)
        except Exception as error:  # export needs TensorFlow; JAX-only machines lack it.
            if runtime == 'tflite':
                raise RuntimeError(f'{path}: TFLite export failed: {error}') from error
            self.runtime_notes.append(f'{path}: TFLite export failed ({error}); using Keras')
            return keras_runner
        probe = parity_probe(spec)
        difference = float(np.max(np.abs(lite_runner(probe) - keras_runner(probe))))
        self.parity_errors.append(difference)
        if difference <= tolerance:
            return lite_runner
        message = (f'{path}: TFLite differs from Keras by {difference:.2e} '
                   f'> {tolerance:.1e}')
        if runtime == 'tflite':
            raise RuntimeError(message)
        self.runtime_notes.append(message + '; using Keras')
        return keras_runner

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

    def classify_faces(self, image: np.ndarray, boxes: Sequence) -> np.ndarray:
        """Every face box (x, y, w, h) of one BGR/grey frame, in one batch."""
        return self.classify_batch(preprocess_faces(image, boxes, self.spec))
