"""The voice node in process: real speech chunks in, EmotionResult with sensor stamps out.

A publisher node plays a real RAVDESS sentence as audio_capture would (AudioInfo latched,
AudioDataStamped in 100 ms S16LE chunks, stamped with their first sample); malformed
chunks in between are counted and the node carries on.
"""
import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
audio_msgs = pytest.importorskip('audio_common_msgs.msg')
if not hasattr(audio_msgs, 'AudioDataStamped'):
    pytest.skip('these tests publish ros-drivers audio_common_msgs', allow_module_level=True)

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from mika_common.emotions import EMOTION_LABELS  # noqa: E402
from mika_common.ros_io import latched_qos, sec_to_stamp, stamp_to_sec  # noqa: E402
from mika_common.testing import spin_until  # noqa: E402
from mika_msgs.msg import EmotionResult  # noqa: E402

RATE = 16000
T0 = 1_700_000_123.5
CHUNK = 1600


def speech_onset(clip):
    frames = clip[:clip.size // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12)
    return np.flatnonzero(level > level.max() - 30)[0] * 0.01


@pytest.fixture()
def graph(voice_model_path, request):
    from mika_voice.voice_node import VoiceNode
    context = rclpy.context.Context()
    rclpy.init(context=context)
    extra = getattr(request, 'param', {})
    node = VoiceNode(context=context, parameter_overrides=[
        Parameter('model_path', value=str(voice_model_path)),
        Parameter('running_hop_s', value=0.0)]
        + [Parameter(name, value=value) for name, value in extra.items()])
    probe = rclpy.create_node('voice_test_probe', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(probe)
    results = []
    probe.create_subscription(EmotionResult, 'emotion/voice', results.append, 10)
    publishers = {
        'info': probe.create_publisher(audio_msgs.AudioInfo, 'audio_info', latched_qos()),
        'stamped': probe.create_publisher(audio_msgs.AudioDataStamped, 'audio_stamped', 50),
        'plain': probe.create_publisher(audio_msgs.AudioData, 'audio', 50),
    }
    yield node, executor, publishers, results
    executor.remove_node(node)
    executor.remove_node(probe)
    executor.shutdown()
    node.destroy_node()
    probe.destroy_node()
    rclpy.shutdown(context=context)


def s16le(samples):
    return (np.clip(samples, -1, 1) * 32767).astype('<i2').tobytes()


def play(executor, publisher, clip, t0, malformed_every=0, plain_publisher=None):
    """Publish the clip in 100 ms chunks (a bit faster than real time); with
    ``plain_publisher`` also as AudioData, as audio_capture does."""
    for index, start in enumerate(range(0, clip.size, CHUNK)):
        msg = audio_msgs.AudioDataStamped()
        msg.header.stamp = sec_to_stamp(t0 + start / RATE)
        msg.header.frame_id = 'test_mic'
        msg.audio.data = s16le(clip[start:start + CHUNK])
        publisher.publish(msg)
        if plain_publisher is not None:
            plain_publisher.publish(msg.audio)
        if malformed_every and index % malformed_every == 0:
            bad = audio_msgs.AudioDataStamped()
            bad.header.stamp = msg.header.stamp
            bad.audio.data = b'\x01' * 333  # not whole S16LE frames
            publisher.publish(bad)
        executor.spin_once(timeout_sec=0.02)


def test_real_speech_gives_a_result_stamped_with_its_first_sample(graph, ravdess_clip):
    node, executor, publishers, results = graph
    publishers['info'].publish(audio_msgs.AudioInfo(
        channels=1, sample_rate=RATE, sample_format='S16LE', bitrate=0, coding_format='wave'))
    assert spin_until(executor, lambda: publishers['stamped'].get_subscription_count() > 0
                      and node._info_format is not None, 10.0)
    clip = np.concatenate([ravdess_clip, np.zeros(RATE, np.float32)])
    play(executor, publishers['stamped'], clip, T0, malformed_every=10,
         plain_publisher=publishers['plain'])  # both topics: the stamped one is used
    assert spin_until(executor, lambda: len(results) >= 1, 20.0), 'no EmotionResult'
    result = results[0]
    onset = speech_onset(ravdess_clip)
    start = stamp_to_sec(result.utterance_start)
    assert stamp_to_sec(result.header.stamp) == pytest.approx(start, abs=1e-6)
    # the utterance may begin with the breath before the sentence (test_segmentation.py)
    assert onset - 0.6 <= start - T0 <= onset + 0.05
    assert start < stamp_to_sec(result.utterance_end) <= T0 + ravdess_clip.size / RATE + 0.5
    assert result.header.frame_id == 'test_mic'
    assert result.modality == EmotionResult.MODALITY_VOICE and result.track_id == -1
    assert list(result.label_names) == list(EMOTION_LABELS)
    assert sum(result.probabilities) == pytest.approx(1.0, abs=1e-4)
    assert result.label == EMOTION_LABELS[int(np.argmax(result.probabilities))]
    assert result.model_id
    assert len(results) == 1
    rejected = node.diagnostics.rejected
    assert rejected.get('partial_frame', 0) == len(range(0, clip.size, CHUNK * 10))


def test_mp3_info_is_refused_and_nothing_is_published(graph, ravdess_clip):
    node, executor, publishers, results = graph
    publishers['info'].publish(audio_msgs.AudioInfo(
        channels=1, sample_rate=RATE, sample_format='S16LE', bitrate=192,
        coding_format='mp3'))
    assert spin_until(executor, lambda: node.diagnostics.rejected.get('mp3', 0) > 0, 10.0)
    play(executor, publishers['stamped'], ravdess_clip[:RATE], T0)
    spin_until(executor, lambda: False, 0.5)
    assert results == []
    assert node.diagnostics.rejected.get('no_usable_format', 0) > 0


def test_sample_rate_change_mid_stream_is_followed(graph, ravdess_clip):
    """16 kHz, then the info switches to 48 kHz: counted, and the 48 kHz speech is heard."""
    import soxr
    node, executor, publishers, results = graph
    info = audio_msgs.AudioInfo(channels=1, sample_rate=RATE, sample_format='S16LE',
                                bitrate=0, coding_format='wave')
    publishers['info'].publish(info)
    assert spin_until(executor, lambda: node._info_format is not None
                      and publishers['stamped'].get_subscription_count() > 0, 10.0)
    play(executor, publishers['stamped'], np.zeros(RATE // 2, np.float32), T0)
    spin_until(executor, lambda: node.diagnostics.window.totals.get('chunks', 0) >= 5, 5.0)
    info.sample_rate = 48000
    publishers['info'].publish(info)
    assert spin_until(executor, lambda: node.diagnostics.window.totals.get(
        'format_changes', 0) == 1, 10.0)
    clip48 = soxr.resample(np.concatenate([ravdess_clip, np.zeros(RATE, np.float32)]),
                           RATE, 48000).astype(np.float32)
    t1 = T0 + 10.0
    for start in range(0, clip48.size, 4800):
        msg = audio_msgs.AudioDataStamped()
        msg.header.stamp = sec_to_stamp(t1 + start / 48000)
        msg.audio.data = s16le(clip48[start:start + 4800])
        publishers['stamped'].publish(msg)
        executor.spin_once(timeout_sec=0.02)
    assert spin_until(executor, lambda: len(results) >= 1, 20.0)
    start = stamp_to_sec(results[0].utterance_start) - t1
    onset = speech_onset(ravdess_clip)
    assert onset - 0.6 <= start <= onset + 0.05


def test_malformed_chunks_are_counted_and_the_node_carries_on(graph, ravdess_clip):
    """F32LE stream: NaN, bytes of another format, a partial frame, clipping; then speech."""
    node, executor, publishers, results = graph
    publishers['info'].publish(audio_msgs.AudioInfo(
        channels=1, sample_rate=RATE, sample_format='F32LE', bitrate=0, coding_format='wave'))
    assert spin_until(executor, lambda: node._info_format is not None
                      and publishers['stamped'].get_subscription_count() > 0, 10.0)
    speech = ravdess_clip[RATE:RATE + CHUNK].copy()
    with_nan = speech.copy()
    with_nan[7] = np.nan
    loud = np.clip(speech * 50, -1.0, 1.0)
    bad_chunks = [with_nan.astype('<f4').tobytes(),      # NaN
                  s16le(np.tile(speech, 2)),              # S16LE bytes announced as F32LE
                  speech.astype('<f4').tobytes()[:-2],    # not whole frames
                  loud.astype('<f4').tobytes()]           # full-scale clipping (decoded)
    for index, data in enumerate(bad_chunks):
        msg = audio_msgs.AudioDataStamped()
        msg.header.stamp = sec_to_stamp(T0 + index * 0.1)
        msg.audio.data = data
        publishers['stamped'].publish(msg)
    assert spin_until(executor, lambda: sum(node.diagnostics.rejected.values()) >= 3
                      and node.diagnostics.window.totals.get('clipped_samples', 0) > 0, 10.0)
    rejected = node.diagnostics.rejected
    assert rejected.get('not_finite', 0) >= 1
    assert rejected.get('partial_frame', 0) == 1
    assert rejected.get('format_mismatch', 0) + rejected.get('not_finite', 0) == 2
    t1 = T0 + 20.0
    clip = np.concatenate([ravdess_clip, np.zeros(RATE, np.float32)])
    for start in range(0, clip.size, CHUNK):
        msg = audio_msgs.AudioDataStamped()
        msg.header.stamp = sec_to_stamp(t1 + start / RATE)
        msg.audio.data = clip[start:start + CHUNK].astype('<f4').tobytes()
        publishers['stamped'].publish(msg)
        executor.spin_once(timeout_sec=0.02)
    assert spin_until(executor, lambda: len(results) >= 1, 20.0)
    assert stamp_to_sec(results[-1].utterance_start) > t1


@pytest.mark.parametrize('graph', [{'input': 'plain'}], indirect=True)
def test_plain_audio_is_stamped_by_arrival_less_buffered_audio(graph, ravdess_clip):
    """AudioData has no header: the first sample's stamp is its arrival less the audio
    that came with and after it, paced here in real time."""
    node, executor, publishers, results = graph
    assert spin_until(executor, lambda: publishers['plain'].get_subscription_count() > 0, 10.0)
    onset = speech_onset(ravdess_clip)
    lead = int((onset - 0.5) * RATE)
    clip = np.concatenate([ravdess_clip[lead:], np.zeros(RATE, np.float32)])
    clock = node.get_clock()
    first_sent = None
    for start in range(0, clip.size, CHUNK):
        due = (first_sent or 0.0) + start / RATE
        while first_sent is not None and clock.now().nanoseconds * 1e-9 < due:
            executor.spin_once(timeout_sec=0.005)
        now = clock.now().nanoseconds * 1e-9
        if first_sent is None:
            first_sent = now
        publishers['plain'].publish(audio_msgs.AudioData(data=s16le(clip[start:start + CHUNK])))
    assert spin_until(executor, lambda: len(results) >= 1, 20.0)
    # the first chunk covers [sent - 0.1 s, sent): the sentence begins 0.5 s into the clip
    expected_onset = first_sent - CHUNK / RATE + 0.5
    start = stamp_to_sec(results[0].utterance_start)
    assert expected_onset - 0.5 <= start <= expected_onset + 0.15
    assert results[0].header.frame_id == 'microphone'


def test_burst_far_above_real_time_is_flagged_and_memory_stays_bounded(graph, ravdess_clip):
    """Two minutes of audio (speech every 20 s) published as fast as possible."""
    node, executor, publishers, results = graph
    publishers['info'].publish(audio_msgs.AudioInfo(
        channels=1, sample_rate=RATE, sample_format='S16LE', bitrate=0, coding_format='wave'))
    assert spin_until(executor, lambda: publishers['stamped'].get_subscription_count() > 0
                      and node._info_format is not None, 10.0)
    block = np.zeros(20 * RATE, np.float32)
    block[RATE:RATE + ravdess_clip.size] = ravdess_clip
    audio = np.tile(block, 6)
    for start in range(0, audio.size, CHUNK):
        msg = audio_msgs.AudioDataStamped()
        msg.header.stamp = sec_to_stamp(T0 + start / RATE)
        msg.audio.data = s16le(audio[start:start + CHUNK])
        publishers['stamped'].publish(msg)
        executor.spin_once(timeout_sec=0)
    totals = node.diagnostics.window.totals
    assert spin_until(executor, lambda: totals.get('chunks', 0) + totals.get('gaps', 0) > 0
                      and len(results) + node.diagnostics.rejected.get('classifier_busy', 0)
                      >= 1, 20.0)
    node._worker.wait_idle(20.0)
    spin_until(executor, lambda: False, 0.5)
    assert totals.get('burst_chunks', 0) > 0
    # chunks the transport lost in the burst show up as counted gaps, never silently
    sent = len(range(0, audio.size, CHUNK))
    assert totals['chunks'] == sent or totals.get('gaps', 0) > 0
    # every utterance heard is either published or counted as dropped: nothing silent
    heard = totals.get('utterances', 0)
    assert heard >= 1
    assert len(results) + node.diagnostics.rejected.get('classifier_busy', 0) == heard
    assert node.pipeline.segmenter.buffer.capacity <= 10 * RATE
    assert node._worker.pending() == 0


def test_runtime_parameter_changes_are_validated_and_applied(graph):
    node, executor, publishers, results = graph
    refused = node.set_parameters([Parameter('max_utterance_s', value=2.0)])[0]
    assert not refused.successful and 'running_window_s' in refused.reason
    refused = node.set_parameters([Parameter('coding_format', value='mp3')])[0]
    assert not refused.successful and 'format:=wave' in refused.reason
    assert node.pipeline.decoder.format.coding_format == 'wave'
    before = node.pipeline.segmenter
    accepted = node.set_parameters([Parameter('vad', value='energy'),
                                    Parameter('hangover_s', value=0.6)])
    assert all(result.successful for result in accepted)
    assert node.pipeline.segmenter is not before
    assert node.pipeline.segmenter.config.vad == 'energy'
    assert node.pipeline.segmenter.config.hangover_ms == 600
    assert node.set_parameters([Parameter('sample_rate', value=48000)])[0].successful
    assert node.pipeline.decoder.format.sample_rate == 48000


@pytest.mark.parametrize('content', [None, b'not a zip archive', b'PK\x03\x04broken'])
def test_missing_or_corrupt_model_refuses_to_start_naming_path_and_training(
        tmp_path, content):
    from mika_voice.voice_node import VoiceNode
    path = tmp_path / 'voice_emotion.keras'
    if content is not None:
        path.write_bytes(content)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(RuntimeError) as error:
            VoiceNode(context=context,
                      parameter_overrides=[Parameter('model_path', value=str(path))])
        assert str(path) in str(error.value)
        assert 'train_voice' in str(error.value)
    finally:
        rclpy.shutdown(context=context)


def test_model_path_change_at_runtime_loads_first_and_keeps_the_old_model_on_failure(
        graph, ravdess_clip, voice_model_path, second_voice_model_path, tmp_path):
    node, executor, publishers, results = graph
    publishers['info'].publish(audio_msgs.AudioInfo(
        channels=1, sample_rate=RATE, sample_format='S16LE', bitrate=0, coding_format='wave'))
    assert spin_until(executor, lambda: publishers['stamped'].get_subscription_count() > 0
                      and node._info_format is not None, 10.0)
    clip = np.concatenate([ravdess_clip, np.zeros(RATE, np.float32)])
    first_model = node.model_id

    def model_of_next_result(t0):
        count = len(results)
        play(executor, publishers['stamped'], clip, t0)
        assert spin_until(executor, lambda: len(results) > count, 20.0), 'no EmotionResult'
        assert sum(results[-1].probabilities) == pytest.approx(1.0, abs=1e-4)
        return results[-1].model_id

    corrupt = tmp_path / 'corrupt.keras'
    corrupt.write_bytes(b'PK\x03\x04broken')
    for bad in (str(tmp_path / 'absent.keras'), str(corrupt)):
        outcome = node.set_parameters([Parameter('model_path', value=bad)])[0]
        # the reason is VoiceModelError's: the file, what is wrong, how to train a model
        assert not outcome.successful and bad in outcome.reason
        assert 'train_voice' in outcome.reason
        assert node.get_parameter('model_path').value == str(voice_model_path)
    assert model_of_next_result(T0) == first_model
    outcome = node.set_parameters([Parameter('model_path', value=second_voice_model_path)])[0]
    assert outcome.successful
    assert node.pipeline.classifier.metadata.model_id == 'test-second-voice'
    assert model_of_next_result(T0 + 10.0) == 'test-second-voice'
    assert node.diagnostics.rejected == {}


def test_model_files_with_bad_metadata_are_refused_at_runtime_and_at_start(
        graph, voice_model_path, tmp_path):
    """A mika.json of '[]', of 'null', or with a corrupt deflate stream: once
    AttributeError / zlib.error, which escaped the loaders and killed the node."""
    import zipfile

    from mika_common.testing import with_metadata_entry
    from mika_voice.voice_node import VoiceNode
    node = graph[0]
    with zipfile.ZipFile(voice_model_path) as archive:
        good = archive.read('mika.json')
    bad_files = [str(with_metadata_entry(voice_model_path, tmp_path / name, payload,
                                         corrupt_deflate=corrupt))
                 for name, payload, corrupt in (('list.keras', b'[]', False),
                                                ('null.keras', b'null', False),
                                                ('deflate.keras', good, True))]
    first_model = node.model_id
    for bad in bad_files:
        outcome = node.set_parameters([Parameter('model_path', value=bad)])[0]
        assert not outcome.successful and bad in outcome.reason
        assert 'train_voice' in outcome.reason
        assert node.get_parameter('model_path').value == str(voice_model_path)
    assert node.model_id == first_model
    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        for bad in bad_files:
            with pytest.raises(RuntimeError) as error:
                VoiceNode(context=context, parameter_overrides=[Parameter('model_path',
                                                                          value=bad)])
            assert bad in str(error.value) and 'train_voice' in str(error.value)
    finally:
        rclpy.shutdown(context=context)
