"""Test helpers for Mika packages: spinning until a condition, node processes with logs.

Used by the in-process and process-level tests of every package (not by the nodes).
"""
import contextlib
import os
import pathlib
import signal
import subprocess
import time

from mika_common.process_signals import die_with_parent


def spin_until(executor, predicate, timeout_s):
    """Spin ``executor`` until ``predicate()`` holds or ``timeout_s`` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        if predicate():
            return True
    return predicate()


@contextlib.contextmanager
def probe_node(name):
    """(node, executor) in this process, in a context of its own, for talking to node
    processes over DDS; shut down on leaving."""
    import rclpy
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


class NodeProcess:
    """A node started as its own process, with its stderr kept for log assertions."""

    def __init__(self, command, env=None):
        self.log_path = pathlib.Path(os.environ.get('TMPDIR', '/tmp')) / (
            f'mika-test-{os.getpid()}-{time.monotonic_ns()}.log')
        self._log = open(self.log_path, 'w+')
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=die_with_parent)

    def output(self):
        self._log.flush()
        return self.log_path.read_text()

    def wait_for_output(self, text, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        return text in self.output()

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode
