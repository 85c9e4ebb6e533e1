"""Raw PCM bytes from a microphone topic to float32 mono samples at the model's rate.

ROS-free. ``audio_common_msgs`` carries untyped bytes whose meaning lives in a separate
``AudioInfo`` message (or in parameters when no info is published), so every chunk is
checked against that format before it is trusted: a wrong guess gives plausible-looking
noise, and the classifier would answer confidently on it. Anything that does not fit raises
:class:`AudioFormatError` with a short ``reason`` key the node counts in diagnostics.

Resampling is stateful (``soxr.ResampleStream``, the resampler librosa itself uses):
resampling each 100 ms chunk on its own (``scipy.signal.resample_poly``) zero-pads both
edges of every chunk and leaves a click at each boundary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from mika_common.echo import echo

#: sample_format (GStreamer names, as ``audio_capture`` publishes them) -> (bytes, dtype).
#: 24-bit samples have no NumPy dtype and are unpacked by hand.
SAMPLE_FORMATS: Dict[str, Tuple[int, Optional[str]]] = {
    'U8': (1, 'u1'),
    'S8': (1, 'i1'),
    'S16LE': (2, '<i2'),
    'S16BE': (2, '>i2'),
    'S24LE': (3, None),
    'S32LE': (4, '<i4'),
    'S32BE': (4, '>i4'),
    'F32LE': (4, '<f4'),
    'F32BE': (4, '>f4'),
    'F64LE': (8, '<f8'),
}
#: coding_format values that mean uncompressed PCM ('wave' is what audio_capture sends).
RAW_CODINGS = ('wave', 'wav', 'raw', 'pcm', '')
#: Float samples beyond this are not audio in [-1, 1]: the bytes are in another format.
MAX_FLOAT_AMPLITUDE = 1.5
MAX_CHANNELS = 64
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 384000

MP3_HINT = ("MP3-coded audio cannot be analysed: run audio_capture with the parameters "
            "format:=wave sample_format:=S16LE (its default format is mp3), e.g. "
            "`ros2 launch audio_capture capture_wave.launch.xml`")


class AudioFormatError(ValueError):
    """Input that does not fit its declared format; ``reason`` is a short counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StreamFormat:
    """What the bytes of a stream mean: from ``AudioInfo`` fields or node parameters."""

    sample_rate: int
    channels: int
    sample_format: str
    coding_format: str = 'wave'

    @classmethod
    def from_fields(cls, sample_rate, channels, sample_format: str,
                    coding_format: str = 'wave') -> 'StreamFormat':
        """Build and validate a format; raises :class:`AudioFormatError` naming the problem."""
        fmt = cls(int(sample_rate), int(channels), str(sample_format).strip().upper(),
                  str(coding_format).strip().lower())
        fmt.validate()
        return fmt

    def validate(self) -> None:
        if self.coding_format == 'mp3':
            raise AudioFormatError('mp3', MP3_HINT)
        if self.coding_format not in RAW_CODINGS:
            raise AudioFormatError(
                'unknown_coding',
                f"coding_format {echo(self.coding_format)} is not raw PCM; supported: 'wave' "
                f"(set audio_capture's format to wave)")
        if self.sample_format not in SAMPLE_FORMATS:
            raise AudioFormatError(
                'unknown_sample_format',
                f'sample_format {echo(self.sample_format)} is not supported; supported: '
                f'{", ".join(SAMPLE_FORMATS)}')
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise AudioFormatError('bad_channels',
                                   f'channels={self.channels}: expected 1..{MAX_CHANNELS}')
        if not MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE:
            raise AudioFormatError(
                'bad_sample_rate', f'sample_rate={self.sample_rate} Hz: expected '
                f'{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz')

    @property
    def bytes_per_sample(self) -> int:
        return SAMPLE_FORMATS[self.sample_format][0]

    @property
    def bytes_per_frame(self) -> int:
        return self.bytes_per_sample * self.channels

    def describe(self) -> str:
        return (f'{self.sample_format} {self.channels} ch {self.sample_rate} Hz '
                f'({self.coding_format or "raw"})')


@dataclass
class DecodedChunk:
    """One chunk at the model rate, with what the node must count about it."""

    samples: np.ndarray      # float32 mono at the target rate (resampler output so far)
    first_index: int         # target-rate index of the chunk's first input frame
    duration_s: float        # of the input chunk (the resampler holds a few ms back)
    clipped: int             # input samples at digital full scale


#: PortAudio sample format constants (mgonzs13/audio_common ``AudioInfo.format``) ->
#: (typed array field of its ``AudioData``, equivalent sample_format).
PORTAUDIO_FORMATS: Dict[int, Tuple[str, str]] = {
    1: ('float32_data', 'F32LE'),
    2: ('int32_data', 'S32LE'),
    8: ('int16_data', 'S16LE'),
    16: ('int8_data', 'S8'),
    32: ('uint8_data', 'U8'),
}


def pcm_to_float(data: bytes, fmt: StreamFormat) -> Tuple[np.ndarray, int]:
    """Bytes -> float samples shaped (frames, channels) in [-1, 1], and the clipped count.

    Raises :class:`AudioFormatError` for a byte count that is not whole frames, and for
    float data holding NaN/inf or values far outside [-1, 1] (bytes of another format).
    """
    size = len(data)
    if size % fmt.bytes_per_frame:
        raise AudioFormatError(
            'partial_frame',
            f'{size} bytes is not a whole number of {fmt.bytes_per_frame}-byte frames '
            f'({fmt.describe()}): the stream is not in the declared format')
    dtype = SAMPLE_FORMATS[fmt.sample_format][1]
    raw = np.frombuffer(data, dtype=np.uint8)
    if fmt.sample_format == 'S24LE':
        triples = raw.reshape(-1, 3).astype(np.int32)
        values = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
    else:
        values = raw.view(dtype)
    return typed_to_float(values, fmt.sample_format, fmt.channels)


def typed_to_float(values: np.ndarray, sample_format: str,
                   channels: int) -> Tuple[np.ndarray, int]:
    """Typed samples (interleaved) -> float (frames, channels) in [-1, 1], clipped count."""
    values = np.asarray(values)
    if values.size % channels:
        raise AudioFormatError(
            'partial_frame', f'{values.size} samples is not a whole number of '
            f'{channels}-channel frames')
    if sample_format.startswith('F'):
        samples = values.astype(np.float32)
        if not np.all(np.isfinite(samples)):
            raise AudioFormatError(
                'not_finite', f'{sample_format} chunk holds NaN or infinite samples')
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        if peak > MAX_FLOAT_AMPLITUDE:
            raise AudioFormatError(
                'format_mismatch',
                f'{sample_format} samples reach {peak:.3g}, far outside [-1, 1]: the '
                'bytes are not float audio (check sample_format)')
        clipped = int(np.count_nonzero(np.abs(samples) >= 1.0))
    else:
        bits = 24 if sample_format == 'S24LE' else 8 * SAMPLE_FORMATS[sample_format][0]
        if sample_format == 'U8':
            centred = values.astype(np.int32) - 128
        else:
            centred = values.astype(np.int64)
        full_scale = float(1 << (bits - 1))
        # both rails; some converters stop one code short of the negative full scale
        clipped = int(np.count_nonzero(np.abs(centred) >= full_scale - 1))
        samples = (centred / full_scale).astype(np.float32)
    return samples.reshape(-1, channels), clipped


class AudioDecoder:
    """Decodes successive chunks of one stream and resamples them, keeping state between.

    ``first_index`` of each chunk counts source frames converted to the target rate (from
    ``start_index``, the segmenter's position when this format began), so a
    chunk's stamp maps onto the resampled sample it belongs to although the resampler
    holds a few milliseconds back.
    """

    def __init__(self, fmt: StreamFormat, target_rate: int, start_index: int = 0):
        fmt.validate()
        self.format = fmt
        self.target_rate = int(target_rate)
        self.start_index = int(start_index)
        self._input_frames = 0
        self._resampler = None
        if fmt.sample_rate != self.target_rate:
            import soxr
            self._resampler = soxr.ResampleStream(fmt.sample_rate, self.target_rate, 1,
                                                  dtype='float32', quality='HQ')

    def decode(self, data) -> DecodedChunk:
        """Decode one chunk of raw bytes (``bytes``, ``bytearray`` or a uint8 array)."""
        if isinstance(data, np.ndarray):
            data = data.astype(np.uint8, copy=False).tobytes()
        return self.add_frames(*pcm_to_float(bytes(data), self.format))

    def add_frames(self, frames: np.ndarray, clipped: int = 0) -> DecodedChunk:
        """Mix (frames, channels) float samples in [-1, 1] to mono and resample them."""
        if frames.ndim != 2 or frames.shape[1] != self.format.channels:
            raise AudioFormatError('bad_channels', f'expected (frames, '
                                   f'{self.format.channels}) samples, got {frames.shape}')
        mono = frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        first_index = self.start_index + int(round(
            self._input_frames * self.target_rate / self.format.sample_rate))
        self._input_frames += mono.size
        if self._resampler is not None:
            mono = np.asarray(self._resampler.resample_chunk(mono), dtype=np.float32)
        return DecodedChunk(mono, first_index, frames.shape[0] / self.format.sample_rate,
                            clipped)
