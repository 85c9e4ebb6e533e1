"""Write one labelled session: ``<root>/<session_id>/{bag/, labels.csv, session.yaml}``.

ROS-free (``rosbags``). The bag follows the evaluation-bag conventions of
:mod:`mika_evaluation.bag_format`: camera frames on ``/camera/image_raw`` as
``sensor_msgs/Image`` bgr8 (or, compressed, on ``/camera/image_raw/compressed`` as
``sensor_msgs/CompressedImage`` JPEG/PNG), microphone audio on ``/audio_stamped`` as
``audio_common_msgs/AudioDataStamped`` S16LE with a latched ``/audio_info``, and the truth on
``/emotion/ground_truth`` (``std_msgs/String``, '' ends labelled time). ``labels.csv`` holds
the same intervals in seconds from the bag start (its earliest message), and
``session.yaml`` maps each role to its topic in the bag.

A session is written inside ``<root>/.incomplete/`` and renamed into place only when bag,
labels and session.yaml are all complete: a crash leaves a folder that no tool takes for a
session (``sessions.find_sessions`` looks one level deep), and an existing session is never
overwritten.
"""
from __future__ import annotations

import heapq
import json
import math
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation.bag_format import (
    AUDIO_INFO_TOPIC, AUDIO_INFO_TYPE, AUDIO_TOPIC, AUDIO_TYPE, CAMERA_TOPIC, IMAGE_TYPE,
    TRUTH_TOPIC, TRUTH_TYPE, Interval, check_intervals, make_typestore, offered_qos,
    write_truth_csv)
from mika_personal.sessions import (
    BAG_DIR, LABELS_FILE, SessionError, SessionInfo)

COMPRESSED_TOPIC = CAMERA_TOPIC + '/compressed'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
INCOMPLETE_DIR = '.incomplete'
#: Roles in ``session.yaml`` -> topic in the bag.
ROLE_CAMERA, ROLE_AUDIO, ROLE_AUDIO_INFO, ROLE_TRUTH = 'camera', 'audio', 'audio_info', 'truth'
IMAGE_STORAGES = ('raw', 'jpeg')
AUDIO_CHUNK_S = 0.1
#: A realistic epoch (2023-11-14) for imported media: stamps must be positive.
DEFAULT_START_S = 1_700_000_000.0
SESSION_KEY = 'mika_personal.session'
_SESSION_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')


def check_session_id(session_id: str) -> str:
    """The id unchanged, or SessionError: it becomes a folder name and a split group."""
    if not _SESSION_ID.match(session_id or ''):
        raise SessionError(f'session id {session_id!r}: use 1-128 letters, digits, '
                           "'.', '_' or '-', starting with a letter or digit")
    return session_id


def _ns(time_s: float) -> int:
    return int(round(time_s * 1e9))


def to_s16le(samples: np.ndarray) -> bytes:
    """int16 samples as they are, float samples in [-1, 1] scaled, as S16LE bytes."""
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        return samples.astype('<i2', copy=False).tobytes()
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f'audio samples must be int16 or float in [-1, 1], got {samples.dtype}')
    if not np.all(np.isfinite(samples)):
        raise ValueError('audio samples hold NaN or infinite values')
    scaled = np.clip(np.round(samples * 32768.0), -32768, 32767)
    return scaled.astype('<i2').tobytes()


class SessionWriter:
    """One session written message by message (the live recorder) or from media (import).

    Times are bag (log) times in seconds. Camera and audio topics are created on first use.
    Labels: :meth:`start_label` / :meth:`end_label` as prompts begin and end, or
    :meth:`add_label` for a whole interval. :meth:`finish` makes the session visible;
    :meth:`abort` removes what was written. Thread-safe: camera and audio callbacks may
    write concurrently.
    """

    def __init__(self, root: Path, session_id: str, person: str, source: str,
                 image_storage: str = 'raw', jpeg_quality: int = 95, notes: str = ''):
        if not person or not person.strip():
            raise SessionError('person is empty: name the person recorded (sessions of one '
                               'person are fine-tuned together)')
        if image_storage not in IMAGE_STORAGES:
            raise ValueError(f'image_storage must be one of {IMAGE_STORAGES}, '
                             f'got {image_storage!r}')
        self.root = Path(root)
        self.info = SessionInfo(check_session_id(session_id), person.strip(), source,
                                notes=notes)
        self.final_dir = self.root / self.info.session_id
        self._refuse_existing()
        self.image_storage = image_storage
        self.jpeg_quality = int(jpeg_quality)
        incomplete = self.root / INCOMPLETE_DIR
        try:
            incomplete.mkdir(parents=True, exist_ok=True)
            self.work_dir = Path(tempfile.mkdtemp(prefix=f'{session_id}-', dir=incomplete))
        except OSError as error:
            raise SessionError(f'cannot write sessions under {self.root}: {error}') from None
        self._typestore = make_typestore()
        self._types = self._typestore.types
        # serialisers generated here (0.1 s), not for a live session's first messages, while
        # its first prompt is due
        for msgtype in (IMAGE_TYPE, COMPRESSED_TYPE, AUDIO_INFO_TYPE, AUDIO_TYPE, TRUTH_TYPE):
            self._typestore.get_msgdef(msgtype)
        from rosbags.rosbag2 import StoragePlugin, Writer
        self._writer = Writer(self.work_dir / BAG_DIR, version=9,
                              storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections = {}
        self._lock = threading.Lock()
        self._closed = False
        self._first_s: Optional[float] = None
        self._last_s: Optional[float] = None
        self._intervals: List[Interval] = []
        self._open_label: Optional[Tuple[float, str]] = None
        self._audio_format: Optional[Tuple[int, int]] = None
        self.frames = 0
        self.audio_chunks = 0
        self.audio_s = 0.0

    # ------------------------------------------------------------------ writing
    def _refuse_existing(self) -> None:
        if self.final_dir.exists():
            raise SessionError(f'session {self.final_dir} exists: choose another session id '
                               '(sessions are never overwritten)')

    def _connection(self, role: str, topic: str, msgtype: str, latched: bool, reliable: bool):
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(
                topic, msgtype, typestore=self._typestore,
                offered_qos_profiles=[offered_qos(latched, reliable)])
            self._connections[topic] = connection
            self.info.topics[role] = topic
        return connection

    def _put(self, connection, time_s: float, message) -> None:
        """Serialise and write; caller holds the lock."""
        if self._closed:
            raise SessionError(f'session {self.info.session_id} is already finished')
        self._writer.write(connection, _ns(time_s),
                           self._typestore.serialize_cdr(message, connection.msgtype))
        self._first_s = time_s if self._first_s is None else min(self._first_s, time_s)
        self._last_s = time_s if self._last_s is None else max(self._last_s, time_s)

    def _header(self, stamp_s: float, frame_id: str):
        ns = _ns(stamp_s)
        return self._types['std_msgs/msg/Header'](
            stamp=self._types['builtin_interfaces/msg/Time'](sec=ns // 10**9,
                                                             nanosec=ns % 10**9),
            frame_id=frame_id)

    def add_frame(self, time_s: float, image: np.ndarray, stamp_s: Optional[float] = None,
                  frame_id: str = 'camera') -> None:
        """A BGR uint8 frame at bag time ``time_s`` (header stamp ``stamp_s``, default the
        same), stored raw (bgr8 Image) or as JPEG, as ``image_storage`` says."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'frames must be BGR uint8 (height, width, 3), got {image.dtype} '
                             f'{image.shape}')
        header = self._header(time_s if stamp_s is None else stamp_s, frame_id)
        if self.image_storage == 'jpeg':
            ok, encoded = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY,
                                                       self.jpeg_quality])
            if not ok:
                raise ValueError(f'JPEG encoding of a {image.shape} frame failed')
            self._write_compressed(time_s, header, 'jpeg', encoded.reshape(-1))
            return
        height, width = image.shape[:2]
        message = self._types[IMAGE_TYPE](
            header=header, height=height, width=width, encoding='bgr8', is_bigendian=0,
            step=width * 3, data=np.ascontiguousarray(image).reshape(-1))
        with self._lock:
            self._put(self._connection(ROLE_CAMERA, CAMERA_TOPIC, IMAGE_TYPE, False, False),
                      time_s, message)
            self.frames += 1

    def add_compressed(self, time_s: float, format_field: str, data,
                       stamp_s: Optional[float] = None, frame_id: str = 'camera') -> None:
        """A JPEG or PNG frame as received (``CompressedImage.format`` and data)."""
        self._write_compressed(time_s, self._header(time_s if stamp_s is None else stamp_s,
                                                    frame_id),
                               format_field, np.frombuffer(bytes(data), np.uint8))

    def _write_compressed(self, time_s, header, format_field, data) -> None:
        message = self._types[COMPRESSED_TYPE](header=header, format=format_field, data=data)
        with self._lock:
            self._put(self._connection(ROLE_CAMERA, COMPRESSED_TOPIC, COMPRESSED_TYPE, False,
                                       False), time_s, message)
            self.frames += 1

    def set_audio_format(self, time_s: float, sample_rate: int, channels: int = 1) -> None:
        """Declare (latched ``AudioInfo``) the S16LE format of the audio that follows."""
        fields = (int(sample_rate), int(channels))
        if not 4000 <= fields[0] <= 384000 or not 1 <= fields[1] <= 64:
            raise ValueError(f'audio format {fields[0]} Hz, {fields[1]} channels is out of '
                             'range (4000-384000 Hz, 1-64 channels)')
        with self._lock:
            if self._audio_format == fields:
                return
            message = self._types[AUDIO_INFO_TYPE](
                channels=fields[1], sample_rate=fields[0], sample_format='S16LE',
                bitrate=fields[0] * fields[1] * 16, coding_format='wave')
            self._put(self._connection(ROLE_AUDIO_INFO, AUDIO_INFO_TOPIC, AUDIO_INFO_TYPE,
                                       True, True), time_s, message)
            self._audio_format = fields

    def add_audio(self, time_s: float, samples, stamp_s: Optional[float] = None,
                  frame_id: str = 'microphone') -> None:
        """One chunk: S16LE ``bytes``, or int16 / float (frames[, channels]) samples.

        ``stamp_s`` is the time of its first sample (default ``time_s``).
        """
        if self._audio_format is None:
            raise SessionError('audio before its format: call set_audio_format first')
        rate, channels = self._audio_format
        pcm = bytes(samples) if isinstance(samples, (bytes, bytearray, memoryview)) \
            else to_s16le(samples)
        if len(pcm) % (2 * channels):
            raise ValueError(f'{len(pcm)} bytes is not a whole number of S16LE '
                             f'{channels}-channel frames')
        message = self._types[AUDIO_TYPE](
            header=self._header(time_s if stamp_s is None else stamp_s, frame_id),
            audio=self._types['audio_common_msgs/msg/AudioData'](
                data=np.frombuffer(pcm, np.uint8)))
        with self._lock:
            self._put(self._connection(ROLE_AUDIO, AUDIO_TOPIC, AUDIO_TYPE, False, True),
                      time_s, message)
            self.audio_chunks += 1
            self.audio_s += len(pcm) / (2 * channels) / rate

    def start_label(self, time_s: float, label: str) -> None:
        """From ``time_s`` on the person shows ``label`` (ends an open label first)."""
        if label not in EMOTION_LABELS:
            raise ValueError(f'label {label!r} is not one of {", ".join(EMOTION_LABELS)}')
        with self._lock:
            if self._intervals and time_s < self._intervals[-1].end:
                raise ValueError(f'label {label!r} at {time_s:.3f} s starts before the '
                                 f'previous one ended ({self._intervals[-1].end:.3f} s)')
            self._end_open_label(time_s)
            self._put(self._truth(), time_s, self._types[TRUTH_TYPE](data=label))
            self._open_label = (time_s, label)

    def end_label(self, time_s: float) -> None:
        """Labelled time ends (a pause between prompts, or the end)."""
        with self._lock:
            if self._end_open_label(time_s):
                self._put(self._truth(), time_s, self._types[TRUTH_TYPE](data=''))

    def add_label(self, start_s: float, end_s: float, label: str) -> None:
        self.start_label(start_s, label)
        self.end_label(end_s)

    def _truth(self):
        return self._connection(ROLE_TRUTH, TRUTH_TOPIC, TRUTH_TYPE, True, True)

    def _end_open_label(self, time_s: float) -> bool:
        if self._open_label is None:
            return False
        start, label = self._open_label
        self._open_label = None
        if time_s > start:
            self._intervals.append(Interval(start, time_s, label))
        return True

    @property
    def intervals(self) -> List[Interval]:
        with self._lock:
            return list(self._intervals)

    # ------------------------------------------------------------------ ending
    def finish(self, partial: bool = False, notes: str = '') -> Path:
        """Close the bag, write labels.csv and session.yaml, move the session into place.

        ``partial``: the recording was stopped early (it is marked so in session.yaml).
        SessionError when nothing labelled was recorded (the work folder is then removed)
        or the session id was taken meanwhile (the work folder is kept and named).
        """
        with self._lock:
            if self._closed:
                raise SessionError(f'session {self.info.session_id} is already finished')
            if self._open_label is not None and self._last_s is not None:
                end = self._last_s
                if end > self._open_label[0]:
                    self._put(self._truth(), end, self._types[TRUTH_TYPE](data=''))
                self._end_open_label(end)
            self.info.partial = partial
            self.info.notes = '; '.join(n for n in (self.info.notes, notes) if n)
            self._writer.set_custom_data(SESSION_KEY, json.dumps(self.info.__dict__))
            self._writer.close()
            self._closed = True
            intervals = list(self._intervals)
        if not intervals or self._first_s is None:
            self._remove_work_dir()
            raise SessionError(f'session {self.info.session_id}: nothing labelled was '
                               'recorded; nothing stored')
        check_intervals(intervals, f'session {self.info.session_id}')
        write_truth_csv(self.work_dir / LABELS_FILE, intervals, self._first_s, comments=[
            f'session {self.info.session_id} of {self.info.person} ({self.info.source}): '
            f'seconds from the bag start ({self._first_s:.3f} s bag time)'])
        self.info.write(self.work_dir)
        try:
            self._refuse_existing()
            os.rename(self.work_dir, self.final_dir)
        except (SessionError, OSError) as error:
            raise SessionError(f'{error}; the recording is kept in {self.work_dir}') from None
        self._remove_incomplete_if_empty()
        return self.final_dir

    def abort(self) -> None:
        """Stop and remove everything written (nothing is kept)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                from rosbags.rosbag2 import WriterError
                try:
                    self._writer.close()
                except (WriterError, OSError):
                    pass  # the folder is removed either way
        self._remove_work_dir()

    def _remove_work_dir(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self._remove_incomplete_if_empty()

    def _remove_incomplete_if_empty(self) -> None:
        try:
            (self.root / INCOMPLETE_DIR).rmdir()
        except OSError:
            pass  # other recordings in progress, or left by a crash: kept for the user

    def __enter__(self) -> 'SessionWriter':
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if not self._closed:
            self.abort()


def _frame_events(frames: Iterable[np.ndarray], start_s: float, fps: float
                  ) -> Iterator[Tuple[float, int, str, object]]:
    for index, frame in enumerate(frames):
        yield start_s + index / fps, 2, 'frame', frame


def _audio_events(audio: np.ndarray, sample_rate: int, start_s: float
                  ) -> Iterator[Tuple[float, int, str, object]]:
    chunk = max(1, int(round(AUDIO_CHUNK_S * sample_rate)))
    for first in range(0, len(audio), chunk):
        yield start_s + first / sample_rate, 1, 'audio', audio[first:first + chunk]


def write_session(root: Path, session_id: str, person: str,
                  intervals: Sequence[Interval], frames: Optional[Iterable[np.ndarray]] = None,
                  fps: Optional[float] = None, audio: Optional[np.ndarray] = None,
                  sample_rate: Optional[int] = None, source: str = 'media',
                  start_s: float = DEFAULT_START_S, image_storage: str = 'raw',
                  notes: str = '') -> Path:
    """A whole session from media: BGR frames at ``fps`` (any iterable, read lazily) and/or
    audio (int16 or float samples, (samples[, channels])) at ``sample_rate``, both starting
    at ``start_s``; ``intervals`` in seconds from that start. Returns the session folder.
    """
    if frames is None and audio is None:
        raise ValueError('a session needs frames, audio or both')
    if frames is not None and not (fps and fps > 0 and math.isfinite(fps)):
        raise ValueError(f'frames need a positive frame rate, got {fps!r}')
    if audio is not None and not sample_rate:
        raise ValueError('audio needs its sample_rate')
    shifted = [Interval(start_s + i.start, start_s + i.end, i.label) for i in intervals]
    check_intervals(shifted, f'session {session_id}')
    streams = []
    if frames is not None:
        streams.append(_frame_events(frames, start_s, fps))
    if audio is not None:
        audio = np.asarray(audio)
        streams.append(_audio_events(audio, int(sample_rate), start_s))
    truth = []
    for interval in shifted:
        truth += [(interval.start, 0, 'label', interval.label), (interval.end, 0, 'end', None)]
    streams.append(iter(sorted(truth, key=lambda e: (e[0], e[2] == 'label'))))
    writer = SessionWriter(root, session_id, person, source, image_storage=image_storage,
                           notes=notes)
    with writer:
        if audio is not None:
            writer.set_audio_format(start_s, int(sample_rate),
                                    1 if audio.ndim == 1 else audio.shape[1])
        for time_s, _, kind, value in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
            if kind == 'frame':
                writer.add_frame(time_s, value)
            elif kind == 'audio':
                writer.add_audio(time_s, value)
            elif kind == 'label':
                writer.start_label(time_s, value)
            else:
                writer.end_label(time_s)
        return writer.finish()


def write_clip_session(root: Path, session_id: str, person: str,
                       clips: Sequence[Tuple[np.ndarray, str]], sample_rate: int = 16000,
                       gap_s: float = 1.0, lead_s: float = 0.5, notes: str = '') -> Path:
    """An audio session of labelled ``clips`` (mono float audio, label) one after another,
    ``gap_s`` of silence between them after ``lead_s`` of it; each clip's span is labelled.
    Corpora of acted clips (RAVDESS) become sessions a user's recordings would be."""
    pieces, intervals, t = [np.zeros(int(lead_s * sample_rate), np.float32)], [], lead_s
    for audio, label in clips:
        duration = len(audio) / sample_rate
        intervals.append(Interval(t, t + duration, label))
        pieces += [np.asarray(audio, np.float32), np.zeros(int(gap_s * sample_rate), np.float32)]
        t += duration + gap_s
    return write_session(Path(root), session_id, person, intervals,
                         audio=np.concatenate(pieces), sample_rate=sample_rate, notes=notes)
