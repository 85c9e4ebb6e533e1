"""The recorder's prompts: which emotion to show (and what to read) when, and the labels.

ROS-free. A session is a lead-in, then one prompt per emotion separated by unlabelled
pauses. A prompt lasts ``seconds_per_emotion`` (free expression: the person shows the
emotion and says something that fits), or ``lines_per_emotion`` lines of
``seconds_per_line`` each, read aloud in that emotion. Only the part of a prompt after
``settle_s`` is labelled: the first moments are the person changing expression, and a label
there would teach the model the previous emotion's face under the new name.

Lines: the built-in ones are emotion-neutral sentences, read in every emotion as acted
corpora (RAVDESS, EmoDB) do, so the voice model learns how something is said rather than
what. A lines file holds one line per line; ``#`` starts a comment; a line written
``happy: I got the job!`` is read only for that emotion, and comes before the shared lines.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation.bag_format import Interval

DEFAULT_LINES = (
    'The train leaves at nine in the morning.',
    'I put the keys on the kitchen table.',
    'We talked about it on the way home.',
    'The letter arrived this afternoon.',
    'There are two chairs next to the door.',
    'She said the shop opens again on Monday.',
)


@dataclass(frozen=True)
class ScheduleConfig:
    emotions: Tuple[str, ...] = tuple(EMOTION_LABELS)
    seconds_per_emotion: float = 20.0
    lines_per_emotion: int = 0  # 0: free expression for seconds_per_emotion
    seconds_per_line: float = 5.0
    pause_s: float = 4.0
    settle_s: float = 1.0
    lead_in_s: float = 3.0

    def check(self) -> None:
        """ValueError naming what is wrong."""
        unknown = [e for e in self.emotions if e not in EMOTION_LABELS]
        if not self.emotions or unknown:
            raise ValueError(f'emotions must be some of {", ".join(EMOTION_LABELS)}; '
                             f'got {list(self.emotions)}')
        if len(set(self.emotions)) != len(self.emotions):
            raise ValueError(f'emotions lists one twice: {list(self.emotions)}')
        if self.prompt_s <= self.settle_s:
            raise ValueError(f'each prompt lasts {self.prompt_s:g} s, not longer than '
                             f'settle_s {self.settle_s:g} s: nothing would be labelled')
        if min(self.pause_s, self.settle_s, self.lead_in_s) < 0:
            raise ValueError('pause_s, settle_s and lead_in_s must not be negative')

    @property
    def prompt_s(self) -> float:
        if self.lines_per_emotion > 0:
            return self.lines_per_emotion * self.seconds_per_line
        return self.seconds_per_emotion


@dataclass(frozen=True)
class Step:
    """One text shown or said, from ``start`` to ``end`` (seconds from the schedule start)."""

    start: float
    end: float
    text: str
    emotion: Optional[str]  # None: lead-in or pause (unlabelled)


@dataclass(frozen=True)
class Prompt:
    number: int  # 1-based
    emotion: str
    start: float
    end: float
    lines: Tuple[str, ...]


def read_lines_file(path: Path) -> Tuple[List[str], Dict[str, List[str]]]:
    """(shared lines, lines per emotion); ValueError for a file without lines or with an
    unknown ``emotion:`` prefix."""
    shared: List[str] = []
    specific: Dict[str, List[str]] = {}
    try:
        text = Path(path).read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f'lines file {path}: {error}') from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split('#', 1)[0].strip()
        if not line:
            continue
        prefix, colon, rest = line.partition(':')
        if colon and prefix.strip().isalpha() and prefix.strip().lower() == prefix.strip():
            if prefix.strip() not in EMOTION_LABELS:
                raise ValueError(f'lines file {path}, line {number}: {prefix.strip()!r} is '
                                 f'not one of {", ".join(EMOTION_LABELS)}')
            specific.setdefault(prefix.strip(), []).append(rest.strip())
        else:
            shared.append(line)
    if not shared and not specific:
        raise ValueError(f'lines file {path} holds no lines')
    return shared, specific


class PromptSchedule:
    """All steps and prompts of one session, computed up front."""

    def __init__(self, config: ScheduleConfig, lines_file: Optional[Path] = None):
        config.check()
        self.config = config
        shared, specific = (read_lines_file(lines_file) if lines_file
                            else (list(DEFAULT_LINES), {}))
        self.prompts: List[Prompt] = []
        self.steps: List[Step] = []
        count = len(config.emotions)
        time_s = config.lead_in_s
        if config.lead_in_s > 0:
            self.steps.append(Step(0.0, time_s, f'Recording starts. First: '
                                   f'{config.emotions[0]}, in {config.lead_in_s:g} s.', None))
        for index, emotion in enumerate(config.emotions):
            lines: Tuple[str, ...] = ()
            if config.lines_per_emotion > 0:
                pool = specific.get(emotion, []) + shared
                if not pool:
                    raise ValueError(f'the lines file has no line for {emotion} and no '
                                     'shared lines')
                lines = tuple(pool[i % len(pool)] for i in range(config.lines_per_emotion))
            prompt = Prompt(index + 1, emotion, time_s, time_s + config.prompt_s, lines)
            self.prompts.append(prompt)
            self.steps.extend(self._prompt_steps(prompt, count))
            time_s = prompt.end
            if index + 1 < count and config.pause_s > 0:
                self.steps.append(Step(time_s, time_s + config.pause_s,
                                       f'Pause. Next: {config.emotions[index + 1]}.', None))
                time_s += config.pause_s
        self.total_s = time_s

    def _prompt_steps(self, prompt: Prompt, count: int) -> List[Step]:
        heading = f'Emotion {prompt.number} of {count}: {prompt.emotion}.'
        if not prompt.lines:
            return [Step(prompt.start, prompt.end,
                         f'{heading} Show it, and say something that fits, for '
                         f'{self.config.seconds_per_emotion:g} s.', prompt.emotion)]
        steps = []
        for number, line in enumerate(prompt.lines, start=1):
            start = prompt.start + (number - 1) * self.config.seconds_per_line
            text = (f'{heading} Read as if you were {prompt.emotion}: "{line}"' if number == 1
                    else f'{prompt.emotion}, line {number} of {len(prompt.lines)}: "{line}"')
            steps.append(Step(start, start + self.config.seconds_per_line, text,
                              prompt.emotion))
        return steps

    def describe(self) -> str:
        c = self.config
        what = (f'{c.lines_per_emotion} lines x {c.seconds_per_line:g} s'
                if c.lines_per_emotion > 0 else f'{c.seconds_per_emotion:g} s')
        return (f'{len(self.prompts)} emotions ({", ".join(c.emotions)}) x {what}, settle '
                f'{c.settle_s:g} s, pause {c.pause_s:g} s, lead-in {c.lead_in_s:g} s: '
                f'{self.total_s:.1f} s in all')


class PromptRunner:
    """Follows a schedule in real time and labels by when prompts were actually given.

    The steps are announced in order and none is skipped: a timer that comes late (a busy
    machine) announces the next step, never the one after it. A step announced after its
    end, or an emotion with ``settle_s`` or less of it left (nothing would be labelled),
    is given its whole length, and the steps after it move later by as much; a step that is
    only late keeps the schedule's times (it is shortened). A prompt announced late is
    labelled from its announcement plus ``settle_s``, never from when it was due: the person
    cannot show an emotion before being asked. An emotion's labelled time ends when the
    next step is announced, or at :meth:`intervals`' ``stop_s`` when the recording stops
    early.
    """

    def __init__(self, schedule: PromptSchedule):
        self.schedule = schedule
        self.started_at: Optional[float] = None
        self._next = 0  # index of the next step to announce
        self._delay = 0.0  # how much later than planned the schedule runs
        self._open: Optional[Tuple[float, str]] = None  # (announced at, emotion)
        self._intervals: List[Interval] = []
        self.done = False

    def start(self, now: float) -> None:
        self.started_at = now

    def update(self, now: float) -> Optional[Step]:
        """The step to announce now, else None; after the last step's time ``done``
        becomes True."""
        if self.started_at is None or self.done:
            return None
        steps = self.schedule.steps
        elapsed = now - self.started_at - self._delay
        if self._next == len(steps):
            if elapsed >= self.schedule.total_s:
                self._close(now)
                self.done = True
            return None
        step = steps[self._next]
        if elapsed < step.start:
            return None
        left = step.end - elapsed
        if left <= 0 or (step.emotion is not None and left <= self.schedule.config.settle_s):
            self._delay += elapsed - step.start
        self._next += 1
        if self._open is None or step.emotion != self._open[1]:
            self._close(now)
            if step.emotion is not None:
                self._open = (now, step.emotion)
        return step

    def _close(self, now: float) -> None:
        if self._open is not None:
            start = self._open[0] + self.schedule.config.settle_s
            if now > start:
                self._intervals.append(Interval(start, now, self._open[1]))
            self._open = None

    def intervals(self, stop_s: Optional[float] = None) -> List[Interval]:
        """Labelled intervals (the clock's times); ``stop_s`` closes an open one."""
        if stop_s is not None:
            self._close(stop_s)
        return list(self._intervals)


def check_emotions(emotions: Sequence[str]) -> Optional[str]:
    """ParamSpec validator for the emotions list."""
    try:
        ScheduleConfig(emotions=tuple(emotions)).check()
    except ValueError as error:
        return str(error)
    return None
