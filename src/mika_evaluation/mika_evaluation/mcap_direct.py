"""Read an uncompressed, time-ordered MCAP rosbag2 file without copying message data.

On its way out of an MCAP chunk, ``rosbags`` copies each message three times: about 0.8 ms
per 640x480 frame here, an eighth of what a frame may cost in a replay at 5x real time at
30 FPS. This reader maps the file into memory and hands out memoryviews into it.

It reads only the common layout (what ``ros2 bag record`` and ``rosbags`` write without
compression): one ``.mcap`` file, messages inside uncompressed chunks whose time ranges
follow one another. :func:`plan` checks that by walking the record headers (it touches no
message data) and returns None for anything else (compressed or overlapping chunks,
messages outside chunks, split bags, a damaged or truncated file); the caller then reads
the bag with ``rosbags``, which also gives the established error messages.
"""
from __future__ import annotations

import mmap
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

MAGIC = b'\x89MCAP0\r\n'
OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x02, 0x03, 0x04, 0x05, 0x06
OP_DATA_END = 0x0F
_U16 = struct.Struct('<H')
_U32 = struct.Struct('<I')
_U64 = struct.Struct('<Q')
_RECORD = struct.Struct('<BQ')            # opcode, content length
_CHUNK = struct.Struct('<QQQI')           # start time, end time, uncompressed size, crc
_MESSAGE = struct.Struct('<HIQQ')         # channel id, sequence, log time, publish time


@dataclass(frozen=True)
class McapPlan:
    """Where the chunks' records are, and each channel's (topic, schema name)."""

    path: Path
    chunks: List[Tuple[int, int, int]]     # (first record offset, end offset, crc or 0)
    channels: Dict[int, Tuple[str, str]]


def _string(buffer, offset: int) -> Tuple[str, int]:
    size = _U32.unpack_from(buffer, offset)[0]
    return bytes(buffer[offset + 4:offset + 4 + size]).decode(), offset + 4 + size


def _walk(buffer, start: int, end: int) -> Iterator[Tuple[int, int, int]]:
    """(opcode, content start, content end) of the records in ``buffer[start:end]``;
    ValueError when a record runs past ``end``."""
    offset = start
    while offset < end:
        if offset + _RECORD.size > end:
            raise ValueError('truncated record header')
        opcode, length = _RECORD.unpack_from(buffer, offset)
        body = offset + _RECORD.size
        if body + length > end:
            raise ValueError('truncated record')
        yield opcode, body, body + length
        offset = body + length


def _note_schema_or_channel(buffer, opcode: int, body: int, schemas: Dict[int, str],
                            channels: Dict[int, Tuple[str, str]]) -> None:
    if opcode == OP_SCHEMA:
        schema_id = _U16.unpack_from(buffer, body)[0]
        schemas[schema_id] = _string(buffer, body + 2)[0]
    elif opcode == OP_CHANNEL:
        channel_id, schema_id = struct.unpack_from('<HH', buffer, body)
        topic = _string(buffer, body + 4)[0]
        channels[channel_id] = (topic, schemas.get(schema_id, ''))


def plan(bag: Path) -> Optional[McapPlan]:
    """The reading plan of a rosbag2 directory holding one plain MCAP file, else None."""
    files = sorted(Path(bag).glob('*.mcap'))
    if len(files) != 1 or any(Path(bag).glob('*.db3')):
        return None
    with files[0].open('rb') as handle:
        try:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return None
    with mapped:
        if mapped[:len(MAGIC)] != MAGIC:
            return None
        schemas: Dict[int, str] = {}
        channels: Dict[int, Tuple[str, str]] = {}
        chunks: List[Tuple[int, int, int]] = []
        previous_end = -1
        try:
            for opcode, body, end in _walk(mapped, len(MAGIC), len(mapped)):
                if opcode in (OP_DATA_END, OP_FOOTER):
                    break
                if opcode == OP_MESSAGE:
                    return None  # messages outside chunks: leave them to rosbags
                if opcode != OP_CHUNK:
                    _note_schema_or_channel(mapped, opcode, body, schemas, channels)
                    continue
                start_time, end_time, size, crc = _CHUNK.unpack_from(mapped, body)
                compression, offset = _string(mapped, body + _CHUNK.size)
                records_size = _U64.unpack_from(mapped, offset)[0]
                first = offset + _U64.size
                if compression or records_size != size or first + records_size > end:
                    return None
                if start_time < previous_end:
                    return None  # chunks overlap in time: they would need merging
                previous_end = end_time
                for inner, inner_body, _ in _walk(mapped, first, first + records_size):
                    _note_schema_or_channel(mapped, inner, inner_body, schemas, channels)
                chunks.append((first, first + records_size, crc))
            else:
                return None  # no footer: the file was cut short
        except (ValueError, struct.error, UnicodeDecodeError):
            return None
    return McapPlan(files[0], chunks, channels)


def messages(mcap: McapPlan, wanted: Dict[Tuple[str, str], object]
             ) -> Iterator[Tuple[object, int, memoryview]]:
    """(connection, log time ns, data) in time order for the channels whose (topic, type)
    is a key of ``wanted``; ``data`` is a read-only view into the mapped file, valid as long
    as it is referenced (the mapping closes when the last view is gone). A chunk whose
    checksum (when the writer set one) does not match raises ValueError."""
    selected = {channel_id: wanted[key] for channel_id, key in mcap.channels.items()
                if key in wanted}
    with mcap.path.open('rb') as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mapped)
    for first, end, crc in mcap.chunks:
        if crc and zlib.crc32(view[first:end]) != crc:
            raise ValueError(f'chunk at byte {first} of {mcap.path.name} fails its checksum')
        found = []
        for opcode, body, record_end in _walk(mapped, first, end):
            if opcode != OP_MESSAGE:
                continue
            channel_id, _, log_time, _ = _MESSAGE.unpack_from(mapped, body)
            connection = selected.get(channel_id)
            if connection is not None:
                found.append((log_time, connection, body + _MESSAGE.size, record_end))
        found.sort(key=lambda item: item[0])  # stable: equal times keep the file order
        for log_time, connection, start, stop in found:
            yield connection, log_time, view[start:stop]
