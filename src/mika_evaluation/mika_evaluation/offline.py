"""Offline evaluation: replay a bag in bag time through the nodes' own cores, in-process.

Camera frames go through :class:`mika_perception.pipeline.FacePipeline`, audio chunks
through :class:`mika_voice.pipeline.VoicePipeline`, and their results through
:mod:`mika_fusion.fusion` exactly as the nodes call them, configured from the launch
file's params YAML. No DDS, no threads, no wall clock in any result: the same bag and
parameters give the same report on every run.

Timing model (what "now" is): a face result is available at its frame's bag time, a
voice result at the bag time of the chunk that completed its utterance; the fusion state
is computed on every result and at ``publish_rate_hz`` ticks, like the node's timer. The
node's real compute time is measured per stage and reported, not added to bag time; the
node's frame dropping under load (``max_rate_hz``, a busy worker) is not reproduced:
every frame is processed.

A bag that cannot be replayed whole (unreadable or truncated file, a missing topic, an
unknown message type on an input topic) raises :class:`BagError`; no report is written.
Plain MCAP files are read without copying the messages (:mod:`mika_evaluation.mcap_direct`),
anything else through ``rosbags``; both give the same messages in the same order.
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mika_common.emotions import EMOTION_LABELS, UNKNOWN
from mika_evaluation.bag_format import (
    AUDIO_INFO_TOPIC, AUDIO_INFO_TYPE, AUDIO_TOPIC, AUDIO_TYPE, CAMERA_TOPIC, COMPRESSED_SUFFIX,
    COMPRESSED_TYPE, IMAGE_TYPE, TRUTH_TOPIC, TRUTH_TYPE, BagError, Interval,
    intervals_from_label_messages, make_typestore, read_custom_data, read_truth_csv)
from mika_common.tensorflow_logging import quiet_tensorflow_start_up
from mika_evaluation.node_config import (
    ConfigError, NodeParameters, build_face_pipeline, build_voice_pipeline, fusion_config)


@dataclass(frozen=True)
class ModalityResult:
    """One result as the node would publish it (canonical-order probabilities)."""

    modality: str
    arrival: float        # bag time at which it exists
    stamp: float          # sensor stamp (frame time; utterance start)
    probabilities: np.ndarray
    confidence: float
    track_id: int = -1
    area: float = 0.0
    end_stamp: float = 0.0  # voice: utterance end

    @property
    def label(self) -> str:
        return EMOTION_LABELS[int(np.argmax(self.probabilities))]


@dataclass
class ReplayLog:
    """Everything the replay produced, before fusion; fusion can be re-run on it cheaply."""

    bag: str
    storage: str
    start: float
    end: float
    results: List[ModalityResult]
    stage_seconds: Dict[str, List[float]]
    counters: Dict[str, int]
    messages: Dict[str, int]
    truth: List[Interval]
    truth_source: str
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time over the same loop (all its threads)
    model_ids: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    manifest: Dict = field(default_factory=dict)
    mode: str = 'offline'  # 'live': recorded from the running graph (mika_evaluation.live)

    @property
    def duration(self) -> float:
        return self.end - self.start


# ----------------------------------------------------------------------------- reading
def open_bag(path: Path):
    from rosbags.rosbag2 import Reader
    path = Path(path)
    if not path.exists():
        raise BagError(f'bag {path} does not exist')
    reader = Reader(path)
    try:
        reader.open()
    except Exception as error:  # rosbags raises several types for damaged files
        raise BagError(f'bag {path} cannot be opened ({type(error).__name__}: {error}); '
                       'the file is damaged or truncated, or not a rosbag2 bag') from None
    return reader


def _connection(reader, topic: str, expected: Sequence[str], path: Path, typestore):
    """The topic's connection, checked to carry one of ``expected`` types."""
    matches = [c for c in reader.connections if c.topic == topic]
    if not matches:
        present = ', '.join(sorted(f'{c.topic} ({c.msgtype})' for c in reader.connections))
        raise BagError(f'bag {path} has no topic {topic}; it has: {present or "no topics"}. '
                       'Pass the right topic name (--camera-topic / --audio-topic).')
    for connection in matches:
        if connection.msgtype not in expected:
            known = connection.msgtype in typestore.types
            raise BagError(
                f'bag {path}: topic {topic} carries {connection.msgtype}'
                f'{"" if known else " (an unknown message type)"}, expected '
                f'{" or ".join(expected)}')
    return matches


def replay(bag: Path, params: NodeParameters, labels_csv: Optional[Path] = None,
           face_models: Optional[Sequence[str]] = None, voice_model: Optional[str] = None,
           camera_topic: str = CAMERA_TOPIC, audio_topic: str = AUDIO_TOPIC,
           audio_info_topic: str = AUDIO_INFO_TOPIC, truth_topic: str = TRUTH_TOPIC,
           progress=None) -> ReplayLog:
    """Run the face and voice cores over the whole bag; raises :class:`BagError`."""
    from mika_perception.image_conversion import ImageConverter, ImageFormatError
    from mika_voice.audio_decoding import AudioFormatError, StreamFormat
    from mika_voice.pipeline import UtteranceRejected

    bag = Path(bag)
    typestore = make_typestore()
    reader = open_bag(bag)
    try:
        topics = {c.topic for c in reader.connections}
        if camera_topic not in topics and camera_topic + COMPRESSED_SUFFIX in topics:
            camera_topic += COMPRESSED_SUFFIX  # a camera recorded compressed only
        camera = _connection(reader, camera_topic, (IMAGE_TYPE, COMPRESSED_TYPE), bag, typestore)
        audio = _connection(reader, audio_topic, (AUDIO_TYPE,), bag, typestore)
        info = [c for c in reader.connections if c.topic == audio_info_topic]
        if info:
            _connection(reader, audio_info_topic, (AUDIO_INFO_TYPE,), bag, typestore)
        truth_conns = [c for c in reader.connections if c.topic == truth_topic]
        if truth_conns and labels_csv is None:
            _connection(reader, truth_topic, (TRUTH_TYPE,), bag, typestore)
        if not truth_conns and labels_csv is None:
            raise BagError(f'bag {bag} has no ground-truth topic {truth_topic}: pass a '
                           '--labels CSV (start,end,label)')
        wanted = camera + audio + info + (truth_conns if labels_csv is None else [])
        start, end = reader.start_time * 1e-9, reader.end_time * 1e-9
        storage = reader.metadata.get('storage_identifier', '') if isinstance(
            getattr(reader, 'metadata', None), dict) else ''

        face_pipeline, face_classifier, face_notes = build_face_pipeline(params.face, face_models)
        voice_pipeline, voice_classifier, voice_notes = build_voice_pipeline(params.voice,
                                                                             voice_model)
        v = params.voice
        voice_pipeline.set_format(StreamFormat.from_fields(
            v['sample_rate'], v['channels'], v['sample_format'], v['coding_format']))
        converter = ImageConverter()
        results: List[ModalityResult] = []
        stages: Dict[str, List[float]] = defaultdict(list)
        counters: Dict[str, int] = defaultdict(int)
        read: Dict[str, int] = defaultdict(int)
        truth_events: List[Tuple[float, str]] = []
        expected = {c.id: c.msgcount for c in wanted}
        read_by_id: Dict[int, int] = defaultdict(int)
        started, cpu_started = time.perf_counter(), time.process_time()
        last_frame = None
        camera_ids = {c.id for c in camera}
        try:
            for connection, timestamp, raw in _timed(_messages(reader, bag, wanted),
                                                     stages['bag.read']):
                read_by_id[connection.id] += 1
                read[connection.topic] += 1
                now = timestamp * 1e-9
                t0 = time.perf_counter()
                msg = typestore.deserialize_cdr(raw, connection.msgtype)
                stages['bag.deserialize'].append(time.perf_counter() - t0)
                if connection.id in camera_ids:
                    t0 = time.perf_counter()
                    try:
                        image = (converter.image(msg) if connection.msgtype == IMAGE_TYPE
                                 else converter.compressed(msg))
                    except ImageFormatError as error:
                        counters[f'face rejected: {error.reason}'] += 1
                        continue
                    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                    if last_frame is not None and stamp < last_frame - 1.0:
                        face_pipeline.reset()  # as the node: time jumped back
                    last_frame = stamp
                    frame = face_pipeline.process_image(image, stamp,
                                                        time.perf_counter() - t0)
                    for stage, seconds in frame.timings.items():
                        stages[f'face.{stage}'].append(seconds)
                    stages['face.total'].append(frame.total_s)
                    counters['frames'] += 1
                    counters['frames with a face'] += bool(frame.faces)
                    for face in frame.faces:
                        x, y, w, h = face.box
                        results.append(ModalityResult('face', now, stamp, face.probabilities,
                                                      face.confidence, face.track_id,
                                                      float(w * h)))
                elif connection.msgtype == AUDIO_TYPE:
                    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                    try:
                        outcome = voice_pipeline.accept_chunk(msg.audio.data, stamp)
                    except AudioFormatError as error:
                        counters[f'voice rejected: {error.reason}'] += 1
                        continue
                    stages['voice.decoding'].append(outcome.times.decoding)
                    stages['voice.vad'].append(outcome.times.vad)
                    counters['audio chunks'] += 1
                    for utterance in outcome.utterances:
                        counters['running windows' if utterance.running else 'utterances'] += 1
                        try:
                            estimate = voice_pipeline.classify(utterance)
                        except UtteranceRejected as error:
                            counters[f'voice rejected: {error.reason}'] += 1
                            continue
                        stages['voice.features'].append(estimate.times.features)
                        stages['voice.inference'].append(estimate.times.inference)
                        results.append(ModalityResult(
                            'voice', now, utterance.start_stamp, estimate.probabilities,
                            estimate.confidence, end_stamp=utterance.end_stamp))
                elif connection.msgtype == AUDIO_INFO_TYPE:
                    try:
                        change = voice_pipeline.set_format(StreamFormat.from_fields(
                            int(msg.sample_rate), int(msg.channels), msg.sample_format,
                            msg.coding_format))
                    except AudioFormatError as error:
                        raise BagError(f'bag {bag}: AudioInfo describes a format the voice '
                                       f'node refuses: {error}') from None
                    if change:
                        counters['audio format changes'] += 1
                else:
                    truth_events.append((now, msg.data))
                if progress is not None:
                    progress(now - start, end - start)
        except BagError:
            raise
        except Exception as error:  # a damaged chunk or record mid-file
            done = sum(read_by_id.values())
            raise BagError(f'bag {bag} could not be read to the end ({type(error).__name__}: '
                           f'{error}) after {done} messages; the file is damaged or '
                           'truncated: no report') from None
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        short = [f'{c.topic}: {read_by_id[c.id]} of {expected[c.id]}' for c in wanted
                 if read_by_id[c.id] < expected[c.id]]
        if short:
            raise BagError(f'bag {bag} is truncated: fewer messages than its metadata '
                           f'lists ({"; ".join(short)}): no report')
    finally:
        reader.close()

    if labels_csv is not None:
        truth = read_truth_csv(labels_csv, start)
        truth_source = f'file {labels_csv}'
    else:
        truth = intervals_from_label_messages(truth_events, end)
        truth_source = f'topic {truth_topic}'
    return ReplayLog(
        bag=str(bag), storage=storage or _storage_of(bag), start=start, end=end,
        results=results, stage_seconds=dict(stages), counters=dict(counters),
        messages=dict(read), truth=truth, truth_source=truth_source, wall_s=wall, cpu_s=cpu,
        model_ids={'face': face_classifier.model_id,
                   'voice': voice_classifier.metadata.model_id or str(voice_classifier.path)},
        notes=face_notes + voice_notes, manifest=_manifest(bag))


def save_replay(log: ReplayLog, path: Path) -> None:
    """Keep ``log`` (results and truth) so that fusion can be re-run, tuned and compared
    on it without replaying the bag: the replay is the expensive part."""
    Path(path).write_bytes(pickle.dumps(log, protocol=pickle.HIGHEST_PROTOCOL))


def load_replay(path: Path) -> ReplayLog:
    """A log written by :func:`save_replay` (pickle: only load files you wrote)."""
    log = pickle.loads(Path(path).read_bytes())
    if not isinstance(log, ReplayLog):
        raise BagError(f'{path} holds no saved replay')
    return log


def _messages(reader, bag: Path, wanted):
    """``reader.messages(wanted)``, read without copying the message data where
    :mod:`mika_evaluation.mcap_direct` can read the file (an eighth of a 30 FPS frame's
    budget at 5x real time)."""
    from mika_evaluation import mcap_direct
    by_key = {(c.topic, c.msgtype): c for c in wanted}
    mcap = mcap_direct.plan(bag) if len(by_key) == len(wanted) else None
    if mcap is None:
        return reader.messages(connections=wanted)
    return mcap_direct.messages(mcap, by_key)


def _timed(messages, seconds: List[float]):
    """The items of ``messages``, appending the time each took to read to ``seconds``."""
    iterator = iter(messages)
    while True:
        started = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        seconds.append(time.perf_counter() - started)
        yield item


def _storage_of(bag: Path) -> str:
    names = {p.suffix for p in Path(bag).iterdir()}
    return 'mcap' if '.mcap' in names else 'sqlite3' if '.db3' in names else 'unknown'


def _manifest(bag: Path) -> Dict:
    from mika_evaluation.bag_builder import MANIFEST_KEY
    text = read_custom_data(bag).get(MANIFEST_KEY)
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


# ----------------------------------------------------------------------------- fusion
@dataclass
class Timeline:
    """States sampled at the fusion node's publish ticks (labels; None: no state)."""

    times: np.ndarray
    labels: Dict[str, List[Optional[str]]]   # 'face', 'voice', 'fused'
    fusion_update_s: List[float]
    rejected: Dict[str, int]


def modality_labels(results: Sequence[ModalityResult], ticks: np.ndarray, max_age_s: float
                    ) -> Dict[str, List[Optional[str]]]:
    """Per-modality state at each tick, the same in offline and live evaluation: the newest
    result of that modality that exists by the tick (for faces, the largest face of the
    newest frame), while its stamp is younger than ``max_age_s``."""
    ordered = sorted(results, key=lambda r: r.arrival)  # stable: frame order kept
    newest: Dict[str, Optional[ModalityResult]] = {'face': None, 'voice': None}
    labels: Dict[str, List[Optional[str]]] = {'face': [], 'voice': []}
    index = 0
    for tick in ticks:
        while index < len(ordered) and ordered[index].arrival <= tick:
            result = ordered[index]
            index += 1
            current = newest[result.modality]
            if (result.modality == 'voice' or current is None or result.stamp > current.stamp
                    or (result.stamp == current.stamp and result.area > current.area)):
                newest[result.modality] = result
        for modality, result in newest.items():
            fresh = result is not None and tick - result.stamp <= max_age_s
            labels[modality].append(result.label if fresh else None)
    return labels


def fuse(log: ReplayLog, fusion_values: Dict, rate_hz: Optional[float] = None) -> Timeline:
    """The fusion core over the replayed results, with the node's call pattern: update on
    every result and on every publish tick. Per-modality states at each tick: see
    :func:`modality_labels`."""
    from mika_fusion.fusion import EmotionFuser, InvalidInput, make_observation
    config = fusion_config(fusion_values)
    rate = rate_hz or fusion_values['publish_rate_hz']
    ticks = np.arange(log.start, log.end + 1e-9, 1.0 / rate)
    fuser = EmotionFuser(config)
    results = sorted(log.results, key=lambda r: r.arrival)  # stable: frame order kept
    fused: List[Optional[str]] = []
    rejected: Dict[str, int] = defaultdict(int)
    update_s: List[float] = []
    index = 0
    for tick in ticks:
        while index < len(results) and results[index].arrival <= tick:
            result = results[index]
            index += 1
            voice = result.modality == 'voice'
            try:
                observation = make_observation(
                    result.modality, result.stamp, list(EMOTION_LABELS), result.probabilities,
                    result.confidence, result.arrival, config, track_id=result.track_id,
                    area=result.area, utterance_start=result.stamp if voice else 0.0,
                    utterance_end=result.end_stamp if voice else 0.0)  # as the node passes
            except InvalidInput as error:
                rejected[error.reason] += 1
                continue
            fuser.add(observation)
            started = time.perf_counter()
            fuser.update(result.arrival)
            update_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        state = fuser.update(float(tick))
        update_s.append(time.perf_counter() - started)
        fused.append(None if state.emotion == UNKNOWN else state.emotion)
    labels = {**modality_labels(log.results, ticks, config.max_age_s), 'fused': fused}
    return Timeline(ticks, labels, update_s, dict(rejected))


# ----------------------------------------------------------------------------- CLI
def evaluate(bag: Path, params_file: Optional[Path], output_dir: Path,
             labels_csv: Optional[Path] = None, face_models=None, voice_model=None,
             camera_topic: str = CAMERA_TOPIC, audio_topic: str = AUDIO_TOPIC,
             audio_info_topic: str = AUDIO_INFO_TOPIC, truth_topic: str = TRUTH_TOPIC,
             plots: bool = True) -> Dict:
    """Replay, fuse, score and write report.json / report.md / PNGs; returns the report."""
    from mika_evaluation.report import build_report, write_report
    params = NodeParameters.load(params_file)
    log = replay(bag, params, labels_csv, face_models, voice_model, camera_topic,
                 audio_topic, audio_info_topic, truth_topic)
    timeline = fuse(log, params.fusion)
    report = build_report(log, timeline, params)
    write_report(report, log, timeline, Path(output_dir), plots=plots)
    return report


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('bag', type=Path, help='rosbag2 directory (MCAP or sqlite3)')
    parser.add_argument('--params', type=Path, default=None,
                        help='the launch file\'s params YAML (config/perception.yaml); '
                             'default: the nodes\' defaults')
    parser.add_argument('--labels', type=Path, default=None,
                        help='ground truth as start,end,label CSV (seconds from the bag '
                             'start); default: the bag\'s ground-truth topic')
    parser.add_argument('--output-dir', type=Path, required=True)
    parser.add_argument('--face-model', action='append', default=None,
                        help='face model file(s) instead of face_node.model_paths')
    parser.add_argument('--voice-model', default=None,
                        help='voice model file instead of voice_node.model_path')
    parser.add_argument('--camera-topic', default=CAMERA_TOPIC)
    parser.add_argument('--audio-topic', default=AUDIO_TOPIC)
    parser.add_argument('--audio-info-topic', default=AUDIO_INFO_TOPIC)
    parser.add_argument('--truth-topic', default=TRUTH_TOPIC)
    parser.add_argument('--no-plots', action='store_true')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    quiet_tensorflow_start_up()
    args = parse_args(argv)
    try:
        report = evaluate(args.bag, args.params, args.output_dir, args.labels, args.face_model,
                          args.voice_model, args.camera_topic, args.audio_topic,
                          args.audio_info_topic, args.truth_topic, plots=not args.no_plots)
    except (BagError, ConfigError) as error:
        print(f'evaluate_bag: {error}', file=sys.stderr)
        return 2
    except RuntimeError as error:  # a model file missing or unusable: the nodes' message
        print(f'evaluate_bag: {error}', file=sys.stderr)
        return 2
    summary = report['summary']
    print(' '.join(f'{k}: acc {v["accuracy"]:.3f} cov {v["coverage"]:.2f} '
                   f'flips/min {v["flips_per_minute"]:.2f};' for k, v in summary.items()))
    print(f'real-time factor {report["replay"]["real_time_factor"]:.1f}x; report in '
          f'{args.output_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
