"""What an evaluation bag holds, and the ground truth beside it. ROS-free (rosbags).

Topics (absolute, the launch file's defaults without a namespace):

- ``/camera/image_raw``: ``sensor_msgs/msg/Image`` (bgr8), header stamp = exposure time.
- ``/audio_stamped``: ``audio_common_msgs/msg/AudioDataStamped``, raw PCM chunks, header
  stamp = time of the chunk's first sample.
- ``/audio_info``: ``audio_common_msgs/msg/AudioInfo``, once at the start, offered
  transient-local (latched) like a driver that latches it.
- ``/emotion/ground_truth``: ``std_msgs/msg/String``, the true label from the message's bag
  time until the next message; an empty string ends labelled time (a gap, or the end).
  A plain String is chosen because every ROS 2 installation has it (``ros2 bag play`` and
  ``ros2 topic echo`` need no extra package); its time is the bag (log) time.

The same truth as a file: CSV ``start,end,label`` in seconds from the bag's start time,
preceded by ``#`` comment lines that say where the media came from.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from mika_common.emotions import EMOTION_LABELS

CAMERA_TOPIC = '/camera/image_raw'
AUDIO_TOPIC = '/audio_stamped'
AUDIO_INFO_TOPIC = '/audio_info'
TRUTH_TOPIC = '/emotion/ground_truth'

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
#: image_transport's convention: compressed frames of a camera topic are on <topic>/compressed
COMPRESSED_SUFFIX = '/compressed'
AUDIO_TYPE = 'audio_common_msgs/msg/AudioDataStamped'
AUDIO_INFO_TYPE = 'audio_common_msgs/msg/AudioInfo'
TRUTH_TYPE = 'std_msgs/msg/String'

#: ros-drivers/audio_common message definitions (the same text as compat/audio_common_msgs),
#: registered in the typestore so that bags can be written and read without that package.
AUDIO_COMMON_MSGS = {
    'audio_common_msgs/msg/AudioData': 'uint8[] data\n',
    'audio_common_msgs/msg/AudioDataStamped':
        'std_msgs/Header header\naudio_common_msgs/AudioData audio\n',
    'audio_common_msgs/msg/AudioInfo':
        'uint8 channels\nuint32 sample_rate\nstring sample_format\nuint32 bitrate\n'
        'string coding_format\n',
}


class BagError(RuntimeError):
    """A bag (or label file) that cannot be evaluated as a whole; the message says why."""


def make_typestore():
    """ROS 2 Kilted types plus audio_common_msgs."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    typestore = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for name, text in AUDIO_COMMON_MSGS.items():
        types.update(get_types_from_msg(text, name))
    typestore.register(types)
    return typestore


def offered_qos(latched: bool, reliable: bool):
    """The QoS a bag records as its publisher's offer (keep last 1), so that a replay
    latches ``/audio_info`` and is reliable where the live publisher is."""
    from rosbags.interfaces import (
        Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime)
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1,
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


@dataclass(frozen=True)
class Interval:
    start: float  # seconds, bag time
    end: float
    label: str

    @property
    def duration(self) -> float:
        return self.end - self.start


def check_intervals(intervals: Sequence[Interval], origin: str) -> List[Interval]:
    """Sorted, non-overlapping intervals of known labels, or :class:`BagError`."""
    ordered = sorted(intervals, key=lambda i: i.start)
    for interval in ordered:
        if interval.label not in EMOTION_LABELS:
            raise BagError(f'{origin}: label {interval.label!r} is not one of '
                           f'{", ".join(EMOTION_LABELS)}')
        if not interval.end > interval.start:
            raise BagError(f'{origin}: interval {interval.start}..{interval.end} is empty')
    for first, second in zip(ordered, ordered[1:]):
        if second.start < first.end - 1e-9:
            raise BagError(f'{origin}: intervals overlap at {second.start:.3f} s')
    if not ordered:
        raise BagError(f'{origin}: no labelled intervals')
    return ordered


def write_truth_csv(path: Path, intervals: Iterable[Interval], bag_start: float,
                    comments: Sequence[str] = ()) -> None:
    """``start,end,label`` with times in seconds from ``bag_start`` (bag time, seconds)."""
    buffer = io.StringIO()
    for line in comments:
        buffer.write(f'# {line}\n')
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(['start', 'end', 'label'])
    for interval in intervals:
        writer.writerow([f'{interval.start - bag_start:.6f}', f'{interval.end - bag_start:.6f}',
                         interval.label])
    Path(path).write_text(buffer.getvalue())


def read_truth_csv(path: Path, bag_start: float) -> List[Interval]:
    """Intervals from a ``start,end,label`` file (seconds from the bag start; ``#`` lines
    are comments), in bag time."""
    path = Path(path)
    try:
        lines = [line for line in path.read_text().splitlines()
                 if line.strip() and not line.lstrip().startswith('#')]
    except OSError as error:
        raise BagError(f'label file {path}: {error}') from None
    rows = list(csv.reader(lines))
    if not rows or [cell.strip() for cell in rows[0]] != ['start', 'end', 'label']:
        raise BagError(f'label file {path}: the first row must be the header start,end,label')
    intervals = []
    for number, row in enumerate(rows[1:], start=2):
        try:
            start, end, label = row
            intervals.append(Interval(bag_start + float(start), bag_start + float(end),
                                      label.strip()))
        except ValueError:
            raise BagError(f'label file {path}: row {number} {row!r} is not '
                           'start,end,label with numbers in seconds') from None
    return check_intervals(intervals, f'label file {path}')


def intervals_from_label_messages(events: Sequence[tuple], bag_end: float) -> List[Interval]:
    """(bag time, label) messages of the truth topic -> intervals; '' ends labelled time,
    the last label lasts until ``bag_end``."""
    intervals = []
    for (time_s, label), following in zip(events, list(events[1:]) + [(bag_end, '')]):
        if label:
            intervals.append(Interval(time_s, following[0], label))
    return check_intervals([i for i in intervals if i.end > i.start], f'topic {TRUTH_TOPIC}')


def read_custom_data(bag_path: Path) -> Dict[str, str]:
    """The ``custom_data`` of the bag's metadata.yaml (empty when absent)."""
    import yaml
    try:
        metadata = yaml.safe_load((Path(bag_path) / 'metadata.yaml').read_text())
    except (OSError, yaml.YAMLError):
        return {}
    info = (metadata or {}).get('rosbag2_bagfile_information', {})
    return dict(info.get('custom_data') or {})


def label_at(intervals: Sequence[Interval], time_s: float) -> Optional[str]:
    for interval in intervals:
        if interval.start <= time_s < interval.end:
            return interval.label
    return None
