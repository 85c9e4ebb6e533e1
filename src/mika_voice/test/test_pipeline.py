"""The ROS-free pipeline: real speech to calibrated probabilities, with the guards the node
relies on (clipping, format changes, time jumps, bursts, bounded work queue)."""
import threading
import time

import numpy as np
import pytest

from mika_common.emotions import EMOTION_LABELS
from mika_voice.audio_decoding import StreamFormat
from mika_voice.pipeline import (
    ArrivalStamper, BoundedWorker, RealTimeMonitor, UtteranceRejected, VoicePipeline)
from mika_voice.segmentation import SegmenterConfig, UtteranceSegmenter

RATE = 16000
T0 = 1_700_000_000.0


@pytest.fixture(scope='module')
def classifier(voice_model_path):
    from mika_voice.voice_model import load_voice_model
    return load_voice_model(voice_model_path)


def make_pipeline(classifier):
    from mika_voice import features
    pipeline = VoicePipeline(None, UtteranceSegmenter(SegmenterConfig(running_hop_s=0.0)),
                             features.extract_features, classifier)
    pipeline.set_format(StreamFormat.from_fields(RATE, 1, 'S16LE'))
    return pipeline


def s16le(samples):
    return (np.clip(samples, -1, 1) * 32767).astype('<i2').tobytes()


def feed(pipeline, audio, t0=T0):
    utterances = []
    for start in range(0, audio.size, 1600):
        utterances += pipeline.accept_chunk(s16le(audio[start:start + 1600]),
                                            t0 + start / RATE).utterances
    return utterances


def test_real_clip_gives_one_calibrated_estimate_with_stage_times(classifier, ravdess_clip):
    pipeline = make_pipeline(classifier)
    utterances = feed(pipeline, np.concatenate([ravdess_clip, np.zeros(RATE, np.float32)]))
    assert len(utterances) == 1
    estimate = pipeline.classify(utterances[0])
    assert estimate.probabilities.shape == (len(EMOTION_LABELS),)
    assert estimate.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert estimate.label in EMOTION_LABELS
    assert estimate.times.features > 0 and estimate.times.inference > 0
    assert pipeline.normaliser.count == 1


def test_heavily_clipped_speech_is_not_classified(classifier, ravdess_clip):
    pipeline = make_pipeline(classifier)
    loud = np.clip(ravdess_clip * 30, -1, 1)
    utterances = feed(pipeline, np.concatenate([loud, np.zeros(RATE, np.float32)]))
    assert utterances
    with pytest.raises(UtteranceRejected) as error:
        pipeline.classify(utterances[0])
    assert error.value.reason == 'clipping'
    assert pipeline.normaliser.count == 0


def test_format_change_restarts_segmentation_and_keeps_indices(classifier, ravdess_clip):
    pipeline = make_pipeline(classifier)
    feed(pipeline, ravdess_clip[:int(1.5 * RATE)])  # speech under way
    assert pipeline.segmenter.in_speech
    position = pipeline.segmenter.buffer.end_index
    change = pipeline.set_format(StreamFormat.from_fields(48000, 2, 'S16LE'))
    assert change == 'S16LE 1 ch 16000 Hz (wave) -> S16LE 2 ch 48000 Hz (wave)'
    assert not pipeline.segmenter.in_speech
    assert pipeline.decoder.start_index == position
    assert pipeline.set_format(StreamFormat.from_fields(48000, 2, 'S16LE')) is None


def test_stamps_going_back_in_time_restart_segmentation(classifier, ravdess_clip):
    pipeline = make_pipeline(classifier)
    feed(pipeline, ravdess_clip[:int(1.5 * RATE)])
    utterances = feed(pipeline, np.concatenate([ravdess_clip, np.zeros(RATE, np.float32)]),
                      t0=T0 - 100.0)
    assert pipeline.time_jumps == 1
    assert len(utterances) == 1
    assert T0 - 100.0 < utterances[0].start_stamp < T0 - 99.0


def test_arrival_stamper_follows_continuity_and_resyncs_after_a_stall():
    stamper = ArrivalStamper(tolerance_s=0.25)
    assert stamper.stamp(10.1, 0.1) == pytest.approx(10.0)
    assert stamper.stamp(10.23, 0.1) == pytest.approx(10.1)   # jitter: continuity
    assert stamper.stamp(10.28, 0.1) == pytest.approx(10.2)   # early (burst): continuity
    assert stamper.stamp(15.0, 0.1) == pytest.approx(14.9)    # stall: arrival again
    assert stamper.resyncs == 1


def test_real_time_monitor_tells_a_burst_from_a_live_stream():
    live, burst = RealTimeMonitor(), RealTimeMonitor()
    for index in range(50):
        live.add(index * 0.1, 0.1)
        burst.add(index * 0.001, 1.0)
    assert live.factor(4.9) == pytest.approx(1.0, abs=0.05)
    assert burst.factor(0.049) > 40


def test_bounded_worker_drops_running_windows_first_and_says_so():
    gate = threading.Event()
    done = []
    worker = BoundedWorker(lambda item: (gate.wait(5), done.append(item)),
                           lambda item, error: None, max_pending=2,
                           is_expendable=lambda item: item.startswith('running'))
    try:
        worker.submit('final-0')          # taken by the thread, blocked on the gate
        time.sleep(0.1)
        assert worker.submit('running-1') is None
        assert worker.submit('final-2') is None
        assert worker.submit('final-3') == 'running-1'
        assert worker.submit('final-4') == 'final-2'
        assert worker.pending() == 2
        gate.set()
        assert worker.wait_idle(5)
        assert done == ['final-0', 'final-3', 'final-4']
    finally:
        worker.stop()
