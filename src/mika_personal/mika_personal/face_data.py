"""Face samples from recorded sessions, made by the face node's own code. ROS-free.

Each camera frame of a session's bag goes through the detector and tracker the face node
builds from its parameters (:class:`mika_perception.pipeline.FacePipeline`); the largest
face detected in the frame is cut out with the preprocessing spec stored in the base model
file, so the crops are exactly what the node would classify. Each sample keeps its
session id and its time (seconds from the bag start) and takes the label of the
``labels.csv`` interval it falls in; frames outside every interval are dropped.

Neighbouring video frames are nearly the same image: kept all, they inflate every count
and every score. :func:`thin_near_duplicates` keeps a frame only when it differs from the
last kept frame of its session and label by at least a threshold of mean absolute
difference of 16x16 thumbnails of the model inputs; :data:`NEAR_DUPLICATE_MAD` was
measured (``python studies/thinning_study.py``, figures in its docstring).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation.bag_format import (
    IMAGE_TYPE, BagError, Interval, label_at, read_truth_csv)
from mika_perception.preprocessing import PreprocessSpec, face_crop, preprocess_face
from mika_personal.session_writer import COMPRESSED_TYPE, ROLE_CAMERA
from mika_personal.sessions import (
    SessionError, SessionInfo, bag_messages, counts_per_session, extract_sessions,
    load_prepared, save_prepared, session_paths)

CAMERA_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
DATASET_FORMAT = 'mika-personal-faces/1'
#: A frame this much earlier than the previous one restarts tracking, as in the node.
TIME_JUMP_BACK_S = 1.0

#: Side of the thumbnails compared to find near-duplicates.
THUMBNAIL = 16
#: Least mean absolute difference between the thumbnails of a frame and of the last kept
#: frame (model-input values, in [-1, 1]) for the frame to count as new. Measured with
#: ``python studies/thinning_study.py`` (figures in its docstring): neighbouring
#: frames of one recording differ by 0.042 (median), 0.182 (99th percentile); two
#: different face images by 0.27 or more (1st percentile 0.34). The threshold is the
#: neighbours' 99th percentile rounded up.
NEAR_DUPLICATE_MAD = 0.19


# ----------------------------------------------------------------------------- dataset
@dataclass
class FaceDataset:
    """Face crops with their labels, sessions and times; saved as one ``.npz``.

    ``crops`` are :func:`mika_perception.preprocessing.face_crop` outputs (grey uint8,
    ``spec.size`` square): :meth:`inputs` turns them into model input, and augmentation
    works on them as on FER-2013 images.
    """

    crops: np.ndarray         # (N, size, size) uint8
    labels: np.ndarray        # (N,) str, one of EMOTION_LABELS
    session_ids: np.ndarray   # (N,) str
    times: np.ndarray         # (N,) float64, seconds from the session's bag start
    spec: PreprocessSpec
    info: Dict = field(default_factory=dict)

    def __post_init__(self):
        self.crops = np.asarray(self.crops, dtype=np.uint8).reshape(
            (-1, self.spec.size, self.spec.size))
        self.labels = np.asarray(self.labels, dtype=str)
        self.session_ids = np.asarray(self.session_ids, dtype=str)
        self.times = np.asarray(self.times, dtype=np.float64)
        sizes = {len(self.crops), len(self.labels), len(self.session_ids), len(self.times)}
        if len(sizes) != 1:
            raise ValueError(f'crops, labels, session ids and times differ in length: {sizes}')
        unknown = sorted(set(self.labels.tolist()) - set(EMOTION_LABELS))
        if unknown:
            raise ValueError(f'labels {unknown} are not among {", ".join(EMOTION_LABELS)}')

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def label_indices(self) -> np.ndarray:
        """Labels as indices into :data:`EMOTION_LABELS`."""
        return np.array([EMOTION_LABELS.index(label) for label in self.labels], np.int64)

    def inputs(self) -> np.ndarray:
        """(N, size, size, 1) float32 model input, as the node prepares it."""
        batch = np.empty((len(self),) + self.spec.input_shape, np.float32)
        for i, crop in enumerate(self.crops):
            batch[i] = preprocess_face(crop, None, self.spec)
        return batch

    def subset(self, rows) -> 'FaceDataset':
        rows = np.asarray(rows)
        return FaceDataset(self.crops[rows], self.labels[rows], self.session_ids[rows],
                           self.times[rows], self.spec, dict(self.info))

    @classmethod
    def concatenate(cls, parts: Sequence['FaceDataset'], info: Dict) -> 'FaceDataset':
        specs = {part.spec for part in parts}
        if len(specs) != 1:
            raise ValueError(f'datasets prepared with different preprocessing: {specs}')
        return cls(np.concatenate([p.crops for p in parts]),
                   np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.session_ids for p in parts]),
                   np.concatenate([p.times for p in parts]), specs.pop(), info)

    def save(self, path: Path) -> Path:
        """Strings as fixed-width unicode arrays, spec and info as JSON."""
        return save_prepared(
            path, DATASET_FORMAT, crops=self.crops, labels=self.labels,
            session_ids=self.session_ids, times=self.times,
            preprocess=np.array(json.dumps(self.spec.to_dict())),
            info=np.array(json.dumps(self.info)))

    @classmethod
    def load(cls, path: Path) -> 'FaceDataset':
        return load_prepared(path, DATASET_FORMAT, lambda data: cls(
            data['crops'], data['labels'], data['session_ids'], data['times'],
            PreprocessSpec.from_dict(json.loads(str(data['preprocess']))),
            json.loads(str(data['info']))), 'face dataset', 'prepare_sessions')

    def summary(self) -> Dict[str, Dict[str, int]]:
        """Sample counts per session and label."""
        return counts_per_session(self.session_ids, self.labels)


# ----------------------------------------------------------------------------- thinning
def thumbnails(inputs: np.ndarray) -> np.ndarray:
    """(N, 16, 16) area averages of model inputs: what near-duplicates are compared on.

    At 16x16 a shift of a pixel or two of the tracked box (its smoothing lags when the
    head moves) hardly counts while a changed face still does; measured, the gap between
    neighbouring frames and different faces is wider than at 48x48 or with SSIM (see
    ``studies/thinning_study.py``).
    """
    inputs = np.asarray(inputs, np.float32)
    return np.stack([cv2.resize(x.reshape(x.shape[0], x.shape[1]), (THUMBNAIL, THUMBNAIL),
                                interpolation=cv2.INTER_AREA) for x in inputs]
                    ) if len(inputs) else np.zeros((0, THUMBNAIL, THUMBNAIL), np.float32)


def crop_difference(first: np.ndarray, second: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (model-input values, in [-1, 1])."""
    return float(np.mean(np.abs(np.asarray(first, np.float32) - np.asarray(second, np.float32))))


def thin_near_duplicates(inputs: np.ndarray, session_ids: Sequence[str],
                         labels: Sequence[str], threshold: float = NEAR_DUPLICATE_MAD
                         ) -> np.ndarray:
    """Boolean mask of the samples kept, given model inputs in time order.

    A sample is kept when it is the first of its session and label run, or when the
    :func:`crop_difference` of its thumbnail to that of the last *kept* sample of the run
    reaches ``threshold``; comparing with the last kept one (not the previous frame) lets
    slow drift add a sample once it has added up to a visibly different face.
    """
    if threshold < 0:
        raise ValueError(f'threshold must be >= 0, got {threshold}')
    small = thumbnails(inputs)
    keep = np.zeros(len(small), dtype=bool)
    reference = None
    previous_key = None
    for i, (x, session, label) in enumerate(zip(small, session_ids, labels)):
        key = (str(session), str(label))
        if key != previous_key or crop_difference(x, reference) >= threshold:
            keep[i] = True
            reference = x
            previous_key = key
    return keep


# ----------------------------------------------------------------------------- reading
class NoCameraError(BagError):
    """A session recorded without a camera: it has no faces to give."""


def camera_topic_of(reader, path: Path, wanted: Optional[str]) -> str:
    """``wanted``, else the bag's only image topic; BagError lists the choices."""
    images = sorted({c.topic for c in reader.connections if c.msgtype in CAMERA_TYPES})
    if wanted:
        types = {c.msgtype for c in reader.connections if c.topic == wanted}
        if not types:
            raise BagError(f'bag {path} has no topic {wanted}; image topics: '
                           f'{", ".join(images) or "none"}')
        if not types <= set(CAMERA_TYPES):
            raise BagError(f'bag {path}: topic {wanted} carries {", ".join(sorted(types))}, '
                           f'expected {" or ".join(CAMERA_TYPES)}')
        return wanted
    if not images:
        raise NoCameraError(f'bag {path} has no image topic (an audio-only session)')
    if len(images) != 1:
        raise BagError(f'bag {path} has {len(images)} image topics '
                       f'({", ".join(images) or "none"}): name the camera topic')
    return images[0]


def camera_frames(bag: Path, topic: Optional[str] = None, counts: Optional[Counter] = None
                  ) -> Iterator[Tuple[float, float, np.ndarray]]:
    """(seconds from the bag start, header stamp, BGR image) of each camera frame.

    Frames the node would reject are skipped and counted in ``counts`` by reason; a
    damaged bag raises :class:`BagError`.
    """
    from mika_perception.image_conversion import ImageConverter, ImageFormatError

    def camera(reader):
        wanted = camera_topic_of(reader, bag, topic)
        return [c for c in reader.connections if c.topic == wanted]

    counts = Counter() if counts is None else counts
    converter = ImageConverter()
    for time_s, connection, msg in bag_messages(bag, camera, 'camera frames'):
        try:
            image = (converter.image(msg) if connection.msgtype == IMAGE_TYPE
                     else converter.compressed(msg))
        except ImageFormatError as error:
            counts[f'rejected frames ({error.reason})'] += 1
            continue
        yield time_s, msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, image


# ----------------------------------------------------------------------------- extraction
def face_node_values(params_file: Optional[Path] = None) -> Dict:
    """The face node's parameter values from the launch params YAML (or its defaults),
    checked as the node checks them."""
    from mika_evaluation.node_config import read_params_file, resolve
    return resolve('face_node', read_params_file(params_file)['face_node'])


def build_extraction_pipeline(values: Dict, base_model: str):
    """(pipeline, notes): detector and tracker as the face node builds them from
    ``values``; the classifier is the base model on the Keras runtime (no TFLite export:
    only the boxes are used here)."""
    from mika_perception.face_parameters import build_face_pipeline
    values = dict(values, runtime='keras', probability_time_constant_s=0.0)
    pipeline, _, notes = build_face_pipeline(values, model_paths=[base_model])
    return pipeline, notes


@dataclass
class SessionFaces:
    """What extraction found in one session, before thinning."""

    session_id: str
    person: str = ''
    crops: List[np.ndarray] = field(default_factory=list)
    labels: List[str] = field(default_factory=list)
    times: List[float] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def dataset(self, spec: PreprocessSpec) -> FaceDataset:
        crops = np.array(self.crops, np.uint8).reshape((-1, spec.size, spec.size))
        return FaceDataset(crops, self.labels, [self.session_id] * len(self.labels),
                           self.times, spec)


def extract_session(session_dir: Path, pipeline, spec: PreprocessSpec,
                    camera_topic: Optional[str] = None) -> SessionFaces:
    """Every labelled frame's largest detected face in the session's bag."""
    session_dir = Path(session_dir)
    bag, labels_csv = session_paths(session_dir)
    info = SessionInfo.read(session_dir)
    topic = camera_topic or info.topics.get(ROLE_CAMERA) or None
    intervals = read_truth_csv(labels_csv, 0.0)  # seconds from the bag start
    found = SessionFaces(info.session_id, info.person)
    faces_from_frames(camera_frames(bag, topic, found.counts), pipeline, spec, intervals,
                      found)
    if found.counts['frames'] == 0:
        raise SessionError(f'session {session_dir}: its bag has no camera frames on '
                           f'{topic or "its image topic"}')
    return found


def faces_from_frames(frames: Iterator[Tuple[float, float, np.ndarray]], pipeline,
                      spec: PreprocessSpec, intervals: Sequence[Interval],
                      found: SessionFaces) -> SessionFaces:
    """Adds to ``found`` the largest detected face of each labelled frame, cropped as the
    node crops it. ``frames`` yield (seconds from the start, stamp, BGR image)."""
    pipeline.reset()
    last_stamp = None
    for time_s, stamp, image in frames:
        found.counts['frames'] += 1
        stamp = stamp if stamp > 0.0 else time_s  # unstamped frames: bag time
        if last_stamp is not None and stamp < last_stamp - TIME_JUMP_BACK_S:
            pipeline.reset()  # as the node: time jumped back
        last_stamp = stamp
        result = pipeline.process_image(image, stamp)
        label = label_at(intervals, time_s)
        if label is None:
            found.counts['frames outside labelled time'] += 1
            continue
        detected = [face for face in result.faces if face.detected]
        if not detected:
            found.counts['labelled frames without a face'] += 1
            continue
        main = max(detected, key=lambda face: face.box[2] * face.box[3])
        found.crops.append(face_crop(image, main.box, spec, main.roll_deg))
        found.labels.append(label)
        found.times.append(time_s)
    return found


def prepare_faces(session_dirs: Sequence[Path], base_model: str,
                  params_file: Optional[Path] = None, camera_topic: Optional[str] = None,
                  threshold: float = NEAR_DUPLICATE_MAD, log=print) -> FaceDataset:
    """Extract and thin every session; ``info`` records how, and the counts per session."""
    from mika_perception.face_model import read_metadata

    spec = read_metadata(base_model).preprocess
    values = face_node_values(params_file)
    pipeline, notes = build_extraction_pipeline(values, base_model)
    for note in notes:
        log(f'note: {note}')
    parts, per_session = [], {}
    for found in extract_sessions(
            session_dirs, lambda path: extract_session(path, pipeline, spec, camera_topic),
            NoCameraError, log):
        part = found.dataset(spec)
        keep = thin_near_duplicates(part.inputs(), part.session_ids, part.labels, threshold)
        counts = dict(found.counts, **{'faces extracted': len(part),
                                       'near-duplicates removed': int((~keep).sum()),
                                       'samples kept': int(keep.sum())})
        per_session[found.session_id] = dict(counts, person=found.person)
        parts.append(part.subset(np.flatnonzero(keep)))
        log(f'{found.session_id}: ' + ', '.join(f'{k} {v}' for k, v in counts.items()))
    if not parts:
        raise SessionError('none of the sessions has camera frames: no faces to prepare')
    info = {'format': DATASET_FORMAT, 'base_model': str(base_model),
            'detector': pipeline.detector.name,
            'params_file': str(params_file) if params_file else 'face node defaults',
            'near_duplicate_mad': threshold, 'sessions': per_session}
    return FaceDataset.concatenate(parts, info)
