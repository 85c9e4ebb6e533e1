"""The sample player's microphone keeps to the clock when its timer is late, as a real
driver's does: its audio stamps count samples, so a skipped tick must not make them lag."""
import time

import pytest

from mika_bringup.sample_player import chunks_due

rclpy = pytest.importorskip('rclpy')


def test_chunks_due_counts_whole_chunks_recorded_and_not_sent():
    assert chunks_due(0.05, 0, 1600, 16000) == 0
    assert chunks_due(0.1, 0, 1600, 16000) == 1
    assert chunks_due(1.05, 1600, 1600, 16000) == 9   # nine ticks missed: a burst
    assert chunks_due(0.1, 3200, 1600, 16000) == 0    # never negative


def test_audio_stamps_stay_on_the_clock_after_the_executor_stalled():
    from audio_common_msgs.msg import AudioDataStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from mika_bringup.sample_player import SamplePlayer
    from mika_common.ros_io import stamp_to_sec
    from mika_common.testing import spin_until
    context = rclpy.context.Context()
    rclpy.init(context=context)
    player = SamplePlayer(context=context, parameter_overrides=[
        Parameter('loop', value=True), Parameter('fps', value=1.0)])
    probe = rclpy.create_node('sample_player_probe', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(player)
    executor.add_node(probe)
    stamps = []
    probe.create_subscription(AudioDataStamped, 'audio_stamped',
                              lambda msg: stamps.append(stamp_to_sec(msg.header.stamp)), 100)
    try:
        assert spin_until(executor, lambda: len(stamps) >= 3, 10.0)
        time.sleep(1.5)  # the executor stalls: about 15 timer ticks are missed
        spin_until(executor, lambda: False, 0.5)
        now = player.get_clock().now().nanoseconds * 1e-9
    finally:
        executor.shutdown()
        player.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)
    chunk_s = player.params['chunk_s']
    steps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    assert steps == pytest.approx([chunk_s] * len(steps), abs=1e-6), 'audio has a gap'
    # the newest chunk ended at most a tick (and a little scheduling) before now
    assert now - (stamps[-1] + chunk_s) < 2 * chunk_s, \
        f'audio stamps lag the clock by {now - stamps[-1] - chunk_s:.2f} s'
