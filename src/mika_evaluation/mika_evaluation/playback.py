"""What a bag player needs that is not ROS: the topics with their QoS, and the pacing.

ROS-free (``rosbags``): :mod:`mika_evaluation.play_bag` publishes what this module plans.
QoS follows the recording, as ``ros2 bag play`` does: a topic recorded from a
transient-local (latched) publisher, like ``/audio_info``, is offered transient-local so a
node started later still receives it; a best-effort recording is replayed best effort.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from mika_evaluation.bag_format import BagError

#: Depth of the volatile publishers: a burst (a frame and several audio chunks due at
#: once) is not cut short while a subscriber's reader catches up.
VOLATILE_DEPTH = 10


@dataclass(frozen=True)
class TopicPlan:
    """One topic to publish: its type, the QoS to offer, and how many messages it has."""

    topic: str
    msgtype: str
    reliable: bool
    latched: bool
    depth: int
    count: int


def topic_plans(connections, topics: Optional[Sequence[str]] = None) -> List[TopicPlan]:
    """One plan per topic of the bag's ``connections`` (rosbags ``Connection``s), in name
    order; only ``topics`` when given. Raises :class:`BagError` for a topic the bag lacks or
    one recorded with two message types (it cannot have one publisher)."""
    by_topic: Dict[str, list] = {}
    for connection in connections:
        by_topic.setdefault(connection.topic, []).append(connection)
    if topics:
        missing = sorted(set(topics) - set(by_topic))
        if missing:
            raise BagError(f'the bag has no topic {", ".join(missing)}; it has: '
                           f'{", ".join(sorted(by_topic)) or "no topics"}')
        by_topic = {topic: by_topic[topic] for topic in topics}
    plans = []
    for topic, group in sorted(by_topic.items()):
        types = sorted({c.msgtype for c in group})
        if len(types) > 1:
            raise BagError(f'topic {topic} was recorded with several types ({", ".join(types)})'
                           ': play it with --topics naming the others only')
        profiles = [q for c in group for q in _offered_qos(c)]
        latched = any(_name(q.durability) == 'TRANSIENT_LOCAL' for q in profiles)
        # reliable unless every recorded publisher was best effort (as ros2 bag play)
        reliable = not profiles or any(_name(q.reliability) != 'BEST_EFFORT' for q in profiles)
        depth = max([q.depth for q in profiles if q.depth > 0] or [1]) if latched \
            else VOLATILE_DEPTH
        plans.append(TopicPlan(topic, types[0], reliable or latched, latched, depth,
                               sum(c.msgcount for c in group)))
    return plans


def _offered_qos(connection) -> list:
    ext = getattr(connection, 'ext', None)
    return list(getattr(ext, 'offered_qos_profiles', None) or [])


def _name(policy) -> str:
    return getattr(policy, 'name', str(policy)).upper()


class Pacer:
    """Maps bag time to wall time for playback at ``rate`` times real time."""

    def __init__(self, bag_start: float, wall_start: float, rate: float):
        if not rate > 0:
            raise ValueError(f'rate must be > 0, got {rate}')
        self.bag_start = bag_start
        self.wall_start = wall_start
        self.rate = rate

    def wall_time(self, bag_time: float) -> float:
        """When (wall, monotonic seconds) the message of ``bag_time`` is due."""
        return self.wall_start + (bag_time - self.bag_start) / self.rate

    def bag_time(self, wall_time: float) -> float:
        """The bag time being played at ``wall_time``: what /clock says then."""
        return self.bag_start + (wall_time - self.wall_start) * self.rate

    def hold(self, seconds: float) -> None:
        """Bag time stood still for ``seconds`` of wall time: what follows is due later."""
        self.wall_start += seconds
