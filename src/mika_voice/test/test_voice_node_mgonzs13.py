"""The voice node with the other audio_common_msgs (mgonzs13/audio_common): AudioStamped
with typed sample arrays and a PortAudio format in every message.

Runs where that package is the installed ``audio_common_msgs`` (skipped elsewhere; to run
it here, build github.com/mgonzs13/audio_common's audio_common_msgs into a colcon prefix
and source it instead of compat/audio_common_msgs).
"""
import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
audio_msgs = pytest.importorskip('audio_common_msgs.msg')
if not hasattr(audio_msgs, 'AudioStamped'):
    pytest.skip('the installed audio_common_msgs is ros-drivers\', not mgonzs13\'s',
                allow_module_level=True)

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402

from mika_common.ros_io import sec_to_stamp, stamp_to_sec  # noqa: E402
from mika_common.testing import spin_until  # noqa: E402
from mika_msgs.msg import EmotionResult  # noqa: E402

RATE = 16000
CHUNK = 512  # the capturer's default chunk
PA_INT16, PA_FLOAT32 = 8, 1
T0 = 1_700_000_500.0


def test_typed_audio_stamped_gives_results_and_bad_formats_are_counted(
        voice_model_path, ravdess_clip):
    from mika_voice.voice_node import FLAVOUR_MGONZS13, VoiceNode
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = VoiceNode(context=context, parameter_overrides=[
        Parameter('model_path', value=str(voice_model_path)),
        Parameter('running_hop_s', value=0.0)])
    probe = rclpy.create_node('voice_test_probe_mg', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(probe)
    results = []
    probe.create_subscription(EmotionResult, 'emotion/voice', results.append, 10)
    publisher = probe.create_publisher(audio_msgs.AudioStamped, 'audio',
                                       qos_profile_sensor_data)
    try:
        assert node.flavour == FLAVOUR_MGONZS13
        assert spin_until(executor, lambda: publisher.get_subscription_count() > 0, 10.0)

        def message(samples, stamp, fmt=PA_INT16):
            msg = audio_msgs.AudioStamped()
            msg.header.stamp = sec_to_stamp(stamp)
            msg.audio.info.format = fmt
            msg.audio.info.channels = 1
            msg.audio.info.rate = RATE
            msg.audio.info.chunk = CHUNK
            if fmt == PA_INT16:
                msg.audio.audio_data.int16_data = (samples * 32767).astype(np.int16).tolist()
            return msg

        publisher.publish(message(np.zeros(CHUNK, np.float32), T0 - 1, fmt=4))  # paInt24
        publisher.publish(message(np.zeros(CHUNK, np.float32), T0 - 1, fmt=PA_FLOAT32))
        clip = np.concatenate([ravdess_clip, np.zeros(RATE, np.float32)])
        for start in range(0, clip.size - CHUNK, CHUNK):
            publisher.publish(message(clip[start:start + CHUNK], T0 + start / RATE))
            # best effort, as the capturer publishes: paced at about 4x real time
            spin_until(executor, lambda: False, 0.008)
        assert spin_until(executor, lambda: len(results) >= 1, 20.0)
        start = stamp_to_sec(results[0].utterance_start) - T0
        assert 0.3 < start < 1.1
        rejected = node.diagnostics.rejected
        assert rejected.get('unknown_sample_format', 0) == 1
        assert rejected.get('format_mismatch', 0) == 1  # float32 announced, array empty
    finally:
        executor.remove_node(node)
        executor.remove_node(probe)
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)
