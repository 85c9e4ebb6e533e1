"""A small real voice model trained in seconds, for tests that must not depend on the
shipped model file (used by the test suites of mika_voice and mika_evaluation, not by
the node)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_voice import features, voice_model


def train_tiny_voice_model(clips: Sequence[np.ndarray], speakers: Sequence[str],
                           labels: Sequence[str], path, model_id: str) -> str:
    """Features, per-speaker statistics and the .keras file exactly as the training
    command writes them, from a handful of real 16 kHz clips."""
    import keras

    raw = np.stack([features.extract_features(clip, features.SAMPLE_RATE) for clip in clips])
    speakers = np.asarray(speakers)
    y = np.array([EMOTION_LABELS.index(label) for label in labels])
    mean, within = voice_model.population_statistics(raw, speakers)
    x = voice_model.SpeakerStandardiser.transform(raw, speakers)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((raw.shape[1],)),
                              keras.layers.Dense(16, activation='relu'),
                              keras.layers.Dense(len(EMOTION_LABELS))])
    model.compile('adam', keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=20, verbose=0)
    metadata = voice_model.VoiceModelMetadata(
        feature_version=features.feature_version(), feature_set=features.FEATURE_SET_LIBROSA,
        feature_names=features.feature_names(), sample_rate=features.SAMPLE_RATE,
        label_names=list(EMOTION_LABELS), population_mean=mean.tolist(),
        within_speaker_std=within.tolist(), model_id=model_id)
    return str(voice_model.save_voice_model(model, path, metadata))


NOISE_KINDS = ('white', 'pink', 'brown', 'fan', 'hum50', 'hum60')


def stationary_noise(kind: str, seconds: float, rate: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS stationary noise of the sounds around a robot: white, pink (1/f), brown
    (1/f^2), a fan (1/f^1.5 air noise, 3 blades at 15 rev/s: 45 Hz blade-pass and 4
    harmonics, a 0.4 Hz +-20% swell) and mains hum (50 or 60 Hz and 10 harmonics over a
    little white noise)."""
    count = int(seconds * rate)
    time = np.arange(count) / rate
    if kind == 'white':
        noise = rng.standard_normal(count)
    elif kind in ('pink', 'brown', 'fan'):
        exponent = {'pink': 1.0, 'brown': 2.0, 'fan': 1.5}[kind]
        spectrum = rng.standard_normal(count // 2 + 1) + 1j * rng.standard_normal(count // 2 + 1)
        frequency = np.fft.rfftfreq(count, 1.0 / rate)
        spectrum *= (frequency >= 20.0) * np.maximum(frequency, 20.0) ** (-exponent / 2)
        noise = np.fft.irfft(spectrum, count)
        if kind == 'fan':
            noise /= np.sqrt(np.mean(np.square(noise)))
            noise += sum(0.5 / k * np.sin(2 * np.pi * 45.0 * k * time + rng.uniform(0, 6.3))
                         for k in range(1, 6))
            noise *= 1.0 + 0.2 * np.sin(2 * np.pi * 0.4 * time)
    elif kind in ('hum50', 'hum60'):
        mains = 50.0 if kind == 'hum50' else 60.0
        noise = sum(1.0 / k * np.sin(2 * np.pi * mains * k * time + rng.uniform(0, 6.3))
                    for k in range(1, 12)) + 0.05 * rng.standard_normal(count)
    else:
        raise ValueError(f'noise kind must be one of {NOISE_KINDS}, got {kind!r}')
    return (noise / np.sqrt(np.mean(np.square(noise)))).astype(np.float32)
