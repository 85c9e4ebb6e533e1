"""Live evaluation: score what the running graph publishes while a bag is played.

ROS-free core of :mod:`mika_evaluation.evaluator_node`. The node hands over what it hears:
``/emotion/fused`` states, ``/emotion/face`` and ``/emotion/voice`` results and the ground
truth, each with the evaluator's clock at receipt (bag time when the graph runs with
``use_sim_time`` on a player's ``/clock``). :meth:`LiveRecording.report` turns that into
the :class:`~mika_evaluation.offline.ReplayLog` and
:class:`~mika_evaluation.offline.Timeline` that offline evaluation produces, and writes the
report with the same code (:mod:`mika_evaluation.report`): same files, same metrics.

What differs from offline, by design: the fused state is the one the fusion node
published (the newest state stamped at or before each tick), not recomputed; a result
exists when the evaluator received it, not at its frame's bag time; a truth message
counts from its receipt (a /clock step late at most, when nothing queues; a label file
is exact); and the graph drops frames when it falls behind, as it does on a robot.

Because of those drops a live report need not equal the offline one (``play_bag
--wait-for-results emotion/face`` avoids them: it holds bag time while the face node works
on a frame). What must hold on any machine is that the fusion node does what its core does with what it received: the report's
``fusion_core`` entry scores :func:`~mika_evaluation.offline.fuse` run on the very results
heard (each at its receipt), on the same ticks, and says on what share of the labelled
ticks the published state equals it. ``save_replay`` keeps those results
(:func:`~mika_evaluation.offline.load_replay`), to fuse them again or to compare them with
an offline replay of the bag.

The bag start (the origin of a ``start,end,label`` file, and of the report's ticks) is, in
this order: the ``bag_start_s`` parameter; the start time in the metadata of the ``bag``
parameter's bag; the first ``/clock`` time heard (``play_bag --clock`` and ``ros2 bag play
--clock`` publish the bag start first, while waiting for subscribers); without ``/clock``,
the earliest time heard (a sensor stamp or a truth message; later than the true start by
the time to the first result, so pass ``bag`` or ``bag_start_s`` with a label file then).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mika_common.emotions import EMOTION_LABELS, UNKNOWN
from mika_common.node_params import ParamSpec
from mika_evaluation.bag_format import (
    BagError, intervals_from_label_messages, label_at, read_truth_csv)
from mika_evaluation.node_config import NodeParameters, fusion_config
from mika_evaluation.offline import (
    ModalityResult, ReplayLog, Timeline, _manifest, fuse, modality_labels, save_replay)

#: A clock that goes back further than this restarts the recording (the bag was replayed).
TIME_JUMP_BACK_S = 1.0
#: A truth message is timed by the evaluator's clock at receipt, a /clock step or a queued
#: message late; the label heard first within this of the bag start counts from the start.
TRUTH_START_SLACK_S = 0.25


def _non_empty(name: str):
    def check(value: str) -> Optional[str]:
        return None if value.strip() else f'{name} must be set (a folder for the report)'
    return check


PARAMETERS = [
    ParamSpec('output_dir', '', 'Folder for report.json (written last), report.md, '
              'confusion.png and timeline.png; created if missing. Read at start only.',
              read_only=True, validator=_non_empty('output_dir')),
    ParamSpec('params_file', '', "The graph's params YAML (config/perception.yaml): the "
              'fusion publish rate sets the report ticks, max_age_s the per-modality '
              "freshness; '' = the nodes' defaults. Read at start only.", read_only=True),
    ParamSpec('labels_file', '', "Ground truth as a start,end,label CSV in seconds from the "
              "bag start; '' = the emotion/ground_truth topic (std_msgs/String, '' ends "
              'labelled time). Read at start only.', read_only=True),
    ParamSpec('bag', '', "The bag being played (its directory): the report names it, takes "
              "the bag start and end and the media from its metadata; '' = learn the start "
              'from /clock or the first message. Read at start only.', read_only=True),
    ParamSpec('bag_start_s', 0.0, 'Bag start time in seconds (epoch of the recording) when '
              'neither bag nor /clock gives it; 0 = not set. 0..1e10. Read at start only.',
              min_value=0.0, max_value=1e10, read_only=True),
    ParamSpec('end_after_idle_s', 5.0, 'Write the report and exit when nothing arrived on '
              'any input for this many seconds (wall clock) after something did: the bag '
              'ended. 0 = never (write on shutdown or on the write_report service). 0..3600.',
              min_value=0.0, max_value=3600.0),
    ParamSpec('fused_timeout_s', 1.0, 'A tick with no fused state stamped within this many '
              'seconds before it counts as no state (the fusion node stopped or fell '
              'behind). 0.05..60.', min_value=0.05, max_value=60.0),
    ParamSpec('plots', True, 'Also draw confusion.png and timeline.png (about 1 s).'),
    ParamSpec('save_replay', False, 'Also write replay.pkl: the results as heard, to fuse '
              'again (tune_fusion --replays) or to compare with an offline replay.'),
]


@dataclass(frozen=True)
class LiveSettings:
    """The evaluator's parameters, checked, with the graph's parameters loaded."""

    output_dir: Path
    graph: NodeParameters
    labels_file: Optional[Path]
    bag: Optional[Path]
    bag_start_s: Optional[float]
    fused_timeout_s: float
    plots: bool
    save_replay: bool = False

    @classmethod
    def from_values(cls, values: Dict) -> 'LiveSettings':
        """Raises ValueError (a ConfigError or BagError) naming what is wrong."""
        graph = NodeParameters.load(Path(values['params_file']) if values['params_file']
                                    else None)
        labels = Path(values['labels_file']) if values['labels_file'] else None
        if labels is not None:
            try:
                read_truth_csv(labels, 0.0)  # refuse a bad file now, not after the bag
            except BagError as error:
                raise ValueError(str(error)) from None
        bag = Path(values['bag']) if values['bag'] else None
        if bag is not None and not (bag / 'metadata.yaml').is_file():
            raise ValueError(f'bag {bag} has no metadata.yaml: pass the bag directory')
        return cls(Path(values['output_dir']), graph, labels, bag,
                   values['bag_start_s'] or None, values['fused_timeout_s'], values['plots'],
                   values['save_replay'])


def bag_metadata(bag: Path) -> Tuple[float, float, str]:
    """``(start, end, storage)`` from a rosbag2 ``metadata.yaml``."""
    import yaml
    try:
        info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
        start = info['starting_time']['nanoseconds_since_epoch'] * 1e-9
        return start, start + info['duration']['nanoseconds'] * 1e-9, \
            str(info.get('storage_identifier', ''))
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise BagError(f'bag {bag}: metadata.yaml unreadable ({error})') from None


class LiveRecording:
    """What the evaluator heard, in the evaluator's clock (bag time under /clock)."""

    def __init__(self, settings: LiveSettings):
        self.settings = settings
        self.fusion = fusion_config(settings.graph.fusion)
        # the fusion node's checks of a result, less its age (checked on its own)
        self._any_age = replace(self.fusion, max_age_s=math.inf, max_future_s=math.inf)
        self.restart()

    def restart(self) -> None:
        self.results: List[ModalityResult] = []
        self.fused: List[Tuple[float, str]] = []   # (state stamp, emotion)
        self.truth_events: List[Tuple[float, str]] = []
        self.messages: Dict[str, int] = defaultdict(int)
        self.counters: Dict[str, int] = defaultdict(int)
        self.lags: Dict[str, List[float]] = defaultdict(list)
        self.model_ids: Dict[str, set] = defaultdict(set)
        self.graph_totals: Dict[str, Dict] = {}  # /diagnostics, newest per status
        self.first_clock: Optional[float] = None
        self.last_clock: Optional[float] = None
        self.times: List[float] = []  # every time heard, for the learned start and end
        self.first_wall: Optional[float] = None
        self.last_wall: Optional[float] = None

    @property
    def heard(self) -> bool:
        return bool(self.results or self.fused or self.truth_events)

    # ------------------------------------------------------------------ what the node hears
    def clock(self, time_s: float) -> bool:
        """A /clock message. True when time went back and the recording restarted."""
        jumped = self.last_clock is not None and time_s < self.last_clock - TIME_JUMP_BACK_S
        if jumped:
            self.restart()
        if self.first_clock is None:
            self.first_clock = time_s
        self.last_clock = time_s
        return jumped

    def _heard(self, topic: str, wall: float, playing: bool = True) -> None:
        """Count a message; ``wall`` (monotonic s) spans the replay from the first message
        that only a playing bag produces (fused states are published while it waits)."""
        self.messages[topic] += 1
        if playing and self.first_wall is None:
            self.first_wall = wall
        self.last_wall = wall

    def add_result(self, topic: str, modality: str, now: float, wall: float, stamp: float,
                   label_names: Sequence[str], probabilities: Sequence[float],
                   confidence: float, track_id: int = -1, area: float = 0.0,
                   utterance_start: float = 0.0, utterance_end: float = 0.0,
                   model_id: str = '') -> Optional[str]:
        """One EmotionResult received at clock time ``now``; returns a problem to log, or
        None. A malformed result (as the fusion node judges it) is not scored; one too old
        or in the future at receipt is scored (offline scores every result) and reported:
        its stamps and the evaluator's clock disagree."""
        from mika_fusion.fusion import InvalidInput, make_observation
        self._heard(topic, wall)
        try:
            observation = make_observation(
                modality, stamp, label_names, probabilities, confidence, now, self._any_age,
                track_id=track_id, area=area, utterance_start=utterance_start,
                utterance_end=utterance_end)
        except InvalidInput as error:
            self.counters[f'{modality} rejected: {error.reason}'] += 1
            return f'not scoring a result on {topic}: {error}'
        voice = modality == 'voice'
        self.results.append(ModalityResult(
            modality, now, stamp, observation.probabilities, observation.confidence, track_id,
            area, end_stamp=utterance_end if voice else 0.0))
        self.counters[f'{modality} results'] += 1
        lag = now - observation.stamp
        self.lags[f'{modality}.end_to_end'].append(lag)
        if model_id:
            self.model_ids[modality].add(model_id)
        self.times.append(stamp)
        if lag > self.fusion.max_age_s or -lag > self.fusion.max_future_s:
            self.counters[f'{modality} results the fusion node refuses as stale or future'] += 1
            return (f'a result on {topic} stamped {lag:+.2f} s from this node\'s clock: the '
                    'fusion node refuses it. Replaying a bag? Run the graph and this node with '
                    'use_sim_time:=true and the player with --clock.')
        return None

    def add_fused(self, topic: str, stamp: float, emotion: str, wall: float) -> None:
        self._heard(topic, wall, playing=False)
        self.counters['fused states'] += 1
        self.fused.append((stamp, emotion))
        if stamp > 0:  # a state published before the node had a clock is stamped 0
            self.times.append(stamp)

    def add_truth(self, topic: str, now: float, label: str, wall: float) -> Optional[str]:
        """A ground-truth message received at clock time ``now``; returns why it was
        refused (a label that is not one of the seven), or None."""
        self._heard(topic, wall)
        if label and label not in EMOTION_LABELS:
            self.counters['truth rejected: unknown label'] += 1
            return f'label {label!r} is not one of {", ".join(EMOTION_LABELS)}'
        self.truth_events.append((now, label))
        self.times.append(now)
        return None

    def add_diagnostics(self, status_name: str, values: Dict[str, str]) -> None:
        """A node's /diagnostics status: its running totals (frames received, dropped while
        the worker was busy ...) go into the report, to explain what live mode lost."""
        totals = {k[:-len(' total')]: v for k, v in values.items() if k.endswith(' total')}
        totals.update({k: v for k, v in values.items() if k.startswith('rejected: ')})
        if totals:
            self.graph_totals[status_name] = {
                k: int(v) if v.isdigit() else v for k, v in totals.items()}

    # ------------------------------------------------------------------ the report
    def span(self) -> Tuple[float, float, str]:
        """``(start, end, where the start came from)`` of the recording, bag time."""
        settings = self.settings
        if settings.bag is not None:
            start, end, _ = bag_metadata(settings.bag)
            source = f'the metadata of bag {settings.bag}'
        else:
            end = max(self.times + ([self.last_clock] if self.last_clock else []),
                      default=None)
            if self.first_clock is not None:
                start, source = self.first_clock, 'the first /clock message'
            elif self.times:
                start = min(self.times)
                source = 'the earliest time heard (no /clock, no bag, no bag_start_s)'
            else:
                raise BagError('nothing was heard: no result, state or truth message')
        if settings.bag_start_s:
            start, source = settings.bag_start_s, 'parameter bag_start_s'
        if end is None or not end > start:
            raise BagError(f'nothing was heard after the bag start {start:.3f} s')
        return start, end, source

    def build(self) -> Tuple[ReplayLog, Timeline]:
        """The recording as the offline evaluation's log and timeline (BagError when it
        cannot be scored: no ground truth, nothing heard)."""
        settings = self.settings
        start, end, start_source = self.span()
        if settings.labels_file is not None:
            truth = read_truth_csv(settings.labels_file, start)
            truth_source = f'file {settings.labels_file}'
        else:
            if not any(label for _, label in self.truth_events):
                raise BagError('no ground truth heard on emotion/ground_truth: is the bag '
                               'playing its truth topic, or pass labels_file')
            events = sorted(self.truth_events)
            if start < events[0][0] <= start + TRUTH_START_SLACK_S:
                events[0] = (start, events[0][1])
            truth = intervals_from_label_messages(events, end)
            truth_source = 'topic emotion/ground_truth (evaluator clock at receipt)'
        ticks = np.arange(start, end + 1e-9, 1.0 / settings.graph.fusion['publish_rate_hz'])
        labels = {**modality_labels(self.results, ticks, self.fusion.max_age_s),
                  'fused': fused_labels(self.fused, ticks, settings.fused_timeout_s)}
        timeline = Timeline(ticks, labels, [], {})
        storage = bag_metadata(settings.bag)[2] if settings.bag is not None else 'live'
        wall = (self.last_wall - self.first_wall) if self.first_wall is not None else 0.0
        counters = dict(self.counters)
        for status, totals in sorted(self.graph_totals.items()):
            counters.update({f'{status}: {key}': value for key, value in totals.items()})
        log = ReplayLog(
            bag=str(settings.bag) if settings.bag else 'live', storage=storage,
            start=start, end=end, results=list(self.results), stage_seconds=dict(self.lags),
            counters=counters, messages=dict(self.messages), truth=truth,
            truth_source=truth_source, wall_s=wall,
            model_ids={m: ', '.join(sorted(ids)) for m, ids in self.model_ids.items()},
            notes=[f'live: bag start from {start_source}; fused = the newest state the '
                   'fusion node published at or before each tick (none if older than '
                   f'{settings.fused_timeout_s:g} s); a result counts from its receipt by the '
                   'evaluator; latency rows: receipt (evaluator clock) minus sensor stamp '
                   '(voice: utterance end); counters "<node>: ..." are the graph\'s own '
                   'totals from /diagnostics'],
            manifest=_manifest(settings.bag) if settings.bag else {}, mode='live')
        return log, timeline

    def write_report(self, output_dir: Optional[Path] = None) -> Dict:
        """Score and write report.json (last), report.md and the figures (and replay.pkl
        with ``save_replay``); the report."""
        from mika_evaluation.report import build_report, write_report
        log, timeline = self.build()
        report = build_report(log, timeline, self.settings.graph)
        core = fusion_core_check(log, timeline, self.settings.graph.fusion)
        report['fusion_core'] = core
        report['notes'].append(
            f'fusion node against its core fed the results heard: the same state on '
            f'{core["agreement"]:.1%} of the labelled ticks; core accuracy '
            f'{core["summary"]["accuracy"]:.3f}, coverage {core["summary"]["coverage"]:.2f}')
        output_dir = Path(output_dir or self.settings.output_dir)
        if self.settings.save_replay:
            output_dir.mkdir(parents=True, exist_ok=True)
            save_replay(log, output_dir / 'replay.pkl')
        write_report(report, log, timeline, output_dir, plots=self.settings.plots)
        return report


def fusion_core_check(log: ReplayLog, timeline: Timeline, fusion_values: Dict) -> Dict:
    """The fusion core (:func:`~mika_evaluation.offline.fuse`) on the results in ``log`` at
    their receipt, on ``timeline``'s ticks, against the states published there: its scores,
    and the share of labelled ticks with the same state (both none counts as the same).
    Frame drops change the results, not this comparison."""
    from mika_evaluation.report import _timeline_scores
    core = fuse(log, fusion_values)  # the ticks of build(): same start, end and rate
    truth = [label_at(log.truth, t) for t in timeline.times]
    labelled = [i for i, label in enumerate(truth) if label is not None]
    same = sum(core.labels['fused'][i] == timeline.labels['fused'][i] for i in labelled)
    scores = _timeline_scores(core.times, truth, core.labels['fused'])
    return {'summary': {key: scores[key] for key in ('accuracy', 'coverage', 'flips_per_minute')},
            'agreement': same / len(labelled) if labelled else float('nan'),
            'ticks': len(labelled)}


def fused_labels(states: Sequence[Tuple[float, str]], ticks: np.ndarray, timeout_s: float
                 ) -> List[Optional[str]]:
    """The fused label at each tick: the newest state stamped at or before it (the last
    received of equal stamps), None when it is 'unknown' or older than ``timeout_s``."""
    if not states:
        return [None] * len(ticks)
    order = sorted(range(len(states)), key=lambda i: states[i][0])  # stable
    stamps = np.array([states[i][0] for i in order])
    emotions = [states[i][1] for i in order]
    labels: List[Optional[str]] = []
    for tick, index in zip(ticks, np.searchsorted(stamps, ticks, side='right') - 1):
        if index < 0 or tick - stamps[index] > timeout_s or emotions[index] == UNKNOWN:
            labels.append(None)
        else:
            labels.append(emotions[index])
    return labels


def summary_line(report: Dict) -> str:
    return ' '.join(f'{k}: acc {v["accuracy"]:.3f} cov {v["coverage"]:.2f} '
                    f'flips/min {v["flips_per_minute"]:.2f};'
                    for k, v in report['summary'].items())
