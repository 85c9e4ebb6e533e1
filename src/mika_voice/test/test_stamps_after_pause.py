"""Audio that stops for 30-60 s and starts again: every result lies within the audio that
produced it (issue 13: results stamped from before the pause, rejected by fusion as old).

The stream is real RAVDESS speech sent as ``audio_capture`` sends it: 10 ms chunks of S16LE
(alsasrc's default latency-time), on ``audio_stamped`` stamped with the first sample, or on
plain ``audio`` stamped on arrival. Stretches cover what went wrong: speech at once when
the audio restarts (the onset padding reached back before the pause), the stream stopping
mid-sentence and speech going on at the restart (one utterance, and its running windows,
spanning the pause). Pauses are stamps, and ROS time for plain audio: no test sleeps 30 s.
"""
from typing import List, NamedTuple

import numpy as np
import pytest

from mika_voice.audio_decoding import StreamFormat
from mika_voice.pipeline import ArrivalStamper, VoicePipeline
from mika_voice.segmentation import SegmenterConfig, UtteranceSegmenter

RATE = 16000
CHUNK = 160             # samples: 320 bytes of S16LE mono, 10 ms
T0 = 1_700_000_321.25
LATENCY_S = 0.004       # plain audio: capture to arrival
PLAIN_TOLERANCE_S = 0.1  # arrival stamps are late by the latency, jitter and batching


class Stretch(NamedTuple):
    """Audio sent without a break, its first sample taken at ``t0``."""

    t0: float
    audio: np.ndarray

    @property
    def t1(self) -> float:
        return self.t0 + self.audio.size / RATE


def silence(seconds):
    return np.zeros(int(seconds * RATE), np.float32)


@pytest.fixture(scope='module')
def stretches(ravdess_clip) -> List[Stretch]:
    """Four stretches 30, 45 and 60 s apart."""
    sentence = ravdess_clip[int(0.95 * RATE):int(2.9 * RATE)]  # 70 ms before the onset
    cut = int(1.2 * RATE)
    audio = [
        # a sentence said twice without a pause (running windows), then silence
        np.concatenate([silence(0.5), sentence, sentence, silence(1.0)]),
        # speech at once when the audio starts
        np.concatenate([sentence, silence(1.0)]),
        # the driver stops in mid-sentence ...
        np.concatenate([silence(0.3), sentence, sentence[:cut]]),
        # ... and the speaker is still talking when it starts again
        np.concatenate([sentence[cut:], sentence, silence(1.0)]),
    ]
    result, t0 = [], T0
    for piece, pause in zip(audio, (30.0, 45.0, 60.0, 0.0)):
        result.append(Stretch(t0, piece))
        t0 += piece.size / RATE + pause
    return result


def s16le(samples):
    return (np.clip(samples, -1, 1) * 32767).astype('<i2').tobytes()


def as_received(samples):
    """What the node decodes from ``s16le(samples)``."""
    return np.frombuffer(s16le(samples), '<i2').astype(np.float32) / 32768.0


def chunks(stretch, rate=RATE):
    """(first sample's stamp, arrival time, bytes) of each 10 ms chunk of ``stretch``,
    captured at ``rate``."""
    audio = stretch.audio
    if rate != RATE:
        import soxr
        audio = soxr.resample(audio, RATE, rate).astype(np.float32)
    size = CHUNK * rate // RATE
    for start in range(0, audio.size, size):
        piece = audio[start:start + size]
        yield (stretch.t0 + start / rate, stretch.t0 + (start + piece.size) / rate + LATENCY_S,
               s16le(piece))


def stretch_of(start, end, stretches, tolerance):
    """The stretch that holds [start, end] (None: the span leaves the audio sent)."""
    for stretch in stretches:
        if stretch.t0 - tolerance <= start < end <= stretch.t1 + tolerance:
            return stretch
    return None


def check_spans(spans, stretches, tolerance):
    """Each (start, end) lies within one stretch, and each stretch gave one at least."""
    outside = [f'{start - T0:.2f}..{end - T0:.2f}' for start, end in spans
               if stretch_of(start, end, stretches, tolerance) is None]
    assert not outside, (f'spans outside the audio sent (T0 + s): {outside}; audio sent: '
                         f'{[f"{s.t0 - T0:.2f}..{s.t1 - T0:.2f}" for s in stretches]}')
    for stretch in stretches:
        assert any(stretch_of(start, end, [stretch], tolerance) for start, end in spans), \
            f'nothing heard in the stretch at T0 + {stretch.t0 - T0:.2f} s'


class _NoModel:
    """Segmentation needs no classifier; the pipeline asks only for a normaliser."""

    def new_stream_normaliser(self):
        return None


@pytest.mark.parametrize('stamped, rate', [(True, RATE), (False, RATE), (True, 48000)],
                         ids=['audio_stamped', 'audio', 'audio_stamped_48kHz'])
def test_pipeline_stamps_lie_within_the_audio_across_pauses(stretches, stamped, rate):
    """VoicePipeline as the node drives it: sensor stamps, or arrival times (late by a
    latency and up to 30 ms of jitter) through the node's ArrivalStamper; at 48 kHz the
    resampler holds the end of each stretch until the next one comes."""
    pipeline = VoicePipeline(None, UtteranceSegmenter(SegmenterConfig()), None, _NoModel())
    pipeline.set_format(StreamFormat.from_fields(rate, 1, 'S16LE'))
    stamper = ArrivalStamper()
    rng = np.random.default_rng(13)
    utterances = []
    for stretch in stretches:
        for stamp, arrival, data in chunks(stretch, rate):
            if not stamped:
                arrival += float(rng.uniform(0.0, 0.03))
                stamp = stamper.stamp(arrival, CHUNK / RATE)
            utterances += pipeline.accept_chunk(data, stamp).utterances
    tolerance = 1.0 / RATE if stamped else PLAIN_TOLERANCE_S
    check_spans([(u.start_stamp, u.end_stamp) for u in utterances], stretches, tolerance)
    assert any(u.running for u in utterances), 'no running window: long speech untested'
    if stamped and rate == RATE:  # the stamps name the very samples the utterance holds
        for utterance in utterances:
            stretch = stretch_of(utterance.start_stamp, utterance.end_stamp, stretches,
                                 tolerance)
            offset = int(round((utterance.start_stamp - stretch.t0) * RATE))
            expected = as_received(stretch.audio)[offset:offset + utterance.samples.size]
            np.testing.assert_array_equal(utterance.samples, expected)


# ------------------------------------------------------------- the node, in process
rclpy = pytest.importorskip('rclpy')
audio_msgs = pytest.importorskip('audio_common_msgs.msg')


@pytest.fixture()
def voice_graph(voice_model_path, request):
    """voice_node with its default segmentation (running windows on) and a probe node
    that plays the microphone and, for plain audio, the ROS clock (use_sim_time)."""
    if not hasattr(audio_msgs, 'AudioDataStamped'):
        pytest.skip('these tests publish ros-drivers audio_common_msgs')
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from mika_msgs.msg import EmotionResult
    from mika_voice.voice_node import VoiceNode
    input_topic = request.param
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = VoiceNode(context=context, parameter_overrides=[
        Parameter('model_path', value=str(voice_model_path)),
        Parameter('input', value=input_topic),
        Parameter('use_sim_time', value=input_topic == 'plain'),
        Parameter('max_pending_utterances', value=20)])
    probe = rclpy.create_node('voice_pause_probe', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(probe)
    results = []
    probe.create_subscription(EmotionResult, 'emotion/voice', results.append, 50)
    yield node, probe, executor, results
    executor.remove_node(node)
    executor.remove_node(probe)
    executor.shutdown()
    node.destroy_node()
    probe.destroy_node()
    rclpy.shutdown(context=context)


@pytest.mark.parametrize('voice_graph', ['stamped', 'plain'], indirect=True)
def test_node_results_lie_within_the_audio_across_pauses(voice_graph, stretches):
    """The same stretches through voice_node; for plain audio the ROS clock (sim time)
    jumps over each pause and chunks arrive five at a time, at the last one's capture
    time plus a latency."""
    from rosgraph_msgs.msg import Clock
    from mika_common.ros_io import sec_to_stamp, stamp_to_sec
    from mika_common.testing import spin_until
    node, probe, executor, results = voice_graph
    stamped = node.params['input'] == 'stamped'
    if stamped:
        publisher = probe.create_publisher(audio_msgs.AudioDataStamped, 'audio_stamped', 50)
    else:
        publisher = probe.create_publisher(audio_msgs.AudioData, 'audio', 50)
        clock = probe.create_publisher(Clock, '/clock', 1)
    assert spin_until(executor, lambda: publisher.get_subscription_count() > 0, 10.0)
    totals = node.diagnostics.window.totals
    sent = 0
    for stretch in stretches:
        stretch_chunks = list(chunks(stretch))
        for first in range(0, len(stretch_chunks), 5):
            batch = stretch_chunks[first:first + 5]
            if not stamped:
                now = sec_to_stamp(batch[-1][1])
                clock.publish(Clock(clock=now))
                assert spin_until(executor, lambda: node.get_clock().now().to_msg() == now,
                                  5.0), 'the node did not take up the ROS clock'
            for stamp, _, data in batch:
                if stamped:
                    msg = audio_msgs.AudioDataStamped()
                    msg.header.stamp = sec_to_stamp(stamp)
                    msg.audio.data = data
                else:
                    msg = audio_msgs.AudioData(data=data)
                publisher.publish(msg)
            sent += len(batch)
            assert spin_until(executor, lambda: totals.get('chunks', 0) >= sent, 5.0)
        node._worker.wait_idle(30.0)  # the pause
    heard = totals.get('utterances', 0) + totals.get('running_windows', 0)
    assert spin_until(executor, lambda: len(results) >= heard, 10.0)
    assert node.diagnostics.rejected == {}
    assert totals.get('running_windows', 0) > 0, 'no running window: long speech untested'
    tolerance = 1.0 / RATE if stamped else PLAIN_TOLERANCE_S
    check_spans([(stamp_to_sec(r.utterance_start), stamp_to_sec(r.utterance_end))
                 for r in results], stretches, tolerance)
    for result in results:
        assert result.header.stamp == result.utterance_start
