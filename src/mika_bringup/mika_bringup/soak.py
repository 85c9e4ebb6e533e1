"""Soak benchmark: the whole graph for an hour with the sample camera and microphone looping.

    python -m mika_bringup.soak [--minutes 60] [--output bench/results/soak] [name:=value ...]

Starts the nodes as ``run_graph`` does (same parameters file, remappings and respawn; extra
``name:=value`` arguments are the launch file's), and ``sample_player`` with ``loop:=true``
(640x480 bgr8 frames at 15 fps, speech in 100 ms chunks). Every minute it samples each
process's resident memory and CPU time from ``/proc``, counts the results that arrived on
``emotion/face``, ``emotion/voice`` and ``emotion/fused``, and keeps the nodes' latest
``/diagnostics`` values. At the end it counts error lines, tracebacks and warnings in the
nodes' logs and writes ``<output>.md`` and ``<output>.json``: memory per minute, rates per
minute, and a verdict on memory growth (after warm-up) and rate stability.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import rclpy
from ament_index_python.packages import get_package_prefix
from diagnostic_msgs.msg import DiagnosticArray
from mika_msgs.msg import EmotionResult, FusedEmotion
from rclpy.node import Node

from mika_bringup.run_graph import GraphProcesses, parse_arguments
from mika_common.process_signals import (
    die_with_parent, interrupt_on_stop_signals, stop_process_group)
from mika_common.ros_io import latched_qos, results_qos

RESULT_TOPICS = {'face': 'emotion/face', 'voice': 'emotion/voice', 'fused': 'emotion/fused'}
#: Diagnostics values kept per node (``<key> per s`` and latency are 10 s windows).
DIAGNOSTIC_KEYS = ('frames per s', 'processed per s', 'dropped (worker busy) per s',
                   'chunks per s', 'utterances per s', 'latency p95 ms')
#: Minutes left out of the memory fit: models load, caches and allocator pools fill.
WARM_UP_MIN = 5
#: Memory growth (MB per hour, linear fit after warm-up) still called flat.
FLAT_MB_PER_HOUR = 20.0
#: A rate is stable when every minute after the first is within this fraction of the median.
STABLE_FRACTION = 0.25
LOG_PATTERNS = {'errors': re.compile(r'\[ERROR\]|\[FATAL\]'),
                'tracebacks': re.compile(r'^Traceback'),
                'warnings': re.compile(r'\[WARN\]')}
_TICKS = os.sysconf('SC_CLK_TCK')


class ResultCounter(Node):
    """Counts the graph's outputs and keeps each node's latest diagnostics values."""

    def __init__(self):
        super().__init__('soak_monitor')
        self.counts: Dict[str, int] = collections.Counter()
        self.diagnostics: Dict[str, Dict[str, str]] = {}
        for key, topic in RESULT_TOPICS.items():
            msg_type, qos = ((FusedEmotion, latched_qos()) if key == 'fused'
                             else (EmotionResult, results_qos()))
            self.create_subscription(msg_type, topic, self._counter(key), qos)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)

    def _counter(self, key: str):
        def count(_msg) -> None:
            self.counts[key] += 1
        return count

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            node = status.name.split(':', 1)[0]
            values = {value.key: value.value for value in status.values}
            values['level'] = str(status.level[0] if isinstance(status.level, bytes)
                                  else status.level)
            self.diagnostics[node] = values

    def take_counts(self) -> Dict[str, int]:
        counts, self.counts = dict(self.counts), collections.Counter()
        return counts


def process_sample(pid: int) -> Optional[Dict[str, float]]:
    """Resident memory (MB) and CPU seconds of ``pid`` and its children's threads."""
    try:
        status = Path(f'/proc/{pid}/status').read_text()
        fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    except OSError:
        return None
    rss_kb = int(re.search(r'^VmRSS:\s+(\d+)', status, re.M).group(1))
    cpu_s = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    return {'rss_mb': rss_kb / 1024.0, 'cpu_s': cpu_s}


def count_log_lines(log_directory: Path) -> Dict[str, Dict[str, object]]:
    """Error, traceback and warning counts per log, with the commonest warnings."""
    report = {}
    for path in sorted(log_directory.glob('*.log')):
        lines = path.read_text(errors='replace').splitlines()
        counts = {name: sum(1 for line in lines if pattern.search(line))
                  for name, pattern in LOG_PATTERNS.items()}
        warnings = collections.Counter(
            re.sub(r'[\d.]+', 'N', line.split(']: ', 1)[-1])[:120]
            for line in lines if LOG_PATTERNS['warnings'].search(line)
            or LOG_PATTERNS['errors'].search(line))
        report[path.stem] = {**counts, 'lines': len(lines),
                             'commonest': warnings.most_common(5)}
    return report


def memory_slope_mb_per_hour(minutes: List[float], rss: List[float]) -> Optional[float]:
    """Least-squares RSS growth after warm-up, in MB per hour (None: too few samples)."""
    points = [(m, r) for m, r in zip(minutes, rss) if m > WARM_UP_MIN and r is not None]
    if len(points) < 3:
        return None
    x, y = np.array(points).T
    return float(np.polyfit(x, y, 1)[0] * 60.0)


class Soak:
    def __init__(self, arguments: Dict[str, str], log_directory: Path):
        self.log_directory = log_directory
        self.graph = GraphProcesses(arguments, log_directory=str(log_directory))
        player = os.path.join(get_package_prefix('mika_bringup'), 'lib', 'mika_bringup',
                              'sample_player')
        self._player_command = [player, '--ros-args', '-p', 'loop:=true',
                                '-r', f'camera/image_raw:={self.graph.arguments["camera_topic"]}',
                                '-r', f'audio:={self.graph.arguments["audio_topic"]}',
                                '-r', f'audio_stamped:={self.graph.arguments["audio_topic"]}'
                                      '_stamped',
                                '-r', f'audio_info:={self.graph.arguments["audio_topic"]}_info']
        if self.graph.arguments['namespace']:
            self._player_command += ['-r', '__ns:=/' + self.graph.arguments['namespace']]
        self.player: Optional[subprocess.Popen] = None
        self.minutes: List[Dict[str, object]] = []

    def processes(self) -> Dict[str, subprocess.Popen]:
        return {**self.graph.processes, 'sample_player': self.player}

    def run(self, minutes: float, monitor: ResultCounter) -> None:
        self.graph.start()
        with open(self.log_directory / 'sample_player.log', 'a') as log:
            self.player = subprocess.Popen(self._player_command, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True,
                                           preexec_fn=die_with_parent)
        start = time.monotonic()
        previous_cpu: Dict[str, float] = {}
        next_sample = start + 60.0
        try:
            while time.monotonic() - start < minutes * 60.0:
                rclpy.spin_once(monitor, timeout_sec=0.2)
                self.graph.poll()
                if self.player.poll() is not None:
                    raise RuntimeError(f'sample_player exited with {self.player.returncode}: '
                                       f'see {self.log_directory / "sample_player.log"}')
                if time.monotonic() >= next_sample:
                    self._sample(monitor, (time.monotonic() - start) / 60.0, previous_cpu)
                    next_sample += 60.0
        finally:
            stop_process_group(self.player)
            self.codes = self.graph.stop()

    def _sample(self, monitor: ResultCounter, minute: float,
                previous_cpu: Dict[str, float]) -> None:
        row: Dict[str, object] = {'minute': round(minute, 2), 'results': monitor.take_counts(),
                                  'rss_mb': {}, 'cpu_percent': {},
                                  'diagnostics': {node: {k: v for k, v in values.items()
                                                         if k in DIAGNOSTIC_KEYS + ('level',)}
                                                  for node, values in monitor.diagnostics.items()}}
        for name, process in self.processes().items():
            sample = process_sample(process.pid) if process is not None else None
            if sample is None:
                continue
            row['rss_mb'][name] = round(sample['rss_mb'], 1)
            key = f'{name}:{process.pid}'
            if key in previous_cpu:
                row['cpu_percent'][name] = round(
                    100.0 * (sample['cpu_s'] - previous_cpu[key]) / 60.0, 1)
            previous_cpu[key] = sample['cpu_s']
        self.minutes.append(row)
        print(f'[soak] minute {minute:5.1f}: results {row["results"]} rss {row["rss_mb"]} '
              f'cpu% {row["cpu_percent"]}', flush=True)


def summarise(soak: Soak) -> Dict[str, object]:
    minutes = [row['minute'] for row in soak.minutes]
    names = list(soak.processes())
    memory = {}
    for name in names:
        rss = [row['rss_mb'].get(name) for row in soak.minutes]
        after = [r for m, r in zip(minutes, rss) if m > WARM_UP_MIN and r is not None]
        memory[name] = {
            'after_warm_up_mb': after[0] if after else None,
            'end_mb': after[-1] if after else None,
            'max_mb': max(after) if after else None,
            'slope_mb_per_hour': memory_slope_mb_per_hour(minutes, rss)}
    rates = {}
    for key in RESULT_TOPICS:
        per_minute = np.array([row['results'].get(key, 0) / 60.0 for row in soak.minutes[1:]])
        if per_minute.size == 0:
            continue
        median = float(np.median(per_minute))
        rates[key] = {'mean_per_s': float(per_minute.mean()), 'median_per_s': median,
                      'min_per_s': float(per_minute.min()), 'max_per_s': float(per_minute.max()),
                      'stable': bool(median > 0 and np.all(
                          np.abs(per_minute - median) <= STABLE_FRACTION * median))}
    logs = count_log_lines(soak.log_directory)
    flat = all(m['slope_mb_per_hour'] is not None
               and m['slope_mb_per_hour'] <= FLAT_MB_PER_HOUR for m in memory.values())
    errors = sum(log['errors'] + log['tracebacks'] for log in logs.values())
    stable = len(rates) == len(RESULT_TOPICS) and all(r['stable'] for r in rates.values())
    return {'memory': memory, 'rates': rates, 'logs': logs, 'respawns': soak.graph.respawns,
            'exit_codes': soak.codes, 'memory_flat': flat, 'rates_stable': stable,
            'errors': errors}


def write_report(output: Path, arguments: Dict[str, str], soak: Soak,
                 summary: Dict[str, object]) -> None:
    load = os.getloadavg()[0]
    when = datetime.datetime.now().isoformat(timespec='minutes')
    names = list(soak.processes())
    lines = [
        '# Soak: the launched graph for an hour', '',
        f'Written by `python -m mika_bringup.soak` on {when} ({os.cpu_count()} cores, load '
        f'average {load:.1f} at the end). Graph arguments: '
        f'{" ".join(f"{k}:={v}" for k, v in arguments.items()) or "defaults"}; '
        f'FASTDDS_BUILTIN_TRANSPORTS={os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "(unset)")}.'
        ' `sample_player loop:=true`: 640x480 bgr8 frames at 15 fps and speech in 100 ms '
        'chunks, looped for the whole run.', '',
        '## Verdict', '',
        f'- memory: {"flat" if summary["memory_flat"] else "NOT flat"} (every process below '
        f'{FLAT_MB_PER_HOUR:.0f} MB/h growth, least-squares fit after minute {WARM_UP_MIN})',
        f'- errors and tracebacks in the node logs: {summary["errors"]}; respawns: '
        f'{summary["respawns"]}; exit codes at the stop: {summary["exit_codes"]}',
        '- warnings in the node logs: ' + ('; '.join(
            f'{name} {log["warnings"]} ({log["commonest"][0][1]}x `{log["commonest"][0][0]}`)'
            for name, log in summary['logs'].items() if log['warnings']) or '0'),
        f'- rates: {"stable" if summary["rates_stable"] else "NOT stable"} (every minute after '
        f'the first within {STABLE_FRACTION:.0%} of the median, none at zero); results per '
        'second (mean, min..max over minutes): ' + '; '.join(
            f'{key} {r["mean_per_s"]:.2f} ({r["min_per_s"]:.2f}..{r["max_per_s"]:.2f})'
            for key, r in summary['rates'].items()), '',
        '## Memory (RSS, MB)', '',
        '| process | after warm-up | end | max | growth MB/h |', '|---|---:|---:|---:|---:|']
    for name, m in summary['memory'].items():
        slope = m['slope_mb_per_hour']
        lines.append(f'| {name} | {m["after_warm_up_mb"]} | {m["end_mb"]} | {m["max_mb"]} | '
                     + (f'{slope:+.1f}' if slope is not None else 'n/a') + ' |')
    lines += ['', '## Per minute', '',
              'RSS in MB and CPU in % of one core per process; results received in the minute; '
              'face node frames/s received and processed, from its diagnostics (10 s window).',
              '',
              '| minute | ' + ' | '.join(f'{n} MB' for n in names) + ' | '
              + ' | '.join(f'{n} CPU%' for n in names)
              + ' | face | voice | fused | camera frames/s at face_node | processed/s |',
              '|' + '---:|' * (2 * len(names) + 6)]
    for row in soak.minutes:
        face_diag = next((v for k, v in row['diagnostics'].items() if 'face_node' in k), {})
        lines.append(
            f'| {row["minute"]:.0f} | '
            + ' | '.join(str(row['rss_mb'].get(n, '')) for n in names) + ' | '
            + ' | '.join(str(row['cpu_percent'].get(n, '')) for n in names) + ' | '
            + ' | '.join(str(row['results'].get(k, 0)) for k in RESULT_TOPICS) + ' | '
            + f'{face_diag.get("frames per s", "")} | {face_diag.get("processed per s", "")} |')
    lines += ['', '## Node logs', '', '| log | lines | errors | tracebacks | warnings | '
              'commonest warning or error lines |', '|---|---:|---:|---:|---:|---|']
    for name, log in summary['logs'].items():
        commonest = '; '.join(f'{n}x `{text}`' for text, n in log['commonest']) or '-'
        lines.append(f'| {name} | {log["lines"]} | {log["errors"]} | {log["tracebacks"]} | '
                     f'{log["warnings"]} | {commonest.replace("|", "/")} |')
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix('.md').write_text('\n'.join(lines) + '\n')
    output.with_suffix('.json').write_text(json.dumps(
        {'written': when, 'arguments': arguments, 'summary': summary,
         'minutes': soak.minutes}, indent=1, default=str))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--minutes', type=float, default=60.0)
    parser.add_argument('--output', type=Path, default=Path('bench/results/soak'))
    options, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    arguments, _ = parse_arguments(rest)
    log_directory = Path(tempfile.mkdtemp(prefix='mika-soak-'))
    print(f'[soak] {options.minutes:.0f} min; node logs in {log_directory}', flush=True)
    interrupt_on_stop_signals()
    soak = Soak(arguments, log_directory)
    rclpy.init()
    monitor = ResultCounter()
    try:
        soak.run(options.minutes, monitor)
    except KeyboardInterrupt:
        print('[soak] interrupted: writing what was measured', flush=True)
    finally:
        monitor.destroy_node()
        rclpy.try_shutdown()
    summary = summarise(soak)
    write_report(options.output, arguments, soak, summary)
    print(f'[soak] wrote {options.output.with_suffix(".md")}', flush=True)
    passed = summary['memory_flat'] and summary['rates_stable'] and summary['errors'] == 0
    return 0 if passed else 1


if __name__ == '__main__':
    sys.exit(main())
