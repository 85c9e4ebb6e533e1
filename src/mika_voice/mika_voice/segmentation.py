"""Utterances out of a continuous microphone stream: ring buffer, VAD, stamps.

ROS-free. The segmenter takes float32 mono samples at one rate, decides per 30 ms frame
whether someone speaks (webrtcvad, or an adaptive energy threshold where webrtcvad is not
installed), and returns finished utterances between a minimum and a maximum length. Long
speech also yields *running* windows (the last few seconds, every hop) so a listener does
not wait for a sentence to end. Memory is fixed by the ring buffer's capacity: hours of
silence or a burst of audio far faster than real time cannot grow it.

Noise: webrtcvad calls broadband stationary noise (a fan, a vacuum cleaner, hum) louder
than about -36 dBFS speech, frame after frame, so over a loud floor a webrtcvad frame also
has to rise above it (:class:`NoiseFloorGate`), and a candidate whose level does not rise
and fall at syllable rate (:func:`speech_modulation_db`) is dropped and counted
(``not_speech``).

Time: each chunk may bring the sensor stamp of its first sample (``add_stamp``); an
utterance's ``start_stamp`` is its first sample's stamp, interpolated from the nearest
earlier chunk stamp at the nominal sample rate. Sample indices run on across a gap in the
audio (a paused driver), so the caller marks it (``break_stream``): no utterance, onset
padding or running window reaches back across it, or it would be stamped from before.
"""
from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass
from typing import Deque, List, Optional

import numpy as np

VAD_WEBRTC = 'webrtc'
VAD_ENERGY = 'energy'
VAD_METHODS = (VAD_WEBRTC, VAD_ENERGY)
FRAME_MS = 30
WEBRTC_RATES = (8000, 16000, 32000, 48000)
#: webrtcvad judges a frame's spectrum, not its level: in modes 0-1 it calls sounds at
#: -90 dBFS (a studio recording's near-silence) speech. Frames below -75 dBFS, quieter
#: than the quietest speech of RAVDESS (-65 dBFS) and than microphones' noise floors, never are.
WEBRTC_SILENCE_POWER = 10.0 ** (-75.0 / 10.0)
#: The noise floor is the lowest 90 ms mean frame power of this window: longer than the
#: pauses speech leaves, short enough to follow a fan switched on within it.
NOISE_FLOOR_WINDOW_S = 2.0
NOISE_FLOOR_SMOOTHING_FRAMES = 3
#: The floor gate holds only over a floor at least this loud. Below it webrtcvad alone
#: tells stationary noise from speech (white, pink, brown, fan, hum gave no utterance in a
#: minute at -38 dBFS; the fan first at -36), and quiet speech a few dB over a quieter
#: floor (RAVDESS sad takes over the bags' -60 dBFS, speech at -35 dBFS over noise 10 dB
#: below it) must stay speech: the gate would cut it into pieces too short to keep.
NOISE_FLOOR_GATE_POWER = 10.0 ** (-44.0 / 10.0)
#: Envelope of :func:`speech_modulation_db`: 10 ms frames of the pre-emphasised signal;
#: 50 ms minus 410 ms moving means keep roughly 1-10 Hz, where syllables are (4-5 Hz).
ENVELOPE_HOP_S = 0.01
ENVELOPE_FAST_FRAMES = 5
ENVELOPE_SLOW_FRAMES = 41
#: Envelope values below this percentile are raised to it: pauses in noise sit at the
#: floor anyway, and silence before a noise that starts (the onset's padding) is no rhythm.
ENVELOPE_FLOOR_PERCENTILE = 20.0


class SampleRingBuffer:
    """Fixed-capacity float32 buffer addressed by absolute sample index.

    ``append`` never grows memory; the oldest samples are overwritten and counted in
    ``overwritten``. ``read(start, end)`` returns a copy of samples still held.
    """

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError('capacity must be positive')
        self.capacity = int(capacity)
        self._data = np.zeros(self.capacity, dtype=np.float32)
        self.end_index = 0          # absolute index one past the newest sample
        self.overwritten = 0

    @property
    def start_index(self) -> int:
        return max(0, self.end_index - self.capacity)

    def append(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        old_start = self.start_index
        if samples.size > self.capacity:
            self.end_index += samples.size - self.capacity
            samples = samples[-self.capacity:]
        position = self.end_index % self.capacity
        first = min(samples.size, self.capacity - position)
        self._data[position:position + first] = samples[:first]
        self._data[:samples.size - first] = samples[first:]
        self.end_index += samples.size
        self.overwritten += self.start_index - old_start

    def read(self, start: int, end: int) -> np.ndarray:
        if start < self.start_index or end > self.end_index or start > end:
            raise IndexError(f'samples {start}..{end} not held (buffer holds '
                             f'{self.start_index}..{self.end_index})')
        positions = np.arange(start, end) % self.capacity
        return self._data[positions].copy()


class StampClock:
    """Maps absolute sample indices to sensor time from per-chunk stamps.

    Keeps at most ``max_anchors`` (index, stamp) pairs; a stamp that disagrees with the
    previous anchor's extrapolation is simply a new anchor (a gap or a late chunk).
    """

    def __init__(self, sample_rate: int, max_anchors: int = 4096):
        self.sample_rate = sample_rate
        self._indices: Deque[int] = collections.deque(maxlen=max_anchors)
        self._stamps: Deque[float] = collections.deque(maxlen=max_anchors)

    def add(self, index: int, stamp: float) -> None:
        if self._indices and index <= self._indices[-1]:
            # the same index again (an empty chunk) or older: replace the newest anchor
            while self._indices and index <= self._indices[-1]:
                self._indices.pop()
                self._stamps.pop()
        self._indices.append(int(index))
        self._stamps.append(float(stamp))

    def stamp_of(self, index: int) -> Optional[float]:
        if not self._indices:
            return None
        position = bisect.bisect_right(self._indices, index) - 1
        position = max(position, 0)
        return self._stamps[position] + (index - self._indices[position]) / self.sample_rate

    def expected_stamp(self, index: int) -> Optional[float]:
        """What the newest anchor predicts for ``index`` (None before the first anchor)."""
        if not self._indices:
            return None
        return self._stamps[-1] + (index - self._indices[-1]) / self.sample_rate

    def clear(self) -> None:
        self._indices.clear()
        self._stamps.clear()


@dataclass
class Utterance:
    """A stretch of speech to classify; indices are absolute sample indices."""

    samples: np.ndarray
    sample_rate: int
    start_index: int
    end_index: int
    start_stamp: float      # sensor time of the first sample
    end_stamp: float        # sensor time just after the last sample
    running: bool = False   # a sliding window over speech that has not ended yet

    @property
    def duration_s(self) -> float:
        return (self.end_index - self.start_index) / self.sample_rate


@dataclass(frozen=True)
class SegmenterConfig:
    sample_rate: int = 16000
    vad: str = VAD_WEBRTC
    aggressiveness: int = 1            # webrtcvad mode 0 (lenient) .. 3 (strict)
    energy_margin_db: float = 12.0     # energy VAD: speech is this far above the noise floor
    energy_floor_dbfs: float = -55.0   # energy VAD: never call quieter frames speech
    onset_ms: int = 90                 # voiced time within the onset window that starts speech
    onset_window_ms: int = 150
    hangover_ms: int = 400             # silence that ends an utterance
    padding_ms: int = 150              # kept before the onset and after the last voiced frame
    min_utterance_s: float = 0.5
    max_utterance_s: float = 8.0
    running_window_s: float = 3.0      # sliding window for long speech
    running_hop_s: float = 1.0         # 0 disables running estimates
    noise_floor_margin_db: float = 6.0  # webrtcvad over a loud floor: speech rises this far
    min_speech_modulation_db: float = 0.5  # candidates with less are not speech; 0 disables

    def check(self) -> None:
        if self.vad not in VAD_METHODS:
            raise ValueError(f'vad must be one of {VAD_METHODS}, got {self.vad!r}')
        if self.vad == VAD_WEBRTC and self.sample_rate not in WEBRTC_RATES:
            raise ValueError(f'webrtcvad needs a sample rate in {WEBRTC_RATES}')
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError('aggressiveness must be 0..3')
        if not 0 < self.min_utterance_s < self.max_utterance_s:
            raise ValueError('need 0 < min_utterance_s < max_utterance_s')
        if self.running_hop_s < 0 or self.running_window_s > self.max_utterance_s:
            raise ValueError('need running_hop_s >= 0 and running_window_s <= max_utterance_s')
        if self.onset_ms > self.onset_window_ms:
            raise ValueError('onset_ms must not exceed onset_window_ms')
        if self.noise_floor_margin_db < 0 or self.min_speech_modulation_db < 0:
            raise ValueError('noise_floor_margin_db and min_speech_modulation_db must be >= 0')


class _EnergyVad:
    """Frame RMS against a slowly adapting noise floor (a fallback to webrtcvad)."""

    def __init__(self, margin_db: float, floor_dbfs: float):
        self.margin_db = margin_db
        self.floor_dbfs = floor_dbfs
        self.noise_dbfs: Optional[float] = None

    def is_speech(self, frame: np.ndarray) -> bool:
        level = 10.0 * np.log10(float(np.mean(np.square(frame, dtype=np.float64))) + 1e-12)
        if self.noise_dbfs is None:
            self.noise_dbfs = level
        speech = level > max(self.noise_dbfs + self.margin_db, self.floor_dbfs)
        # the floor follows quiet frames quickly and loud ones very slowly
        rate = 0.05 if level < self.noise_dbfs else (0.002 if speech else 0.01)
        self.noise_dbfs += rate * (level - self.noise_dbfs)
        return speech


class NoiseFloorGate:
    """Is a frame's power ``margin_db`` above the running stationary floor?

    webrtcvad judges a frame's spectrum, and broadband noise louder than about -36 dBFS
    passes for speech, frame after frame. Speech rises and falls well above a stationary noise;
    the floor is the minimum over ``window_frames`` of the power averaged over a few
    frames (minimum statistics), so it follows a noise within the window and stays below
    speech, which pauses more often than that. Floors under ``NOISE_FLOOR_GATE_POWER``
    pass every frame.
    """

    def __init__(self, margin_db: float, window_frames: int, smoothing_frames: int):
        self.ratio = 10.0 ** (margin_db / 10.0)
        self._recent: Deque[float] = collections.deque(maxlen=smoothing_frames)
        self._smoothed: Deque[float] = collections.deque(maxlen=window_frames)

    def above(self, power: float) -> bool:
        self._recent.append(power)
        self._smoothed.append(sum(self._recent) / len(self._recent))
        floor = min(self._smoothed)
        return floor < NOISE_FLOOR_GATE_POWER or power >= self.ratio * floor


def speech_modulation_db(samples: np.ndarray, sample_rate: int) -> float:
    """RMS in dB of the level's fluctuation at about 1-10 Hz (syllable rate).

    Speech rises and falls with its syllables by many dB, and still by 1-3 dB under
    broadband noise only 10 dB below it; a stationary noise (white to brown, a fan's
    tones and slow swell, mains hum) varies by a few tenths of a dB.
    """
    hop = max(1, int(sample_rate * ENVELOPE_HOP_S))
    count = samples.size // hop
    if count == 0:
        return 0.0
    signal = np.asarray(samples[:count * hop], dtype=np.float64)
    emphasised = np.empty_like(signal)
    emphasised[0] = signal[0]
    np.subtract(signal[1:], 0.95 * signal[:-1], out=emphasised[1:])
    power = np.mean(np.square(emphasised.reshape(count, hop)), axis=1)
    level = 10.0 * np.log10(power + 1e-12)
    level = np.maximum(level, np.percentile(level, ENVELOPE_FLOOR_PERCENTILE))
    fluctuation = (_moving_mean(level, ENVELOPE_FAST_FRAMES)
                   - _moving_mean(level, ENVELOPE_SLOW_FRAMES))
    return float(np.std(fluctuation))


def _moving_mean(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving mean of odd ``width``, the ends mirrored (continuing them flat
    makes a step of a hum's frame-to-frame ripple: up to 0.7 dB in 0.8 s of hum)."""
    half = width // 2
    padded = np.concatenate([np.zeros(1), np.pad(values, half, mode='reflect')])
    sums = np.cumsum(padded)
    return (sums[width:] - sums[:-width]) / width


def make_vad(config: SegmenterConfig):
    """A callable frame -> bool; raises ImportError if webrtcvad is asked for but missing."""
    if config.vad == VAD_WEBRTC:
        import webrtcvad
        vad = webrtcvad.Vad(config.aggressiveness)
        rate = config.sample_rate
        floor = (NoiseFloorGate(config.noise_floor_margin_db,
                                int(NOISE_FLOOR_WINDOW_S * 1000) // FRAME_MS,
                                NOISE_FLOOR_SMOOTHING_FRAMES)
                 if config.noise_floor_margin_db > 0 else None)

        def webrtc(frame: np.ndarray) -> bool:
            power = float(np.mean(np.square(frame, dtype=np.float64)))
            if (floor is not None and not floor.above(power)) or power < WEBRTC_SILENCE_POWER:
                return False
            pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype('<i2').tobytes()
            return vad.is_speech(pcm, rate)
        return webrtc
    return _EnergyVad(config.energy_margin_db, config.energy_floor_dbfs).is_speech


class UtteranceSegmenter:
    """Feeds on samples, returns finished utterances and running windows.

    ``push(samples)`` is the only entry; it returns a (possibly empty) list. Silence
    returns nothing. Counters: ``too_short`` (speech shorter than the minimum),
    ``forced_cuts`` (speech longer than the maximum, cut and continued), ``not_speech``
    (utterances and running windows without syllable-rate modulation, dropped).
    """

    def __init__(self, config: SegmenterConfig = SegmenterConfig()):
        config.check()
        self.config = config
        rate = config.sample_rate
        self.frame = rate * FRAME_MS // 1000
        self._vad = make_vad(config)
        self._onset_frames = max(1, config.onset_ms // FRAME_MS)
        self._window_frames = max(1, config.onset_window_ms // FRAME_MS)
        self._hangover_frames = max(1, config.hangover_ms // FRAME_MS)
        self._padding = rate * config.padding_ms // 1000
        self._min = int(config.min_utterance_s * rate)
        self._max = int(config.max_utterance_s * rate)
        self._running_window = int(config.running_window_s * rate)
        self._running_hop = int(config.running_hop_s * rate)
        capacity = self._max + 2 * self._padding + self.frame * (self._window_frames + 2)
        self.buffer = SampleRingBuffer(capacity)
        self.clock = StampClock(rate)
        self.too_short = 0
        self.forced_cuts = 0
        self.not_speech = 0
        self._stream_start = 0     # first index of the audio that runs on without a gap
        self._pending = np.zeros(0, dtype=np.float32)
        self._recent: Deque[bool] = collections.deque(maxlen=self._window_frames)
        self._reset_speech()

    def _reset_speech(self) -> None:
        self._in_speech = False
        self._start = 0
        self._last_voiced_end = 0
        self._silent_frames = 0
        self._voiced_frames = 0
        self._next_running = 0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def reset(self) -> None:
        """Forget the audio held (a format change or a jump back in time); sample indices
        go on from where they were."""
        self.clock.clear()
        self.start_at(self.buffer.end_index)

    def start_at(self, index: int) -> None:
        """Begin a new stream at sample ``index`` (where the segmenter this one replaces
        stopped), holding no audio from before it."""
        self.buffer = SampleRingBuffer(self.buffer.capacity)
        self.buffer.end_index = index
        self._stream_start = index
        self._pending = np.zeros(0, dtype=np.float32)
        self._recent.clear()
        self._reset_speech()

    def break_stream(self, index: int) -> List[Utterance]:
        """Audio is missing before sample ``index`` (the next chunk's first): the
        utterance in progress ends with the audio held, as silence would have ended it
        (returned if long enough), and nothing after starts before ``index`` (nor before
        the samples a resampler held back from before the gap)."""
        results = self._finish(self._last_voiced_end) if self._in_speech else []
        self._stream_start = max(index, self.buffer.end_index)
        self._pending = np.zeros(0, dtype=np.float32)
        self._recent.clear()
        return results

    def _earliest(self) -> int:
        """The first sample an utterance may start with: held, and of the current stream."""
        return max(self.buffer.start_index, self._stream_start)

    def add_stamp(self, index: int, stamp: float) -> None:
        """The sensor time of sample ``index`` (a chunk's first sample)."""
        self.clock.add(index, stamp)

    def push(self, samples: np.ndarray) -> List[Utterance]:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.buffer.append(samples)
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        frame_end = self.buffer.end_index - samples.size
        results: List[Utterance] = []
        whole = samples.size - samples.size % self.frame
        for offset in range(0, whole, self.frame):
            frame_end += self.frame
            results += self._on_frame(samples[offset:offset + self.frame], frame_end)
        self._pending = samples[whole:].copy()
        return results

    def _on_frame(self, frame: np.ndarray, frame_end: int) -> List[Utterance]:
        speech = bool(self._vad(frame))
        self._recent.append(speech)
        if not self._in_speech:
            if sum(self._recent) >= self._onset_frames:
                onset_frames = len(self._recent)
                self._in_speech = True
                self._start = max(frame_end - onset_frames * self.frame - self._padding,
                                  self._earliest())
                self._last_voiced_end = frame_end
                self._voiced_frames = sum(self._recent)
                self._silent_frames = 0
                self._next_running = self._start + self._running_window
            return []
        results: List[Utterance] = []
        if speech:
            self._last_voiced_end = frame_end
            self._silent_frames = 0
            self._voiced_frames += 1
        else:
            self._silent_frames += 1
            if self._silent_frames >= self._hangover_frames:
                return self._finish(self._last_voiced_end)
        if frame_end - self._start >= self._max:
            self.forced_cuts += 1
            cut = self._start + self._max
            results += self._finish(cut, forced=True)
            # speech goes on: the next utterance starts right at the cut, without padding
            self._in_speech = True
            self._start = cut
            self._last_voiced_end = frame_end
            self._voiced_frames = 0
            self._next_running = self._start + self._running_window
        elif self._running_hop and frame_end >= self._next_running:
            self._next_running = frame_end + self._running_hop
            results += self._make(frame_end - self._running_window, frame_end, running=True)
        return results

    def _finish(self, last_voiced_end: int, forced: bool = False) -> List[Utterance]:
        end = last_voiced_end if forced else min(last_voiced_end + self._padding,
                                                 self.buffer.end_index)
        start = max(self._start, self._earliest())
        voiced = self._voiced_frames
        self._reset_speech()
        self._recent.clear()
        if voiced * self.frame < self._min:
            self.too_short += 1
            return []
        return self._make(start, end, running=False)

    def _make(self, start: int, end: int, running: bool) -> List[Utterance]:
        """The utterance of samples ``start``..``end``, or none where it is not speech."""
        start = max(start, self._earliest())
        rate = self.config.sample_rate
        samples = self.buffer.read(start, end)
        if (self.config.min_speech_modulation_db
                and speech_modulation_db(samples, rate) < self.config.min_speech_modulation_db):
            self.not_speech += 1
            return []
        start_stamp = self.clock.stamp_of(start)
        if start_stamp is None:  # no stamp ever given: time since the stream began
            start_stamp = start / rate
        return [Utterance(samples, rate, start, end, start_stamp,
                          start_stamp + (end - start) / rate, running=running)]
