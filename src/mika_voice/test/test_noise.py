"""Issue 14: stationary noise (white to brown, a fan, mains hum), up to digital full scale,
gives no utterance and no result; real speech over it at 10 dB SNR still does."""
import numpy as np
import pytest

from mika_voice.audio_decoding import StreamFormat
from mika_voice.benchmark import s16le, speech_of
from mika_voice.pipeline import UtteranceRejected
from mika_voice.segmentation import SegmenterConfig, UtteranceSegmenter
from mika_voice.testing import NOISE_KINDS, stationary_noise
from mika_voice.voice_parameters import PARAMETERS, assemble_voice_pipeline

RATE = 16000
NODE_VALUES = {spec.name: spec.default for spec in PARAMETERS}


def segment(audio, config=SegmenterConfig()):
    segmenter = UtteranceSegmenter(config)
    found = []
    for start in range(0, audio.size, RATE // 10):
        found += segmenter.push(audio[start:start + RATE // 10])
    return found, segmenter


@pytest.mark.parametrize('kind', NOISE_KINDS)
def test_stationary_noise_up_to_full_scale_is_no_utterance(kind):
    """A second of silence, then 20 s of noise (switched on: an onset from silence)
    peaking at -30 dBFS, -10 dBFS and full scale; webrtcvad alone called it speech."""
    noise = stationary_noise(kind, 20.0, RATE, np.random.default_rng(3))
    for peak in (10 ** (-30 / 20), 10 ** (-10 / 20), 0.999):
        audio = np.concatenate([np.zeros(RATE), noise / np.max(np.abs(noise)) * peak])
        found, _ = segment(audio.astype(np.float32))
        assert found == [], f'{kind} peaking at {20 * np.log10(peak):.0f} dBFS: ' \
                            f'{len(found)} utterances'


def test_full_scale_random_noise_gives_no_result(voice_model_path):
    """The report: 30 s of full-scale random samples on the audio topic gave 11 'fear'
    results through the node's pipeline (default parameters, running windows included)."""
    from mika_voice.voice_model import load_voice_model
    pipeline, _ = assemble_voice_pipeline(NODE_VALUES, load_voice_model(voice_model_path))
    pipeline.set_format(StreamFormat.from_fields(RATE, 1, 'S16LE'))
    noise = np.random.default_rng(4).uniform(-1.0, 1.0, 30 * RATE).astype(np.float32)
    results = []
    for start in range(0, noise.size, RATE // 10):
        for utterance in pipeline.accept_chunk(s16le(noise[start:start + RATE // 10]),
                                               start / RATE).utterances:
            try:
                results.append(pipeline.classify(utterance).label)
            except UtteranceRejected:
                pass
    assert results == []


@pytest.mark.parametrize('kind', ['white', 'pink', 'fan', 'hum50'])
def test_speech_over_loud_noise_at_10_db_snr_is_still_an_utterance(actor_clips, kind):
    """Each clip 2 s into noise 10 dB below its speech (speech at -20 dBFS, the noise at
    -30 dBFS: loud enough for webrtcvad to call it speech throughout): an utterance
    covers the sentence and ends with it, rather than running on through the noise."""
    rng = np.random.default_rng(5)
    for number, clip in enumerate(actor_clips):
        speech = speech_of(clip, RATE)
        gain = 10 ** (-20 / 20) / np.sqrt(np.mean(np.square(speech, dtype=np.float64)))
        audio = 10 ** (-30 / 20) * stationary_noise(kind, clip.size / RATE + 5, RATE, rng)
        onset = 2 * RATE
        audio[onset:onset + clip.size] += gain * clip
        found, _ = segment(audio, SegmenterConfig(running_hop_s=0.0))
        over = [u for u in found if u.start_index < onset + clip.size and u.end_index > onset]
        assert over, f'clip {number}: no utterance'
        assert all(u.duration_s <= clip.size / RATE + 0.5 for u in found)


def test_modulation_tells_speech_from_noise(actor_clips):
    """0.8 s and 3 s of each noise (brown noise, 0.8 s, reaches 0.43 dB in 300 draws)
    against the sentences alone."""
    from mika_voice.segmentation import speech_modulation_db
    rng = np.random.default_rng(6)
    noise = [speech_modulation_db(stationary_noise(kind, seconds, RATE, rng), RATE)
             for kind in NOISE_KINDS for seconds in (0.8, 3.0) for _ in range(5)]
    speech = [speech_modulation_db(speech_of(clip, RATE), RATE) for clip in actor_clips]
    threshold = SegmenterConfig().min_speech_modulation_db
    assert max(noise) < threshold < 2 * threshold < min(speech), (max(noise), min(speech))
