"""Test helpers for Mika packages: spinning until a condition, node processes with logs.

Used by the in-process and process-level tests of every package (not by the nodes).
"""
import contextlib
import os
import pathlib
import subprocess
import time

from mika_common.process_signals import die_with_parent, stop_process_group


def spin_until(executor, predicate, timeout_s):
    """Spin ``executor`` until ``predicate()`` holds or ``timeout_s`` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        if predicate():
            return True
    return predicate()


def child_pids(pid):
    """The pids of the processes ``pid`` started (Linux /proc)."""
    return [int(c) for c in pathlib.Path(f'/proc/{pid}/task/{pid}/children').read_text().split()]


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
        stop_process_group(self.process)
        self._log.close()
        return self.process.returncode


def with_metadata_entry(source, target, payload: bytes, entry: str = 'mika.json',
                        corrupt_deflate: bool = False):
    """A copy of the model archive ``source`` at ``target`` whose ``entry`` holds
    ``payload``, deflated; ``corrupt_deflate`` damages that stream (reading the entry then
    raises zlib.error). Returns ``target``."""
    import zipfile
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, 'w') as copy:
        for info in original.infolist():
            if info.filename != entry:
                copy.writestr(info, original.read(info))
        copy.writestr(entry, payload, compress_type=zipfile.ZIP_DEFLATED)
    if corrupt_deflate:
        with zipfile.ZipFile(target) as archive:
            offset = archive.getinfo(entry).header_offset
        with open(target, 'r+b') as stream:
            stream.seek(offset + 26)  # local header: name and extra field lengths
            header = stream.read(4)
            name_length = int.from_bytes(header[:2], 'little')
            extra_length = int.from_bytes(header[2:], 'little')
            stream.seek(offset + 30 + name_length + extra_length)
            stream.write(b'\xff\xff')  # a deflate block of the reserved type 3
    return target
