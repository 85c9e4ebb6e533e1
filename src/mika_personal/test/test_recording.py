"""Recording sessions: the writer, media import and the recorder node, all read back with
rosbags as any rosbag2 tool would read them.

Media are real: frames of a real face (``mika_perception.sample_frames``) and a real
RAVDESS sentence from the shared data (tests that need it skip when it is absent).
"""
import csv
import os
import pathlib
import re

import cv2
import numpy as np
import pytest

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation.bag_format import (
    Interval, intervals_from_label_messages, make_typestore, read_truth_csv)
from mika_perception.sample_frames import face_frame
from mika_personal import import_media
from mika_personal.session_writer import (
    INCOMPLETE_DIR, SessionWriter, write_session)
from mika_personal.sessions import SessionError, SessionInfo, find_sessions, session_paths

REPO = pathlib.Path(__file__).resolve().parents[3]


def data_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get('MIKA_DATA', REPO.parent / 'shared' / 'data'))


@pytest.fixture(scope='module')
def speech():
    """(samples float32 16 kHz mono, rate) of one real RAVDESS sentence."""
    import soundfile
    table = data_dir() / 'ravdess' / 'labels.csv'
    if not table.is_file():
        pytest.skip(f'RAVDESS not found at {table} (set MIKA_DATA to the shared data folder)')
    with open(table, newline='') as handle:
        row = next(r for r in csv.DictReader(handle) if r['label'] == 'happy')
    samples, rate = soundfile.read(table.parent / row['path'], dtype='float32')
    return samples, rate


@pytest.fixture(scope='module')
def frames():
    """Real face frames, the face a little further right in each (distinct pixels)."""
    return [face_frame(320, 240, face_side=160, x=40 + 4 * i, y=40) for i in range(8)]


def read_bag(bag: pathlib.Path):
    """{topic: [(bag time s, message)]} and {topic: type} of a rosbag2 bag."""
    from rosbags.rosbag2 import Reader
    typestore = make_typestore()
    messages, types = {}, {}
    with Reader(bag) as reader:
        assert list(bag.glob('*.mcap'))
        for connection in reader.connections:
            types[connection.topic] = connection.msgtype
        for connection, timestamp, raw in reader.messages():
            messages.setdefault(connection.topic, []).append(
                (timestamp * 1e-9, typestore.deserialize_cdr(raw, connection.msgtype)))
        start = reader.start_time * 1e-9
    return messages, types, start


def pcm(messages) -> np.ndarray:
    return np.concatenate([np.frombuffer(bytes(m.audio.data), '<i2') for _, m in messages])


# ----------------------------------------------------------------------------- writer
def test_a_written_session_reads_back_whole(tmp_path, frames, speech):
    samples, rate = speech
    intervals = [Interval(0.3, 1.2, 'happy'), Interval(1.2, 2.0, 'sad'),
                 Interval(2.4, 3.0, 'angry')]
    folder = write_session(tmp_path, 'alice-1', 'alice', intervals,
                           frames=(frames[i % len(frames)] for i in range(45)), fps=15.0,
                           audio=samples[:3 * rate], sample_rate=rate)
    assert folder == tmp_path / 'alice-1'
    assert find_sessions([tmp_path]) == [folder]
    assert not (tmp_path / INCOMPLETE_DIR).exists()
    bag, labels = session_paths(folder)
    info = SessionInfo.read(folder)
    assert (info.person, info.source, info.partial) == ('alice', 'media', False)
    assert info.topics == {'camera': '/camera/image_raw', 'audio': '/audio_stamped',
                           'audio_info': '/audio_info', 'truth': '/emotion/ground_truth'}

    messages, types, start = read_bag(bag)
    assert types == {'/camera/image_raw': 'sensor_msgs/msg/Image',
                     '/audio_stamped': 'audio_common_msgs/msg/AudioDataStamped',
                     '/audio_info': 'audio_common_msgs/msg/AudioInfo',
                     '/emotion/ground_truth': 'std_msgs/msg/String'}
    assert len(messages['/camera/image_raw']) == 45
    assert len(messages['/audio_stamped']) == 30  # 3 s in 100 ms chunks
    info_msg = messages['/audio_info'][0][1]
    assert (info_msg.sample_rate, info_msg.channels, info_msg.sample_format) == (
        rate, 1, 'S16LE')
    time_3, image = messages['/camera/image_raw'][3]
    assert image.encoding == 'bgr8' and (image.width, image.height) == (320, 240)
    assert np.array_equal(image.data.reshape(240, 320, 3), frames[3])
    assert time_3 - start == pytest.approx(3 / 15.0, abs=1e-6)
    expected = np.clip(np.round(samples[:3 * rate] * 32768), -32768, 32767).astype('<i2')
    assert np.array_equal(pcm(messages['/audio_stamped']), expected)
    stamp = messages['/audio_stamped'][1][1].header.stamp
    assert stamp.sec + stamp.nanosec * 1e-9 - start == pytest.approx(0.1, abs=1e-6)

    from_csv = read_truth_csv(labels, 0.0)
    assert [(i.start, i.end, i.label) for i in from_csv] == [
        (pytest.approx(i.start), pytest.approx(i.end), i.label) for i in intervals]
    truth = [(t, m.data) for t, m in messages['/emotion/ground_truth']]
    from_topic = intervals_from_label_messages(truth, start + 3.0)
    assert [(i.start - start, i.end - start, i.label) for i in from_topic] == [
        (pytest.approx(i.start, abs=1e-6), pytest.approx(i.end, abs=1e-6), i.label)
        for i in intervals]


def test_the_live_writing_order_and_jpeg_frames(tmp_path, frames, speech):
    """Messages as a recorder writes them: labels last, with earlier times, and stereo
    S16LE bytes passed through."""
    samples, rate = speech
    stereo = np.round(np.stack([samples[:rate], -samples[:rate]], axis=1) * 32767
                      ).astype('<i2')
    with SessionWriter(tmp_path, 'bob-live', 'bob', 'live', image_storage='jpeg') as writer:
        writer.set_audio_format(100.0, rate, 2)
        for index in range(10):
            writer.add_frame(100.0 + index * 0.1, frames[index % len(frames)],
                             stamp_s=99.99 + index * 0.1)
            writer.add_audio(100.0 + index * 0.1, stereo[index * 1600:(index + 1) * 1600]
                             .tobytes())
        writer.add_label(100.2, 100.6, 'fear')
        writer.start_label(100.6, 'surprise')  # ends fear's interval too
        writer.end_label(100.9)
        with pytest.raises(ValueError, match='before the previous one ended'):
            writer.start_label(100.5, 'sad')
        with pytest.raises(ValueError, match='not one of'):
            writer.start_label(101.0, 'bored')
        folder = writer.finish()
    messages, types, start = read_bag(folder / 'bag')
    assert start == pytest.approx(100.0)
    assert types['/camera/image_raw/compressed'] == 'sensor_msgs/msg/CompressedImage'
    jpeg = messages['/camera/image_raw/compressed'][2][1]
    decoded = cv2.imdecode(np.frombuffer(bytes(jpeg.data), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.format == 'jpeg' and np.abs(decoded.astype(int) - frames[2]).mean() < 3
    assert jpeg.header.stamp.sec + jpeg.header.stamp.nanosec * 1e-9 == pytest.approx(100.19)
    assert np.array_equal(pcm(messages['/audio_stamped']), stereo[:16000].reshape(-1))
    times = [t for topic in messages.values() for t, _ in topic]
    assert [t for t, _ in messages['/emotion/ground_truth']] == sorted(
        [t for t, _ in messages['/emotion/ground_truth']])
    assert max(times) == pytest.approx(100.9)
    assert [(round(i.start, 6), round(i.end, 6), i.label)
            for i in read_truth_csv(folder / 'labels.csv', 0.0)] == [
        (0.2, 0.6, 'fear'), (0.6, 0.9, 'surprise')]


def test_sessions_are_never_overwritten_and_unfinished_ones_are_not_sessions(
        tmp_path, frames):
    intervals = [Interval(0.0, 0.5, 'neutral')]
    write_session(tmp_path, 'carol-1', 'carol', intervals, frames=frames, fps=10.0)
    with pytest.raises(SessionError, match='exists'):
        write_session(tmp_path, 'carol-1', 'carol', intervals, frames=frames, fps=10.0)
    with pytest.raises(SessionError, match='exists'):
        SessionWriter(tmp_path, 'carol-1', 'carol', 'live')

    crashed = SessionWriter(tmp_path, 'carol-2', 'carol', 'live')  # never finished
    crashed.add_frame(5.0, frames[0])
    crashed.add_label(5.0, 6.0, 'happy')
    assert find_sessions([tmp_path]) == [tmp_path / 'carol-1']
    assert crashed.work_dir.parent == tmp_path / INCOMPLETE_DIR

    taken = SessionWriter(tmp_path, 'carol-3', 'carol', 'live')
    taken.add_frame(1.0, frames[0])
    taken.add_label(1.0, 2.0, 'sad')
    (tmp_path / 'carol-3').mkdir()  # another recorder took the id meanwhile
    with pytest.raises(SessionError, match='kept in'):
        taken.finish()
    assert taken.work_dir.is_dir() and not any((tmp_path / 'carol-3').iterdir())

    unlabelled = SessionWriter(tmp_path, 'carol-4', 'carol', 'live')
    unlabelled.add_frame(1.0, frames[0])
    with pytest.raises(SessionError, match='nothing labelled'):
        unlabelled.finish()
    assert not unlabelled.work_dir.exists() and not (tmp_path / 'carol-4').exists()

    with pytest.raises(SessionError, match='session id'):
        SessionWriter(tmp_path, '../escape', 'carol', 'live')
    with pytest.raises(SessionError, match='person is empty'):
        SessionWriter(tmp_path, 'carol-5', ' ', 'live')
    assert find_sessions([tmp_path]) == [tmp_path / 'carol-1']


# ----------------------------------------------------------------------------- prompts
def test_prompts_are_labelled_from_when_they_were_given(tmp_path):
    from mika_personal.prompt_schedule import PromptRunner, PromptSchedule, ScheduleConfig
    schedule = PromptSchedule(ScheduleConfig(emotions=('happy', 'sad'),
                                             seconds_per_emotion=1.0, pause_s=0.5,
                                             settle_s=0.2, lead_in_s=0.5))
    assert schedule.total_s == pytest.approx(3.0)
    runner = PromptRunner(schedule)
    runner.start(10.0)
    said = {t: runner.update(10.0 + t) for t in (0.0, 0.2, 0.5, 1.6, 2.3, 2.9)}
    assert said[0.2] is None  # the lead-in is said once
    assert [said[t].text.split('.')[0] for t in (0.0, 0.5, 1.6, 2.3)] == [
        'Recording starts', 'Emotion 1 of 2: happy', 'Pause', 'Emotion 2 of 2: sad']
    assert said[2.9] is None and not runner.done
    # the pause came late (1.6 s, due 1.5 s) and so did sad (2.3 s, due 2.0 s)
    assert [(round(i.start - 10, 6), round(i.end - 10, 6), i.label)
            for i in runner.intervals(stop_s=12.95)] == [
        (0.7, 1.6, 'happy'), (2.5, 2.95, 'sad')]

    lines = tmp_path / 'lines.txt'
    lines.write_text('# what to read\nhappy: I got the job!\nThe bus is late.\n')
    reading = PromptSchedule(ScheduleConfig(emotions=('happy', 'sad'), lines_per_emotion=2,
                                            seconds_per_line=2.0, pause_s=0.0,
                                            settle_s=0.5, lead_in_s=0.0), lines)
    assert [p.lines for p in reading.prompts] == [
        ('I got the job!', 'The bus is late.'), ('The bus is late.', 'The bus is late.')]
    runner = PromptRunner(reading)
    runner.start(0.0)
    texts = [step.text for t in np.arange(0.0, 8.5, 0.25)
             if (step := runner.update(float(t))) is not None]
    assert len(texts) == 4 and '"I got the job!"' in texts[0] and runner.done
    assert [(i.start, i.end, i.label) for i in runner.intervals()] == [
        (0.5, 4.0, 'happy'), (4.5, 8.0, 'sad')]

    lines.write_text('bored: Another meeting.\n')
    with pytest.raises(ValueError, match="'bored' is not one of"):
        PromptSchedule(ScheduleConfig(lines_per_emotion=1), lines)
    with pytest.raises(ValueError, match='lists one twice'):
        ScheduleConfig(emotions=('sad', 'sad')).check()


def test_a_late_timer_never_skips_a_prompt():
    from mika_personal.prompt_schedule import PromptRunner, PromptSchedule, ScheduleConfig
    schedule = PromptSchedule(ScheduleConfig(emotions=('happy', 'sad', 'fear'),
                                             seconds_per_emotion=1.0, pause_s=0.5,
                                             settle_s=0.2, lead_in_s=0.5))
    runner = PromptRunner(schedule)
    runner.start(0.0)
    said = {t: runner.update(t) for t in (0.0, 2.2, 2.3, 3.25, 3.9, 4.75, 5.0, 6.05, 7.0)}
    assert [(t, step.text.split('.')[0]) for t, step in said.items() if step] == [
        (0.0, 'Recording starts'), (2.2, 'Emotion 1 of 3: happy'), (3.25, 'Pause'),
        (3.9, 'Emotion 2 of 3: sad'), (4.75, 'Pause'), (6.05, 'Emotion 3 of 3: fear')]
    assert not runner.done
    assert runner.update(7.1) is None and runner.done
    # happy (due 0.5 to 1.5 s) came after a stall to 2.2 s, and had its whole second then;
    # sad, 0.2 s late, kept its end (4.7 s); fear with 0.15 s (< settle_s) left had 1 s
    assert [(round(i.start, 6), round(i.end, 6), i.label) for i in runner.intervals()] == [
        (2.4, 3.25, 'happy'), (4.1, 4.75, 'sad'), (6.25, 7.1, 'fear')]


# ----------------------------------------------------------------------------- import
def write_video(path: pathlib.Path, frames, count: int, fps: float = 15.0) -> pathlib.Path:
    height, width = frames[0].shape[:2]
    video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
    assert video.isOpened()
    for index in range(count):
        video.write(frames[index % len(frames)])
    video.release()
    return path


def write_wav(path: pathlib.Path, samples, rate) -> pathlib.Path:
    import soundfile
    soundfile.write(str(path), samples, rate, subtype='PCM_16')
    return path


def test_import_a_video_with_its_soundtrack_and_a_label_file(tmp_path, frames, speech,
                                                             capsys):
    samples, rate = speech
    seconds = 3.0
    video = write_video(tmp_path / 'take1.mp4', frames, int(seconds * 30), fps=30.0)
    audio = write_wav(tmp_path / 'take1.wav', samples[:int(seconds * rate)], rate)
    labels = tmp_path / 'take1.csv'
    labels.write_text('# my first take\nstart,end,label\n0.5,1.5,happy\n1.5,2.9,surprise\n')
    out = tmp_path / 'sessions'
    assert import_media.main(['--person', 'dana', '--output', str(out), '--video', str(video),
                              '--audio', str(audio), '--labels', str(labels)]) == 0
    folder = out / 'dana-take1'
    assert str(folder) in capsys.readouterr().out
    messages, types, start = read_bag(folder / 'bag')
    camera = messages['/camera/image_raw']
    assert len(camera) == 45  # 30 FPS thinned to the default 15
    assert camera[1][0] - start == pytest.approx(2 / 30.0, abs=1e-6)
    image = camera[1][1].data.reshape(240, 320, 3)
    assert np.abs(image.astype(int) - frames[2]).mean() < 8  # lossy MPEG-4, same face
    written = pcm(messages['/audio_stamped'])
    assert len(written) == int(seconds * rate)
    assert np.abs(written / 32768.0 - samples[:len(written)]).max() < 1e-4
    assert [(i.start, i.end, i.label) for i in read_truth_csv(folder / 'labels.csv', 0.0)] \
        == [(0.5, 1.5, 'happy'), (1.5, 2.9, 'surprise')]
    info = SessionInfo.read(folder)
    assert info.source == 'media' and 'take1.mp4' in info.notes and 'take1.wav' in info.notes


def test_import_audio_files_with_one_label_each(tmp_path, speech):
    samples, rate = speech
    first = write_wav(tmp_path / 'a.flac', samples, rate)
    second = write_wav(tmp_path / 'b.wav', samples[:rate], rate)
    out = tmp_path / 'sessions'
    assert import_media.main(['--person', 'eve', '--output', str(out), '--audio', str(first),
                              str(second), '--label', 'sad', 'angry']) == 0
    assert find_sessions([out]) == [out / 'eve-a', out / 'eve-b']
    intervals = read_truth_csv(out / 'eve-b' / 'labels.csv', 0.0)
    assert [(i.start, i.label) for i in intervals] == [(0.0, 'angry')]
    assert intervals[0].end == pytest.approx(1.0)
    messages, types, _ = read_bag(out / 'eve-a' / 'bag')
    assert '/camera/image_raw' not in types
    assert len(pcm(messages['/audio_stamped'])) == len(samples)


def test_import_refuses_broken_input_with_clear_reasons(tmp_path, frames, speech, capsys):
    samples, rate = speech
    video = write_video(tmp_path / 'v.mp4', frames, 30, fps=15.0)  # 2 s
    long_audio = write_wav(tmp_path / 'long.wav', samples[:int(3.2 * rate)], rate)
    not_video = tmp_path / 'notes.mp4'
    not_video.write_text('not a video')
    not_audio = tmp_path / 'notes.wav'
    not_audio.write_text('not audio')
    typo = tmp_path / 'typo.csv'
    typo.write_text('start,end,label\n0,1,happpy\n')
    beyond = tmp_path / 'beyond.csv'
    beyond.write_text('start,end,label\n0.5,4.0,happy\n')
    out = tmp_path / 'sessions'

    def refused(*args):
        code = import_media.main(['--person', 'finn', '--output', str(out), *map(str, args)])
        return code, capsys.readouterr().err

    cases = [
        ((('--video', not_video, '--label', 'happy')), 'cannot be opened by OpenCV'),
        ((('--audio', not_audio, '--label', 'happy')), 'cannot be read'),
        ((('--video', video, '--audio', long_audio, '--label', 'happy')),
         'not one recording'),
        ((('--video', video, '--labels', typo)), "'happpy' is not one of"),
        ((('--video', video, '--labels', beyond)), 'outside the recording'),
        ((('--video', video, video, '--label', 'happy')), '2 recordings but 1 label'),
        ((('--video', tmp_path / 'missing.mp4', '--label', 'sad')), 'not found'),
    ]
    for args, reason in cases:
        code, error = refused(*args)
        assert code == 2 and reason in error, (args, error)
    assert not out.exists() or find_sessions([out]) == []
    with pytest.raises(SystemExit):  # argparse: an unknown emotion for a whole file
        import_media.main(['--person', 'finn', '--output', str(out), '--video', str(video),
                           '--label', 'bored'])


# ----------------------------------------------------------------------------- node
@pytest.fixture
def ros():
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    rclpy.init()
    probe = rclpy.create_node('recorder_probe')
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    yield probe, executor
    executor.shutdown()
    probe.destroy_node()
    rclpy.shutdown()


class Feeder:
    """A camera at 30 FPS (raw and JPEG) and a microphone in 100 ms chunks (stamped and
    plain), real face and real speech, stamped like drivers stamp them; and the prompts the
    recorder publishes, with their arrival times."""

    def __init__(self, probe, frame, speech):
        import audio_common_msgs.msg as audio_msgs
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        from mika_common.ros_io import latched_qos, sec_to_stamp, sensor_qos
        self.probe, self.frame = probe, frame
        self.samples = np.round(speech[0] * 32767).astype('<i2')
        self.chunk = 0
        self.prompts = []
        self.frame_stamps, self.chunk_stamps = [], []  # what was really sent, and when
        self._msgs, self._stamp, self._image = audio_msgs, sec_to_stamp, Image
        self.camera = probe.create_publisher(Image, 'image', sensor_qos())
        self.jpeg = CompressedImage(format='jpeg', data=cv2.imencode('.jpg', frame)[1].tobytes())
        self.compressed = probe.create_publisher(CompressedImage, 'image/compressed',
                                                 sensor_qos())
        self.audio = probe.create_publisher(audio_msgs.AudioDataStamped, 'audio_stamped', 50)
        self.plain = probe.create_publisher(audio_msgs.AudioData, 'audio', 50)
        info = probe.create_publisher(audio_msgs.AudioInfo, 'audio_info', latched_qos())
        info.publish(audio_msgs.AudioInfo(channels=1, sample_rate=speech[1],
                                          sample_format='S16LE', coding_format='wave'))
        probe.create_subscription(String, '/recorder/prompt', self._on_prompt, latched_qos())
        probe.create_timer(1 / 30, self._publish_frame)
        probe.create_timer(0.1, self._publish_chunk)

    def now(self):
        return self.probe.get_clock().now().nanoseconds * 1e-9

    def _on_prompt(self, msg):
        self.prompts.append((self.now(), msg.data))

    def _publish_frame(self):
        msg = self._image(height=self.frame.shape[0], width=self.frame.shape[1],
                          encoding='bgr8', step=self.frame.shape[1] * 3,
                          data=self.frame.tobytes())
        self.frame_stamps.append(self.now() - 0.01)
        msg.header.stamp = self._stamp(self.frame_stamps[-1])
        msg.header.frame_id = 'test_camera'
        self.camera.publish(msg)
        self.jpeg.header = msg.header
        self.compressed.publish(self.jpeg)

    def _publish_chunk(self):
        first = (self.chunk * 1600) % (len(self.samples) - 1600)
        self.chunk += 1
        msg = self._msgs.AudioDataStamped()
        self.chunk_stamps.append(self.now() - 0.1)
        msg.header.stamp = self._stamp(self.chunk_stamps[-1])
        msg.audio.data = self.samples[first:first + 1600].tobytes()
        self.audio.publish(msg)
        self.plain.publish(msg.audio)


def sent_between(sent_stamps, recorded):
    """How many of the feeder's messages were stamped within the recorded (stamp, msg) span:
    a loaded CI machine publishes well under the timers' rate, so counts are checked against
    what was really sent rather than against the nominal rate."""
    first, last = recorded[0][0] - 1e-6, recorded[-1][0] + 1e-6
    return sum(1 for t in sent_stamps if first <= t <= last)


def recorder(executor, **values):
    from rclpy.parameter import Parameter

    from mika_personal.recorder_node import RecorderNode
    defaults = dict(seconds_per_emotion=0.3, pause_s=0.1, settle_s=0.05, lead_in_s=0.1,
                    max_frame_rate_hz=0.0)
    defaults.update(values)
    node = RecorderNode(parameter_overrides=[Parameter(k, value=v)
                                             for k, v in defaults.items()])
    executor.add_node(node)
    return node


def record_announcements(node):
    """(node clock time, step) of every step the recorder's runner announces, and (time,
    None) when its schedule ends. Labels run from an announcement plus settle_s to the next
    one: on a loaded machine the schedule timer fires late, and the labels follow these
    times, not the schedule's."""
    announced = []
    update = node.runner.update

    def recording(now):
        was_done = node.runner.done
        step = update(now)
        if step is not None or node.runner.done != was_done:
            announced.append((now, step))
        return step
    node.runner.update = recording
    return announced


def check_announcements(node, announced, settle_s):
    """No step announced before it was due; the labelled lengths of the emotions that the
    next announcement closed (from an announcement plus settle_s to the next one)."""
    for now, step in announced:
        if step is not None:
            assert now - node.runner.started_at >= step.start - 1e-9, step
    return [later - now - settle_s
            for (now, step), (later, _) in zip(announced, announced[1:]) if step.emotion]


def test_the_recorder_prompts_records_and_labels_by_the_prompts(ros, tmp_path, frames,
                                                                speech):
    from mika_common.testing import spin_until
    probe, executor = ros
    feeder = Feeder(probe, frames[0], speech)
    node = recorder(executor, output_dir=str(tmp_path), person='gina', session_id='gina-1')
    announced = record_announcements(node)
    try:
        assert spin_until(executor, lambda: node.finished, 20.0)
    finally:
        node.destroy_node()
    spin_until(executor, lambda: feeder.prompts and 'Done' in feeder.prompts[-1][1], 2.0)
    folder = node.session_dir
    assert folder == tmp_path / 'gina-1' and find_sessions([tmp_path]) == [folder]
    info = SessionInfo.read(folder)
    assert (info.person, info.source, info.partial) == ('gina', 'live', False)
    assert info.topics['camera'] == '/camera/image_raw'

    labels = read_truth_csv(folder / 'labels.csv', 0.0)
    assert [i.label for i in labels] == list(EMOTION_LABELS)
    assert [i.duration for i in labels] == pytest.approx(
        check_announcements(node, announced, 0.05), abs=1e-6)
    shown_at = [now for now, step in announced if step is not None and step.emotion]
    assert [b.start - a.start for a, b in zip(labels, labels[1:])] == pytest.approx(
        list(np.diff(shown_at)), abs=1e-6)
    messages, types, start = read_bag(folder / 'bag')
    shown = {text.split(': ')[1].split('.')[0]: at for at, text in feeder.prompts
             if text.startswith('Emotion ')}
    assert list(shown) == list(EMOTION_LABELS)
    for interval in labels:  # labelled from when the prompt was given, after the settle
        given = start + interval.start - 0.05
        assert 0.0 <= shown[interval.label] - given < 1.0
    assert 'Done' in feeder.prompts[-1][1] and 'gina-1' in feeder.prompts[-1][1]

    camera = messages['/camera/image_raw']
    duration = 0.1 + 7 * 0.3 + 6 * 0.1
    assert 0.7 * sent_between(feeder.frame_stamps, camera) <= len(camera) \
        <= 30 * (duration + 0.2)
    assert np.array_equal(camera[0][1].data.reshape(frames[0].shape), frames[0])
    assert camera[0][1].header.frame_id == 'test_camera'
    audio = messages['/audio_stamped']
    assert 0.5 * sent_between(feeder.chunk_stamps, audio) <= len(audio) \
        <= 10 * (duration + 0.2)
    assert len(messages['/audio_info']) == 1
    truth = intervals_from_label_messages(
        [(t, m.data) for t, m in messages['/emotion/ground_truth']], start + duration)
    assert [(i.start - start, i.label) for i in truth] == [
        (pytest.approx(i.start, abs=1e-5), i.label) for i in labels]
    in_happy = [t for t, _ in camera if labels[3].start <= t - start < labels[3].end]
    assert len(in_happy) >= 4  # frames recorded while happy was prompted


def test_the_recorder_stores_nothing_without_output_dir(ros, tmp_path, frames, speech):
    from mika_common.testing import spin_until
    probe, executor = ros
    feeder = Feeder(probe, frames[0], speech)
    node = recorder(executor, emotions=['happy', 'sad'], seconds_per_emotion=0.3,
                    pause_s=0.3)
    announced = record_announcements(node)
    try:
        assert spin_until(executor, lambda: node.finished, 15.0)
    finally:
        node.destroy_node()
    spin_until(executor, lambda: feeder.prompts and 'Done' in feeder.prompts[-1][1], 2.0)
    # every step, in the schedule's order, also where the timer fired late
    steps = [step for _, step in announced if step is not None]
    assert steps == node.schedule.steps, steps
    check_announcements(node, announced, 0.05)  # none early
    assert [text for _, text in feeder.prompts] == [step.text for step in steps] + [
        feeder.prompts[-1][1]]
    assert feeder.prompts[-1][1].startswith('Done. Nothing was stored')
    assert node.session_dir is None and list(tmp_path.iterdir()) == []


def test_a_stopped_recording_is_kept_as_partial(ros, tmp_path, frames, speech):
    from mika_common.testing import spin_until
    probe, executor = ros
    feeder = Feeder(probe, frames[0], speech)
    node = recorder(executor, output_dir=str(tmp_path), person='hal', session_id='hal-1',
                    seconds_per_emotion=1.0, camera='compressed', audio='plain')
    announced = record_announcements(node)
    try:
        assert spin_until(executor, lambda: any(
            'Emotion 3 of 7' in text for _, text in feeder.prompts), 15.0)
        spin_until(executor, lambda: False, 0.2)
        stopping = feeder.now()
        node.stop(interrupted=True)  # what Ctrl-C does
        stopped = feeder.now()
    finally:
        node.destroy_node()
    info = SessionInfo.read(tmp_path / 'hal-1')
    assert info.partial and 'stopped after' in info.notes
    labels = read_truth_csv(tmp_path / 'hal-1' / 'labels.csv', 0.0)
    assert [i.label for i in labels] == ['angry', 'disgust', 'fear']
    assert [i.duration for i in labels[:2]] == pytest.approx(
        check_announcements(node, announced, 0.05), abs=1e-6)
    messages, types, start = read_bag(tmp_path / 'hal-1' / 'bag')  # as received
    assert 0.0 < labels[-1].duration < 0.9  # fear: labelled up to the stop
    assert stopping - 1e-6 <= start + labels[-1].end <= stopped + 1e-6
    assert info.topics['camera'] == '/camera/image_raw/compressed'
    assert bytes(messages['/camera/image_raw/compressed'][0][1].data) == bytes(feeder.jpeg.data)
    chunks = [bytes(m.audio.data) for _, m in messages['/audio_stamped']]
    assert len(chunks) >= 5 and all(len(c) == 3200 for c in chunks)
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
              for _, m in messages['/audio_stamped']]  # plain audio: stamped on arrival
    assert np.all(np.diff(stamps) > 0) and np.median(np.diff(stamps)) == pytest.approx(
        0.1, abs=0.02)


def test_the_recorder_refuses_what_it_cannot_store(ros, tmp_path):
    probe, executor = ros
    with pytest.raises(ValueError, match='person is empty'):
        recorder(executor, output_dir=str(tmp_path))
    (tmp_path / 'ivy-1').mkdir()
    with pytest.raises(SessionError, match='exists'):
        recorder(executor, output_dir=str(tmp_path), person='ivy', session_id='ivy-1')
    with pytest.raises(ValueError, match='not longer than settle_s'):
        recorder(executor, seconds_per_emotion=0.5, settle_s=1.0)
    with pytest.raises(ValueError, match='nothing to record'):
        recorder(executor, camera='none', audio='none')
    assert [p.name for p in tmp_path.iterdir()] == ['ivy-1']


def test_ctrl_c_finishes_a_partial_session_in_a_real_process(ros, tmp_path, frames, speech):
    import sys

    from mika_common.testing import NodeProcess, spin_until
    probe, executor = ros
    feeder = Feeder(probe, frames[0], speech)
    # 3 s per emotion: the stop lands well before the session's end
    values = dict(output_dir=tmp_path, person='ken', session_id='ken-1',
                  seconds_per_emotion=3.0, pause_s=0.1, settle_s=0.05, lead_in_s=0.1)
    process = NodeProcess([sys.executable, '-m', 'mika_personal.recorder_node', '--ros-args',
                           *[a for k, v in values.items() for a in ('-p', f'{k}:={v}')]])
    # The probe may hear the latched prompts seconds late (where processes were killed in
    # the domain, a new one's topics were matched about 3 s late: bench/results/restart.md;
    # a fresh-clone run once stopped in 'fear'): stop once any prompt from the second on is
    # heard, and expect exactly the emotions the recorder logged a prompt for.
    begun_second = lambda: any(  # noqa: E731
        f'Emotion {k} of 7' in text for _, text in feeder.prompts for k in range(2, 8))
    try:
        assert spin_until(executor, begun_second, 20.0), process.output()
        spin_until(executor, lambda: False, 0.2)
    finally:
        code = process.stop()  # SIGINT, as Ctrl-C in a terminal
    log = process.log_path.read_text()
    assert code == 0 and 'partial session' in log, log
    info = SessionInfo.read(tmp_path / 'ken-1')
    assert info.partial and info.source == 'live'
    prompted = re.findall(r'prompt: Emotion \d of 7: (\w+)\.', log)
    labels = [i.label for i in read_truth_csv(tmp_path / 'ken-1' / 'labels.csv', 0.0)]
    assert labels == prompted and 2 <= len(labels) < 7, (labels, prompted, log)
    assert labels == list(EMOTION_LABELS[:len(labels)]), log
    messages, _, _ = read_bag(tmp_path / 'ken-1' / 'bag')
    camera = [t for t, _ in messages['/camera/image_raw']]
    span = camera[-1] - camera[0]
    # 30 FPS thinned to the default max_frame_rate_hz 15; no floor beyond a few frames, as a
    # starved recorder process rightly loses frames to its latest-only sensor QoS
    assert span > 0.8 and 3 <= len(camera) <= 15 * span + 2, len(camera)
    assert len(messages['/audio_stamped']) >= 5
    assert not (tmp_path / INCOMPLETE_DIR).exists()
