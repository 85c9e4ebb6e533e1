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
