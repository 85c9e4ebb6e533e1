"""Demo input made on the spot: real face frames and real speech, none of it from a data set.

The face is the public-domain portrait of :mod:`mika_perception.sample_frames`; the speech
is spoken by espeak-ng. ROS-free.
"""
from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from typing import Iterator, Sequence

import numpy as np

SAMPLE_RATE = 16000


def face_frames(count: int, width: int = 640, height: int = 480,
                period_frames: int = 60) -> Iterator[np.ndarray]:
    """``count`` BGR frames with one real face drifting slowly, as a hand-held camera sees it."""
    from mika_perception.sample_frames import face_frame

    face_side = int(min(width, height) * 0.75)
    margin_x, margin_y = (width - face_side) // 2, (height - face_side) // 2
    for index in range(count):
        phase = 2 * math.pi * index / period_frames
        yield face_frame(width, height, face_side,
                         x=margin_x + int(round(0.6 * margin_x * math.sin(phase))),
                         y=margin_y + int(round(0.6 * margin_y * math.sin(2 * phase))))


def speech(text: str, sample_rate: int = SAMPLE_RATE, words_per_minute: int = 150) -> np.ndarray:
    """``text`` spoken by espeak-ng, as float32 mono samples at ``sample_rate``."""
    import soundfile
    from scipy.signal import resample_poly

    program = shutil.which('espeak-ng') or shutil.which('espeak')
    if program is None:
        raise RuntimeError('espeak-ng is not installed: `sudo apt-get install espeak-ng` '
                           '(scripts/demo.sh installs it when run as root)')
    with tempfile.NamedTemporaryFile(suffix='.wav') as wav:
        subprocess.run([program, '-s', str(words_per_minute), '-w', wav.name, text],
                       check=True, capture_output=True)
        samples, rate = soundfile.read(wav.name, dtype='float32', always_2d=True)
    mono = samples.mean(axis=1)
    divisor = math.gcd(sample_rate, rate)
    return resample_poly(mono, sample_rate // divisor, rate // divisor).astype(np.float32)


def speech_track(sentences: Sequence[str], start_s: float, gap_s: float,
                 total_s: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Sentences placed on a silent track of ``total_s``: first at ``start_s``, then ``gap_s`` apart."""
    track = np.zeros(int(total_s * sample_rate), dtype=np.float32)
    position = int(start_s * sample_rate)
    for sentence in sentences:
        clip = speech(sentence, sample_rate)
        end = min(track.size, position + clip.size)
        track[position:end] = clip[:end - position]
        position = end + int(gap_s * sample_rate)
    return track


def to_s16le(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype('<i2').tobytes()
