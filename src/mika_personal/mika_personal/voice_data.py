"""Utterance features from recorded sessions, made by the voice node's own code. ROS-free.

A session's audio (``AudioDataStamped`` chunks in its bag, the format from the latched
``AudioInfo`` or else from the voice node's format parameters) goes through the pipeline
the voice node builds from its parameters (:func:`mika_voice.voice_parameters.
assemble_voice_pipeline`): the same decoder, resampler, VAD and utterance limits. Each
finished utterance gets the raw features of the base model's feature set (the node's
normaliser is *not* applied: fine-tuning standardises per person, evaluation replays the
node's running normaliser) and the label of the ``labels.csv`` intervals covering most of
it; utterances less than half covered by one label are dropped and counted. Every sample
keeps its session id, person and time (seconds from the bag start).

Training needs augmented copies (speed, pitch, shift, noise: the effects of the generic
model's training, :func:`mika_voice.training.corpus.augment`); they are made here, from
the utterance audio, for every sample and used for training rows only.
"""
from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation.bag_format import (
    AUDIO_INFO_TOPIC, AUDIO_INFO_TYPE, AUDIO_TYPE, BagError, Interval, read_truth_csv)
from mika_personal.sessions import (
    SessionError, SessionInfo, bag_messages, counts_per_session, extract_sessions,
    load_prepared, save_prepared, session_paths)
from mika_voice.training.corpus import DEFAULT_AUGMENT_ROUNDS

DATASET_FORMAT = 'mika-personal-voice/1'
#: Roles of the audio topics in ``session.yaml``.
AUDIO_ROLE, AUDIO_INFO_ROLE = 'audio', 'audio_info'
#: An utterance takes a label only when that label's intervals cover at least this share.
MIN_LABEL_COVERAGE = 0.5
#: Header stamps further than this from the chunk's bag time are from another clock (or
#: unset): the bag time is used instead.
MAX_STAMP_SKEW_S = 5.0


# ----------------------------------------------------------------------------- dataset
@dataclass
class VoiceDataset:
    """Raw utterance features with labels, sessions, persons and times; one ``.npz``.

    ``augmented[r, i]`` is augmentation round ``r`` of utterance ``i`` (training rows
    only). ``feature_set`` / ``feature_version`` say which model family the features fit.
    """

    features: np.ndarray      # (N, dims) float32, raw (not standardised)
    augmented: np.ndarray     # (rounds, N, dims) float32
    labels: np.ndarray        # (N,) str, one of EMOTION_LABELS
    session_ids: np.ndarray   # (N,) str
    persons: np.ndarray       # (N,) str
    start_s: np.ndarray       # (N,) float64, seconds from the session's bag start
    end_s: np.ndarray         # (N,) float64
    feature_set: str
    feature_version: str
    info: Dict = field(default_factory=dict)

    def __post_init__(self):
        self.features = np.asarray(self.features, dtype=np.float32)
        self.augmented = np.asarray(self.augmented, dtype=np.float32)
        if self.features.ndim != 2 or self.augmented.shape[1:] != self.features.shape:
            raise ValueError(f'features {self.features.shape} and augmented copies '
                             f'{self.augmented.shape} must be (N, dims) and (rounds, N, dims)')
        self.labels = np.asarray(self.labels, dtype=str)
        self.session_ids = np.asarray(self.session_ids, dtype=str)
        self.persons = np.asarray(self.persons, dtype=str)
        self.start_s = np.asarray(self.start_s, dtype=np.float64)
        self.end_s = np.asarray(self.end_s, dtype=np.float64)
        sizes = {len(self.features), len(self.labels), len(self.session_ids),
                 len(self.persons), len(self.start_s), len(self.end_s)}
        if len(sizes) != 1:
            raise ValueError(f'features, labels, sessions, persons and times differ in '
                             f'length: {sorted(sizes)}')
        unknown = sorted(set(self.labels.tolist()) - set(EMOTION_LABELS))
        if unknown:
            raise ValueError(f'labels {unknown} are not among {", ".join(EMOTION_LABELS)}')
        if not np.all(np.isfinite(self.features)) or not np.all(np.isfinite(self.augmented)):
            raise ValueError('features hold NaN or infinite values')

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def rounds(self) -> int:
        return self.augmented.shape[0]

    def subset(self, rows) -> 'VoiceDataset':
        rows = np.asarray(rows, dtype=np.int64)
        return VoiceDataset(self.features[rows], self.augmented[:, rows], self.labels[rows],
                            self.session_ids[rows], self.persons[rows], self.start_s[rows],
                            self.end_s[rows], self.feature_set, self.feature_version,
                            dict(self.info))

    @classmethod
    def concatenate(cls, parts: Sequence['VoiceDataset'], info: Dict) -> 'VoiceDataset':
        """One dataset of several; refuses mixed feature versions and a session id found in
        two parts (one recording prepared twice would land on both sides of a split)."""
        versions = {(p.feature_set, p.feature_version) for p in parts}
        if len(versions) != 1:
            raise ValueError(f'datasets made with different features: {sorted(versions)}')
        rounds = min(p.rounds for p in parts)
        seen: Dict[str, int] = {}
        for number, part in enumerate(parts):
            for session in sorted(set(part.session_ids.tolist())):
                if session in seen:
                    raise ValueError(f'session {session!r} is in dataset {seen[session] + 1} '
                                     f'and dataset {number + 1}: one recording twice')
                seen[session] = number
        (feature_set, version), = versions
        return cls(np.concatenate([p.features for p in parts]),
                   np.concatenate([p.augmented[:rounds] for p in parts], axis=1),
                   np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.session_ids for p in parts]),
                   np.concatenate([p.persons for p in parts]),
                   np.concatenate([p.start_s for p in parts]),
                   np.concatenate([p.end_s for p in parts]), feature_set, version, info)

    def save(self, path: Path) -> Path:
        return save_prepared(
            path, DATASET_FORMAT, features=self.features, augmented=self.augmented,
            labels=self.labels, session_ids=self.session_ids, persons=self.persons,
            start_s=self.start_s, end_s=self.end_s, feature_set=np.array(self.feature_set),
            feature_version=np.array(self.feature_version),
            info=np.array(json.dumps(self.info)))

    @classmethod
    def load(cls, path: Path) -> 'VoiceDataset':
        return load_prepared(path, DATASET_FORMAT, lambda data: cls(
            data['features'], data['augmented'], data['labels'], data['session_ids'],
            data['persons'], data['start_s'], data['end_s'], str(data['feature_set']),
            str(data['feature_version']), json.loads(str(data['info']))),
            'voice dataset', 'prepare_sessions --modality voice')

    def summary(self) -> Dict[str, Dict[str, int]]:
        """Utterance counts per session and label."""
        return counts_per_session(self.session_ids, self.labels)


# ----------------------------------------------------------------------------- labels
def label_utterance(intervals: Sequence[Interval], start: float, end: float
                    ) -> Tuple[Optional[str], float]:
    """(label whose intervals cover most of [start, end), share it covers); the label is
    None when no label covers at least :data:`MIN_LABEL_COVERAGE` of it."""
    duration = end - start
    if duration <= 0:
        return None, 0.0
    covered: Dict[str, float] = {}
    for interval in intervals:
        overlap = min(end, interval.end) - max(start, interval.start)
        if overlap > 0:
            covered[interval.label] = covered.get(interval.label, 0.0) + overlap
    if not covered:
        return None, 0.0
    label = max(covered, key=covered.get)
    share = covered[label] / duration
    return (label if share >= MIN_LABEL_COVERAGE else None), share


# ----------------------------------------------------------------------------- reading
class NoAudioError(BagError):
    """A session recorded without a microphone: it has no utterances to give."""


def _audio_connections(reader, bag: Path, info: SessionInfo):
    """(audio connections, AudioInfo connections) of the session's audio topics."""
    by_topic: Dict[str, set] = {}
    for connection in reader.connections:
        by_topic.setdefault(connection.topic, set()).add(connection.msgtype)
    audio_topic = info.topics.get(AUDIO_ROLE)
    if audio_topic is None:
        candidates = sorted(t for t, types in by_topic.items() if AUDIO_TYPE in types)
        if not candidates:
            raise NoAudioError(f'bag {bag} has no {AUDIO_TYPE} topic (a camera-only session)')
        if len(candidates) > 1:
            raise BagError(f'bag {bag} has {len(candidates)} audio topics '
                           f'({", ".join(candidates)}) and session.yaml names none')
        audio_topic = candidates[0]
    if by_topic.get(audio_topic) != {AUDIO_TYPE}:
        found = ', '.join(sorted(by_topic.get(audio_topic, set()))) or 'no messages'
        raise BagError(f'bag {bag}: audio topic {audio_topic} carries {found}, expected '
                       f'{AUDIO_TYPE}')
    info_topic = info.topics.get(AUDIO_INFO_ROLE, AUDIO_INFO_TOPIC)
    if info_topic in by_topic and by_topic[info_topic] != {AUDIO_INFO_TYPE}:
        raise BagError(f'bag {bag}: topic {info_topic} carries '
                       f'{", ".join(sorted(by_topic[info_topic]))}, expected {AUDIO_INFO_TYPE}')
    return ([c for c in reader.connections if c.topic == audio_topic],
            [c for c in reader.connections if c.topic == info_topic])


def audio_messages(bag: Path, info: SessionInfo) -> Iterator[Tuple[float, object]]:
    """(seconds from the bag start, message) of the session's AudioInfo and audio chunks,
    in bag order. A damaged bag raises :class:`BagError`."""
    def audio_and_info(reader):
        audio, info_connections = _audio_connections(reader, bag, info)
        return audio + info_connections

    for time_s, _, message in bag_messages(bag, audio_and_info, 'audio messages'):
        yield time_s, message


def chunk_time(message, bag_time: float, bag_start: float) -> Tuple[float, bool]:
    """(time of the chunk's first sample in seconds from the bag start, whether the header
    stamp was used): the header stamp when it agrees with the bag clock, else bag time."""
    stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
    relative = stamp - bag_start
    if stamp > 0 and abs(relative - bag_time) <= MAX_STAMP_SKEW_S:
        return relative, True
    return bag_time, False


# ----------------------------------------------------------------------------- extraction
def voice_node_values(params_file: Optional[Path] = None,
                      overrides: Optional[Dict] = None) -> Dict:
    """The voice node's parameter values from the launch params YAML (or its defaults)."""
    from mika_evaluation.node_config import read_params_file, resolve
    given = read_params_file(params_file)['voice_node']
    given.update(overrides or {})
    return resolve('voice_node', given)


@dataclass
class SessionUtterances:
    """What segmentation found in one session."""

    session_id: str
    person: str
    features: List[np.ndarray] = field(default_factory=list)
    augmented: List[List[np.ndarray]] = field(default_factory=list)  # per utterance
    labels: List[str] = field(default_factory=list)
    start_s: List[float] = field(default_factory=list)
    end_s: List[float] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def dataset(self, feature_set: str, feature_version: str, dims: int,
                rounds: int) -> VoiceDataset:
        n = len(self.labels)
        features = np.array(self.features, np.float32).reshape((n, dims))
        augmented = np.array(self.augmented, np.float32).reshape((n, rounds, dims))
        return VoiceDataset(features, augmented.transpose(1, 0, 2), self.labels,
                            [self.session_id] * n, [self.person] * n, self.start_s,
                            self.end_s, feature_set, feature_version)


def _bag_start(bag: Path) -> float:
    from mika_evaluation.offline import open_bag
    reader = open_bag(bag)
    try:
        return reader.start_time * 1e-9
    finally:
        reader.close()


def extract_session(session_dir: Path, values: Dict, classifier,
                    augment_rounds: int = DEFAULT_AUGMENT_ROUNDS, seed: int = 0
                    ) -> SessionUtterances:
    """Every labelled utterance of the session, cut and described as the voice node would.

    ``values``: the voice node's parameter values; ``classifier``: the base model (its
    sample rate and feature set are used).
    """
    from mika_voice.audio_decoding import AudioFormatError, StreamFormat
    from mika_voice.training.corpus import augment
    from mika_voice.voice_parameters import assemble_voice_pipeline

    session_dir = Path(session_dir)
    bag, labels_csv = session_paths(session_dir)
    info = SessionInfo.read(session_dir)
    intervals = read_truth_csv(labels_csv, 0.0)  # seconds from the bag start
    pipeline, _ = assemble_voice_pipeline(values, classifier)
    pipeline.set_format(StreamFormat.from_fields(
        values['sample_rate'], values['channels'], values['sample_format'],
        values['coding_format']))
    found = SessionUtterances(info.session_id, info.person)
    counts = found.counts
    rng = np.random.default_rng([seed, zlib.crc32(info.session_id.encode())])
    bag_start = _bag_start(bag)

    def take(utterances) -> None:
        for utterance in utterances:
            if utterance.running:
                continue  # sliding windows overlap the final utterance: not extra samples
            counts['utterances'] += 1
            label, _ = label_utterance(intervals, utterance.start_stamp, utterance.end_stamp)
            if label is None:
                counts['utterances mostly outside labelled time'] += 1
                continue
            clipped = float(np.mean(np.abs(utterance.samples) >= 0.999))
            if clipped > pipeline.max_clipped_fraction:
                counts['utterances rejected (clipping)'] += 1
                continue
            try:
                raw = pipeline.features(utterance.samples, utterance.sample_rate)
            except ValueError:
                counts['utterances rejected (unusable audio)'] += 1
                continue
            copies = []
            for _ in range(augment_rounds):
                try:
                    copies.append(pipeline.features(augment(utterance.samples, rng),
                                                    utterance.sample_rate))
                except ValueError:  # e.g. shifted out of its window: keep the original
                    copies.append(raw)
                    counts['augmented copies replaced by the original'] += 1
            found.features.append(raw)
            found.augmented.append(copies)
            found.labels.append(label)
            found.start_s.append(utterance.start_stamp)
            found.end_s.append(utterance.end_stamp)

    for bag_time, message in audio_messages(bag, info):
        if hasattr(message, 'sample_rate'):  # AudioInfo
            try:
                if pipeline.set_format(StreamFormat.from_fields(
                        int(message.sample_rate), int(message.channels),
                        message.sample_format, message.coding_format)):
                    counts['audio format changes'] += 1
            except AudioFormatError as error:
                raise BagError(f'session {session_dir}: AudioInfo describes a format the '
                               f'voice node refuses: {error}') from None
            continue
        start, stamped = chunk_time(message, bag_time, bag_start)
        counts['audio chunks'] += 1
        counts['chunks timed by bag time'] += not stamped
        try:
            outcome = pipeline.accept_chunk(message.audio.data, start)
        except AudioFormatError as error:
            counts[f'chunks rejected ({error.reason})'] += 1
            continue
        take(outcome.utterances)
    if counts['audio chunks'] == 0:
        raise NoAudioError(f'session {session_dir}: its bag has no audio chunks')
    # the recording's end ends speech still in progress, as silence would
    config = pipeline.segmenter.config
    tail_s = (config.hangover_ms + config.padding_ms) / 1000.0 + 0.1
    take(pipeline.segmenter.push(np.zeros(int(tail_s * config.sample_rate), np.float32)))
    counts['time jumps (segmenter restarted)'] = pipeline.time_jumps
    return found


def prepare_voices(session_dirs: Sequence[Path], base_model: Optional[str] = None,
                   params_file: Optional[Path] = None,
                   augment_rounds: int = DEFAULT_AUGMENT_ROUNDS, seed: int = 0,
                   log=print) -> VoiceDataset:
    """Extract every session; ``info`` records how, and the counts per session."""
    from mika_voice import features
    from mika_voice.voice_parameters import load_voice_classifier, make_segmenter

    values = voice_node_values(params_file)
    classifier = load_voice_classifier(values, base_model)
    features.warm_up()
    _, note = make_segmenter(values, classifier.metadata.sample_rate)
    if note:
        log(f'note: {note}')
    metadata = classifier.metadata
    dims = len(metadata.feature_names)
    parts, per_session = [], {}
    for found in extract_sessions(
            session_dirs,
            lambda path: extract_session(path, values, classifier, augment_rounds, seed),
            NoAudioError, log):
        counts = dict(found.counts, **{'samples kept': len(found.labels)})
        per_session[found.session_id] = dict(counts, person=found.person)
        parts.append(found.dataset(metadata.feature_set, metadata.feature_version, dims,
                                   augment_rounds))
        log(f'{found.session_id}: ' + ', '.join(f'{k} {v}' for k, v in counts.items() if v))
    if not parts or not sum(len(p) for p in parts):
        raise SessionError('none of the sessions has labelled utterances: nothing to prepare')
    segmenter_keys = ('vad', 'vad_aggressiveness', 'min_utterance_s', 'max_utterance_s',
                      'hangover_s', 'padding_s', 'max_clipped_fraction')
    info = {'format': DATASET_FORMAT, 'base_model': str(classifier.path),
            'base_model_id': metadata.model_id,
            'params_file': str(params_file) if params_file else 'voice node defaults',
            'segmenter': {key: values[key] for key in segmenter_keys},
            'min_label_coverage': MIN_LABEL_COVERAGE, 'augment_rounds': augment_rounds,
            'seed': seed, 'sessions': per_session}
    return VoiceDataset.concatenate(parts, info)
