"""Audio chunks in, per-utterance emotion estimates out, with the time each stage takes.

ROS-free: the node, the tests and the benchmark drive the same :class:`VoicePipeline`.
The cheap part (:meth:`VoicePipeline.accept_chunk`: decoding, resampling, VAD) runs where
audio arrives, so stamps and continuity stay exact; the expensive part
(:meth:`VoicePipeline.classify`: features, normalisation, inference) runs on a worker
thread fed through a :class:`BoundedWorker`, which never drops audio silently.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, List, Optional, Tuple

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_voice.audio_decoding import AudioDecoder, DecodedChunk, StreamFormat
from mika_voice.segmentation import UtteranceSegmenter, Utterance


@dataclass
class StageTimes:
    """Seconds spent per stage (for one chunk, one utterance, or summed)."""

    decoding: float = 0.0
    vad: float = 0.0
    features: float = 0.0
    inference: float = 0.0


@dataclass
class ChunkOutcome:
    """What one audio chunk produced: utterances ready to classify, and its counters."""

    utterances: List[Utterance]
    chunk: DecodedChunk
    times: StageTimes
    stamp: float             # sensor time of the chunk's first sample
    gap_s: float = 0.0       # how much later than the previous chunk's end it began


@dataclass
class VoiceEstimate:
    utterance: Utterance
    probabilities: np.ndarray          # float32, EMOTION_LABELS order
    times: StageTimes
    label_names: List[str] = field(default_factory=lambda: list(EMOTION_LABELS))

    @property
    def label(self) -> str:
        return self.label_names[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))


class UtteranceRejected(ValueError):
    """An utterance that must not be classified; ``reason`` is a counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class VoicePipeline:
    """decoder -> segmenter -> features -> stream normaliser -> classifier.

    ``features(samples, sample_rate)`` is :func:`mika_voice.features.extract_features`;
    ``classifier`` a :class:`mika_voice.voice_model.VoiceEmotionClassifier` (anything with
    ``new_stream_normaliser()`` and ``predict_proba(rows)``).
    """

    def __init__(self, decoder: Optional[AudioDecoder], segmenter: UtteranceSegmenter,
                 features: Callable[[np.ndarray, int], np.ndarray], classifier,
                 max_clipped_fraction: float = 0.01, max_backward_jump_s: float = 1.0):
        self.decoder = decoder
        self.segmenter = segmenter
        self.features = features
        self.classifier = classifier
        self.normaliser = classifier.new_stream_normaliser()
        self.max_clipped_fraction = max_clipped_fraction
        self.max_backward_jump_s = max_backward_jump_s
        self.time_jumps = 0
        self._lock = threading.Lock()  # the normaliser is shared by running and final results

    @property
    def sample_rate(self) -> int:
        return self.segmenter.config.sample_rate

    def set_format(self, fmt: StreamFormat) -> Optional[str]:
        """Use ``fmt`` from now on. Returns a description of the change when it replaced a
        different format (the segmenter then restarts: samples of two formats must not
        meet in one utterance), else None."""
        if self.decoder is not None and self.decoder.format == fmt:
            return None
        previous = self.decoder.format if self.decoder is not None else None
        if previous is not None:
            self.segmenter.reset()
        self.decoder = AudioDecoder(fmt, self.sample_rate, self.segmenter.buffer.end_index)
        if previous is None:
            return None
        return f'{previous.describe()} -> {fmt.describe()}'

    def accept_chunk(self, data, stamp: Optional[float]) -> ChunkOutcome:
        """Decode one chunk of raw bytes whose first sample was taken at ``stamp``."""
        if self.decoder is None:
            raise RuntimeError('no stream format yet: call set_format first')
        started = time.perf_counter()
        chunk = self.decoder.decode(data)
        return self._segment(chunk, stamp, started)

    def accept_frames(self, frames: np.ndarray, clipped: int,
                      stamp: Optional[float]) -> ChunkOutcome:
        """Like :meth:`accept_chunk` for typed samples (frames, channels) in [-1, 1]."""
        if self.decoder is None:
            raise RuntimeError('no stream format yet: call set_format first')
        started = time.perf_counter()
        chunk = self.decoder.add_frames(frames, clipped)
        return self._segment(chunk, stamp, started)

    def _segment(self, chunk: DecodedChunk, stamp: Optional[float],
                 started: float) -> ChunkOutcome:
        decoded = time.perf_counter()
        expected = self.segmenter.clock.expected_stamp(chunk.first_index)
        gap = 0.0 if stamp is None or expected is None else stamp - expected
        utterances: List[Utterance] = []
        if stamp is None:
            stamp = chunk.first_index / self.sample_rate if expected is None else expected
        elif expected is not None and stamp < expected - self.max_backward_jump_s:
            # time went backwards (a bag started over, a clock was reset): start afresh
            self.time_jumps += 1
            self.segmenter.reset()
        elif gap * 1000.0 > self.segmenter.config.hangover_ms:
            # audio is missing (a paused or restarted driver): as that much silence would,
            # the gap ends the utterance in progress; the stream goes on after it
            utterances = self.segmenter.break_stream(chunk.first_index)
        self.segmenter.add_stamp(chunk.first_index, stamp)
        utterances += self.segmenter.push(chunk.samples)
        finished = time.perf_counter()
        return ChunkOutcome(utterances, chunk,
                            StageTimes(decoding=decoded - started, vad=finished - decoded),
                            stamp, gap)

    def classify(self, utterance: Utterance) -> VoiceEstimate:
        """Features and calibrated probabilities for one utterance or running window.

        Raises :class:`UtteranceRejected` for audio that would give a meaningless answer
        (heavily clipped, silent or too short after trimming).
        """
        clipped = float(np.mean(np.abs(utterance.samples) >= 0.999))
        if clipped > self.max_clipped_fraction:
            raise UtteranceRejected(
                'clipping', f'{clipped:.1%} of the utterance is at digital full scale '
                '(microphone gain too high); not classified')
        started = time.perf_counter()
        try:
            raw = self.features(utterance.samples, utterance.sample_rate)
        except ValueError as error:
            raise UtteranceRejected('unusable_audio', str(error)) from None
        extracted = time.perf_counter()
        with self._lock:
            if not utterance.running:
                self.normaliser.update(raw)
            row = self.normaliser.transform(raw)
        probabilities = np.asarray(self.classifier.predict_proba(row[None, :])[0],
                                   dtype=np.float32)
        done = time.perf_counter()
        return VoiceEstimate(utterance, probabilities,
                             StageTimes(features=extracted - started, inference=done - extracted))


class ArrivalStamper:
    """Sensor stamps for chunks that carry none (plain ``AudioData``).

    A chunk's first sample was taken about its own duration before it arrived. While
    arrivals agree with the continuation of the previous chunk within ``tolerance_s``, the
    continuation is used (network jitter must not jitter the stamps); a larger disagreement
    (a gap, a stall, a burst) starts again from the arrival time.
    """

    def __init__(self, tolerance_s: float = 0.25):
        self.tolerance_s = tolerance_s
        self._next: Optional[float] = None
        self.resyncs = 0

    def stamp(self, arrival: float, duration_s: float) -> float:
        estimate = arrival - duration_s
        if self._next is not None and abs(self._next - estimate) <= self.tolerance_s:
            estimate = self._next
        elif self._next is not None:
            self.resyncs += 1
        self._next = estimate + duration_s
        return estimate

    def reset(self) -> None:
        self._next = None


class RealTimeMonitor:
    """How fast audio arrives compared with real time, over the last ``window_s``.

    A microphone delivers one second of audio per second; a sustained factor far above 1
    is a burst (a replay, a backlog) or a wrong sample rate.
    """

    def __init__(self, window_s: float = 5.0, min_span_s: float = 1.0):
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._events: Deque[Tuple[float, float]] = collections.deque()
        self._audio_s = 0.0

    def add(self, now: float, audio_s: float) -> None:
        self._events.append((now, audio_s))
        self._audio_s += audio_s
        while self._events and now - self._events[0][0] > self.window_s:
            self._audio_s -= self._events.popleft()[1]

    def factor(self, now: float) -> float:
        """Seconds of audio per second of wall time over the window; a span shorter than
        ``min_span_s`` counts as that long, so a few chunks arriving together at start-up
        are not a burst but a minute of audio within a second is."""
        if not self._events:
            return 0.0
        return self._audio_s / max(now - self._events[0][0], self.min_span_s)


class BoundedWorker:
    """One background thread working through a bounded queue of items, oldest first.

    A full queue drops an item and says so (``submit`` returns the dropped item): first a
    queued running window (a newer one supersedes it), else the oldest item. ``process``
    errors go to ``on_error``; the thread keeps going.
    """

    _STOP = object()

    def __init__(self, process: Callable[[Any], None],
                 on_error: Callable[[Any, BaseException], None], max_pending: int = 4,
                 is_expendable: Callable[[Any], bool] = lambda item: False,
                 name: str = 'mika-voice-worker'):
        if max_pending < 1:
            raise ValueError('max_pending must be at least 1')
        self._process = process
        self._on_error = on_error
        self._is_expendable = is_expendable
        self.max_pending = max_pending
        self._queue: Deque[Any] = collections.deque()
        self._condition = threading.Condition()
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> Optional[Any]:
        dropped = None
        with self._condition:
            if len(self._queue) >= self.max_pending:
                expendable = [queued for queued in self._queue if self._is_expendable(queued)]
                dropped = expendable[0] if expendable else self._queue[0]
                self._queue.remove(dropped)
            self._queue.append(item)
            self._condition.notify()
        return dropped

    def pending(self) -> int:
        with self._condition:
            return len(self._queue)

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: not self._queue and not self._busy,
                                            timeout)

    def stop(self, timeout: float = 2.0) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self._process(item)
            except Exception as error:  # noqa: BLE001 - reported through on_error
                self._on_error(item, error)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()
