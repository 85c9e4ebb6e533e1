"""The zero-copy MCAP reader gives exactly what rosbags gives, and declines what it cannot
read (the replay then reads the bag with rosbags)."""
import shutil
import struct
import zlib

import pytest

from mika_evaluation import mcap_direct
from mika_evaluation.offline import open_bag


def rosbags_messages(bag):
    reader = open_bag(bag)
    try:
        messages = [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
        return messages, list(reader.connections)  # close() empties the reader's list
    finally:
        reader.close()


def direct_messages(bag, connections):
    plan = mcap_direct.plan(bag)
    assert plan is not None
    wanted = {(c.topic, c.msgtype): c for c in connections}
    return [(c.topic, t, bytes(data)) for c, t, data in mcap_direct.messages(plan, wanted)]


def copy_of(small_bags, tmp_path):
    bag = tmp_path / 'copy'
    shutil.copytree(small_bags['mcap'][0], bag)
    return bag, next(bag.glob('*.mcap'))


def test_same_messages_in_the_same_order_as_rosbags(small_bags):
    bag = small_bags['mcap'][0]
    expected, connections = rosbags_messages(bag)
    assert len(expected) > 100
    assert direct_messages(bag, connections) == expected


def test_only_the_wanted_topics_are_read(small_bags):
    bag = small_bags['mcap'][0]
    expected, connections = rosbags_messages(bag)
    audio = [c for c in connections if c.topic == '/audio_stamped']
    got = [(c.topic, t, bytes(d)) for c, t, d in mcap_direct.messages(
        mcap_direct.plan(bag), {(c.topic, c.msgtype): c for c in audio})]
    assert got == [m for m in expected if m[0] == '/audio_stamped']


def test_sqlite_truncated_and_foreign_files_are_left_to_rosbags(small_bags, tmp_path):
    assert mcap_direct.plan(small_bags['sqlite3'][0]) is None
    bag, file = copy_of(small_bags, tmp_path)
    file.write_bytes(file.read_bytes()[:file.stat().st_size * 2 // 3])
    assert mcap_direct.plan(bag) is None
    file.write_bytes(b'not an mcap file at all')
    assert mcap_direct.plan(bag) is None


def _with_checksums(content: bytearray) -> int:
    """Write each chunk's CRC into its header, as writers that checksum do; returns the
    offset of the first chunk's last byte (inside the data of its last message)."""
    last_bytes = []
    offset = len(mcap_direct.MAGIC)
    while content[offset] not in (mcap_direct.OP_DATA_END, mcap_direct.OP_FOOTER):
        opcode, length = struct.unpack_from('<BQ', content, offset)
        body = offset + 9
        if opcode == mcap_direct.OP_CHUNK:
            compression = struct.unpack_from('<I', content, body + 28)[0]
            records = body + 32 + compression + 8
            size = struct.unpack_from('<Q', content, records - 8)[0]
            struct.pack_into('<I', content, body + 24, zlib.crc32(content[records:records + size]))
            last_bytes.append(records + size - 1)
        offset = body + length
    return last_bytes[0]


def test_a_chunk_failing_its_checksum_raises(small_bags, tmp_path):
    bag, file = copy_of(small_bags, tmp_path)
    content = bytearray(file.read_bytes())
    payload_byte = _with_checksums(content)
    file.write_bytes(bytes(content))
    expected, connections = rosbags_messages(bag)
    assert direct_messages(bag, connections) == expected  # checksums that match: read
    content[payload_byte] ^= 0xFF  # damaged message data: the records still parse
    file.write_bytes(bytes(content))
    plan = mcap_direct.plan(bag)
    wanted = {(c.topic, c.msgtype): c for c in connections}
    with pytest.raises(ValueError, match='checksum'):
        list(mcap_direct.messages(plan, wanted))
