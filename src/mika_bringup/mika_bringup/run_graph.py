"""Start the Mika node graph as processes, the way the launch file does, without `launch`.

ROS 2 installed from PyPI wheels has no `launch` or `ros2` command; this runner takes the
launch file's arguments (``name:=value``) and node list (:mod:`mika_bringup.graph`), starts
each enabled node's installed executable with the same parameters file and remappings,
respawns a node that exits, and stops them all on Ctrl-C or after ``--duration`` seconds.

    run_graph camera_topic:=/camera/image_raw enable_logger:=true --duration 30
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

from ament_index_python.packages import (
    PackageNotFoundError, get_package_prefix, get_package_share_directory)

from mika_bringup.graph import (
    ARGUMENTS, NodeSpec, default_arguments, is_true, node_specs, resolve_params_file,
    validate_arguments)
from mika_common.process_signals import (
    die_with_parent, ignore_interrupts, interrupt_on_stop_signals)

RESPAWN_DELAY_S = 2.0


def node_command(spec: NodeSpec, arguments: Dict[str, str]) -> List[str]:
    """The command line launch_ros would build for ``spec``."""
    try:
        prefix = get_package_prefix(spec.package)
    except PackageNotFoundError as error:
        raise RuntimeError(
            f'package {spec.package} is not built or not sourced: run scripts/setup.sh, then '
            f'source scripts/env.sh ({error})') from error
    executable = os.path.join(prefix, 'lib', spec.package, spec.executable)
    if not os.access(executable, os.X_OK):
        raise RuntimeError(f'{executable} is missing: rebuild the workspace (scripts/setup.sh)')
    params_file = resolve_params_file(arguments, get_package_share_directory('mika_bringup'))
    command = [executable, '--ros-args', '-r', f'__node:={spec.name}',
               '--params-file', params_file,
               '-p', f'use_sim_time:={arguments["use_sim_time"]}',
               '--log-level', arguments['log_level']]
    if arguments['namespace']:
        command += ['-r', '__ns:=/' + arguments['namespace'].strip('/')]
    for source, target in spec.remappings:
        command += ['-r', f'{source}:={target}']
    return command


class GraphProcesses:
    """The enabled nodes as child processes, respawned when they exit (if asked).

    ``log_directory``: each node's output is appended to ``<name>.log`` there instead of
    going to this process's terminal (the soak benchmark reads it).
    """

    def __init__(self, arguments: Dict[str, str], log_directory: Optional[str] = None):
        validate_arguments(arguments)
        self.arguments = {**default_arguments(), **arguments}
        self.specs = [spec for spec in node_specs(self.arguments)
                      if is_true(self.arguments[spec.enable_argument])]
        self.commands = {spec.name: node_command(spec, self.arguments) for spec in self.specs}
        self.processes: Dict[str, subprocess.Popen] = {}
        self.respawns: Dict[str, int] = {name: 0 for name in self.commands}
        self._log_directory = log_directory
        self._exited_at: Dict[str, float] = {}

    def start(self) -> None:
        for name in self.commands:
            self._spawn(name)

    def _spawn(self, name: str) -> None:
        # a session of its own (Ctrl-C in the terminal reaches the runner only, which stops
        # the nodes in order), ended with the runner even if the runner is killed
        output = None
        if self._log_directory is not None:
            output = open(os.path.join(self._log_directory, f'{name}.log'), 'a')
        self.processes[name] = subprocess.Popen(self.commands[name], start_new_session=True,
                                                preexec_fn=die_with_parent, stdout=output,
                                                stderr=subprocess.STDOUT if output else None)
        if output is not None:
            output.close()  # the child holds its own descriptor

    def poll(self) -> None:
        """Respawn nodes that exited, after a delay, as launch's respawn does."""
        now = time.monotonic()
        for name, process in self.processes.items():
            if process.poll() is None:
                continue
            exited = self._exited_at.setdefault(name, now)
            if exited == now:
                print(f'[run_graph] {name} exited with code {process.returncode}'
                      + (f'; respawning in {RESPAWN_DELAY_S:.0f} s'
                         if is_true(self.arguments['respawn']) else ''), flush=True)
            if is_true(self.arguments['respawn']) and now - exited >= RESPAWN_DELAY_S:
                del self._exited_at[name]
                self.respawns[name] += 1
                self._spawn(name)

    def stop(self, timeout_s: float = 10.0) -> Dict[str, Optional[int]]:
        """SIGINT every node (a clean rclpy shutdown), SIGKILL what is still alive."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return {name: process.returncode for name, process in self.processes.items()}


def parse_arguments(argv: List[str]) -> tuple[Dict[str, str], argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='arguments (name:=value):\n' + '\n'.join(
            f'  {name} (default {default!r}): {text}'
            for name, (default, text, _) in ARGUMENTS.items()))
    parser.add_argument('--duration', type=float, default=None,
                        help='stop all nodes after this many seconds')
    options, rest = parser.parse_known_args(argv)
    arguments = {}
    for item in rest:
        if ':=' not in item:
            parser.error(f'expected name:=value, got {item!r}')
        name, value = item.split(':=', 1)
        arguments[name] = value
    return arguments, options


def main(argv: Optional[List[str]] = None) -> int:
    interrupt_on_stop_signals()
    arguments, options = parse_arguments(sys.argv[1:] if argv is None else argv)
    try:
        graph = GraphProcesses(arguments)
    except (ValueError, RuntimeError) as error:
        print(f'[run_graph] {error}', file=sys.stderr)
        return 2
    graph.start()
    print(f'[run_graph] started {", ".join(graph.processes)}', flush=True)
    deadline = None if options.duration is None else time.monotonic() + options.duration
    try:
        while deadline is None or time.monotonic() < deadline:
            graph.poll()
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    ignore_interrupts()  # a second Ctrl-C must not leave the nodes half-stopped
    codes = graph.stop()
    print(f'[run_graph] stopped: {codes}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
