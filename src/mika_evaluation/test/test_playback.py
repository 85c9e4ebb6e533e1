"""The bag player's plan (ROS-free): recorded QoS kept, pacing, clear errors."""
import pytest

from mika_evaluation.bag_format import (
    AUDIO_INFO_TOPIC, AUDIO_TOPIC, CAMERA_TOPIC, TRUTH_TOPIC, BagError)
from mika_evaluation.offline import open_bag
from mika_evaluation.play_bag import main as play_bag_main
from mika_evaluation.playback import VOLATILE_DEPTH, Pacer, topic_plans


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_topics_keep_their_recorded_qos(small_bags, storage):
    bag, _ = small_bags[storage]
    reader = open_bag(bag)
    try:
        plans = {p.topic: p for p in topic_plans(reader.connections)}
        counts = {c.topic: c.msgcount for c in reader.connections}
    finally:
        reader.close()
    assert set(plans) == {CAMERA_TOPIC, AUDIO_TOPIC, AUDIO_INFO_TOPIC, TRUTH_TOPIC}
    info, camera, audio = plans[AUDIO_INFO_TOPIC], plans[CAMERA_TOPIC], plans[AUDIO_TOPIC]
    assert info.latched and info.reliable and info.depth == 1  # as a latching driver
    assert plans[TRUTH_TOPIC].latched
    assert not camera.latched and not camera.reliable  # recorded best effort
    assert audio.reliable and not audio.latched and audio.depth == VOLATILE_DEPTH
    assert {t: p.count for t, p in plans.items()} == counts


def test_only_the_topics_asked_for_and_a_missing_one_is_named(small_bags):
    bag, _ = small_bags['mcap']
    reader = open_bag(bag)
    try:
        assert [p.topic for p in topic_plans(reader.connections, [TRUTH_TOPIC])] == \
            [TRUTH_TOPIC]
        with pytest.raises(BagError, match='no topic /camera/compressed.*/audio_info'):
            topic_plans(reader.connections, ['/camera/compressed'])
    finally:
        reader.close()


def test_pacing_scales_bag_time_by_the_rate():
    pacer = Pacer(bag_start=1000.0, wall_start=5.0, rate=2.0)
    assert pacer.wall_time(1000.0) == 5.0
    assert pacer.wall_time(1010.0) == 10.0  # 10 s of bag in 5 s at 2x
    assert pacer.bag_time(10.0) == 1010.0
    with pytest.raises(ValueError, match='rate'):
        Pacer(0.0, 0.0, 0.0)


def test_a_missing_or_damaged_bag_stops_with_the_reason(tmp_path, small_bags, capsys):
    assert play_bag_main([str(tmp_path / 'nothing')]) == 2
    assert 'does not exist' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        play_bag_main([str(small_bags['mcap'][0]), '--rate', '0'])
    assert '--rate 0.0 is outside' in capsys.readouterr().err


def test_a_blocked_middleware_teardown_does_not_hang_the_player():
    # Fast DDS can block a writer's teardown on a subscriber that stopped reading; the
    # player gives up waiting after its timeout instead of hanging the script that ran it
    import threading
    import time

    rclpy = pytest.importorskip('rclpy')
    from rclpy.node import Node

    from mika_evaluation.play_bag import shut_down_within
    release = threading.Event()

    class BlockedTeardown(Node):
        def destroy_node(self):
            release.wait(30.0)
            return super().destroy_node()

    rclpy.init()
    node = BlockedTeardown('blocked_teardown')
    try:
        assert shut_down_within(node, 0.3) is False
    finally:
        release.set()
    deadline = time.monotonic() + 10.0
    while rclpy.ok() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not rclpy.ok()  # once unblocked, the teardown finished in its thread


def test_a_hold_delays_what_follows_by_its_length():
    pacer = Pacer(bag_start=1000.0, wall_start=5.0, rate=2.0)
    pacer.hold(3.0)
    assert pacer.wall_time(1010.0) == 13.0
    assert pacer.bag_time(8.0) == 1000.0


def test_holding_for_results_needs_the_bag_clock(small_bags, capsys):
    with pytest.raises(SystemExit):
        play_bag_main([str(small_bags['mcap'][0]), '--wait-for-results', 'emotion/face'])
    assert '--wait-for-results needs --clock' in capsys.readouterr().err
