"""Image and CompressedImage contents to BGR: every encoding, every malformed input."""
import struct
import types
import zlib

import cv2
import numpy as np
import pytest

from mika_perception.sample_frames import portrait_bgr
from mika_perception.image_conversion import (
    DEFAULT_MAX_PIXELS, SUPPORTED_ENCODINGS, ImageConverter, ImageFormatError,
    compressed_to_bgr, image_to_bgr, image_view)


@pytest.fixture(scope='module')
def bgr():
    return cv2.resize(portrait_bgr(), (64, 48), interpolation=cv2.INTER_AREA)


def encode(bgr, encoding, padding=0, big_endian=False):
    """(step, bytes) of ``bgr`` in a ROS encoding, each row padded by ``padding`` bytes."""
    if encoding == 'bgr8':
        pixels = bgr
    elif encoding == 'rgb8':
        pixels = bgr[:, :, ::-1]
    elif encoding == 'bgra8':
        pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    elif encoding == 'rgba8':
        pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA)
    elif encoding == 'mono8':
        pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    elif encoding == 'mono16':
        # high and low bytes differ, so a wrong byte order shows
        pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 256 + 100
        pixels = pixels.astype('>u2' if big_endian else '<u2')
    elif encoding in ('yuv422', 'uyvy'):
        pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_UYVY)
    elif encoding in ('yuv422_yuy2', 'yuyv'):
        pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_YUYV)
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(bgr.shape[0], -1)
    rows = np.concatenate([rows, np.full((rows.shape[0], padding), 77, np.uint8)], axis=1)
    return rows.shape[1], rows.tobytes()


def expected_bgr(bgr, encoding):
    if encoding in ('mono8', 'mono16'):
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if encoding == 'mono16':
            grey = np.round((grey * 256.0 + 100) * 255 / 65535).astype(np.uint8)
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    return bgr


@pytest.mark.parametrize('padding', [0, 8])
@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
def test_every_encoding_gives_the_bgr_image(bgr, encoding, padding):
    step, data = encode(bgr, encoding, padding)
    out = image_to_bgr(encoding, bgr.shape[1], bgr.shape[0], step, data)
    assert out.shape == bgr.shape and out.dtype == np.uint8
    if encoding.startswith('yuv') or encoding in ('uyvy', 'yuyv'):
        # chroma is shared by two pixels: close, not equal
        assert np.abs(out.astype(int) - bgr).mean() < 6
    else:
        np.testing.assert_array_equal(out, expected_bgr(bgr, encoding))


def test_big_endian_mono16_is_swapped(bgr):
    step, data = encode(bgr, 'mono16', big_endian=True)
    out = image_to_bgr('mono16', bgr.shape[1], bgr.shape[0], step, data, is_bigendian=True)
    np.testing.assert_array_equal(out, expected_bgr(bgr, 'mono16'))
    wrong = image_to_bgr('mono16', bgr.shape[1], bgr.shape[0], step, data, is_bigendian=False)
    assert not np.array_equal(wrong, out)


def test_mono16_is_scaled_like_cv_bridge():
    # cv_bridge: convertTo(CV_8U, 255/65535), rounded
    values = np.array([[0, 128, 129, 257, 32896, 65535]], '<u2')
    out = image_to_bgr('mono16', 6, 1, 12, values.tobytes())
    assert out[0, :, 0].tolist() == [0, 0, 1, 1, 128, 255]


@pytest.mark.parametrize('padding', [0, 8])
def test_bgr8_is_a_read_only_view_without_copy(bgr, padding):
    step, data = encode(bgr, 'bgr8', padding)
    buffer = bytearray(data)
    out = image_to_bgr('bgr8', bgr.shape[1], bgr.shape[0], step, buffer)
    assert np.shares_memory(out, np.frombuffer(buffer, np.uint8))
    assert not out.flags.writeable
    # OpenCV reads the padded view as it is
    assert cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).shape == bgr.shape[:2]


@pytest.mark.parametrize('fields, reason', [
    (dict(encoding='bgr8', width=64, height=48, step=64 * 3 - 1), 'wrong_step'),
    (dict(encoding='mono16', width=64, height=48, step=64 * 2 + 1), 'wrong_step'),
    (dict(encoding='bgr8', width=0, height=48, step=0), 'zero_size'),
    (dict(encoding='bgr8', width=64, height=0, step=192), 'zero_size'),
    (dict(encoding='yuyv', width=63, height=48, step=126), 'odd_width'),
    (dict(encoding='32FC1', width=64, height=48, step=256), 'unknown_encoding'),
    (dict(encoding='', width=64, height=48, step=192), 'unknown_encoding'),
    (dict(encoding='bayer_rggb8', width=64, height=48, step=64), 'unknown_encoding'),
])
def test_malformed_image_fields_are_refused(fields, reason):
    data = bytes(fields['height'] * fields['step'])
    with pytest.raises(ImageFormatError) as error:
        image_to_bgr(data=data, **fields)
    assert error.value.reason == reason


def test_short_and_long_data_are_refused(bgr):
    step, data = encode(bgr, 'bgr8')
    with pytest.raises(ImageFormatError, match='short_data'):
        image_to_bgr('bgr8', 64, 48, step, data[:-1])
    with pytest.raises(ImageFormatError, match='long_data'):
        image_to_bgr('bgr8', 64, 48, step, data + b'\0')
    with pytest.raises(ImageFormatError, match='short_data'):
        image_to_bgr('bgr8', 64, 48, step, b'')


def test_jpeg_and_png_decode(bgr):
    png = cv2.imencode('.png', bgr)[1].tobytes()
    np.testing.assert_array_equal(compressed_to_bgr('png', png), bgr)
    jpeg = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    out = compressed_to_bgr('bgr8; jpeg compressed bgr8', jpeg)
    np.testing.assert_array_equal(out, cv2.imdecode(np.frombuffer(jpeg, np.uint8),
                                                    cv2.IMREAD_COLOR))
    assert np.abs(out.astype(int) - bgr).mean() < 8  # lossy, but the same picture
    grey_png = cv2.imencode('.png', cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))[1].tobytes()
    np.testing.assert_array_equal(compressed_to_bgr('png', grey_png), expected_bgr(bgr, 'mono8'))
    bgra_png = cv2.imencode('.png', cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))[1].tobytes()
    np.testing.assert_array_equal(compressed_to_bgr('png', bgra_png), bgr)


def test_broken_compressed_images_are_refused(bgr):
    jpeg = cv2.imencode('.jpg', bgr)[1].tobytes()
    png = cv2.imencode('.png', bgr)[1].tobytes()
    cases = [
        ('jpeg', b'', 'zero_size'),
        ('jpeg', jpeg[:len(jpeg) // 2], 'broken_data'),   # truncated: OpenCV would decode it
        ('png', png[:len(png) // 2], 'broken_data'),
        ('jpeg', b'\xff\xd8' + bytes(200) + b'\xff\xd9', 'broken_data'),  # markers, no image
        ('jpeg', b'GIF89a' + bytes(100), 'broken_data'),
        ('jpeg', jpeg[:2] + jpeg[jpeg.index(b'\xff\xda'):], 'broken_data'),  # no SOF
        ('png', png[:12] + b'IDAT' + png[16:], 'broken_data'),  # IHDR is not first
        ('tiff', jpeg, 'unknown_format'),
        ('16UC1; compressedDepth png', png, 'unknown_format'),
    ]
    for format_field, data, reason in cases:
        with pytest.raises(ImageFormatError) as error:
            compressed_to_bgr(format_field, data)
        assert error.value.reason == reason, (format_field, len(data))


def jpeg_declaring(width, height):
    """A real 8x8 JPEG (about 600 bytes) whose frame header says width x height: libjpeg
    allocates the declared size and decodes it in full."""
    data = bytearray(cv2.imencode('.jpg', np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = data.index(b'\xff\xc0')
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    return bytes(data)


def png_chunk(kind, body):
    return (struct.pack('>I', len(body)) + kind + body
            + struct.pack('>I', zlib.crc32(kind + body)))


def png_of_zeros(width, height):
    """A valid grey PNG of zeros: about width * height / 1000 bytes (a decompression bomb)."""
    header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', header)
            + png_chunk(b'IDAT', zlib.compress(bytes(height * (width + 1)), 9))
            + png_chunk(b'IEND', b''))


def test_image_bombs_are_refused_from_their_header_before_decoding():
    jpeg = jpeg_declaring(20000, 20000)
    png = png_of_zeros(5000, 5000)
    assert len(jpeg) < 1000 and len(png) < 30000
    assert 5000 * 5000 > DEFAULT_MAX_PIXELS
    for format_field, data in (('jpeg', jpeg), ('png', png)):
        with pytest.raises(ImageFormatError, match='too_large') as raised:
            compressed_to_bgr(format_field, data)
        assert raised.value.reason == 'too_large'
        msg = types.SimpleNamespace(format=format_field, data=data)
        for converter in (ImageConverter(use_cv_bridge=False), ImageConverter()):
            with pytest.raises(ImageFormatError, match='too_large'):
                converter.compressed(msg)
    # a limit of the caller's: the same files decode under a larger one
    assert compressed_to_bgr('png', png_of_zeros(300, 200), max_pixels=60000).shape == (
        200, 300, 3)
    with pytest.raises(ImageFormatError, match='too_large'):
        compressed_to_bgr('png', png_of_zeros(300, 200), max_pixels=59999)


def test_raw_images_over_the_limit_are_refused(bgr):
    step, data = encode(bgr, 'bgr8')
    with pytest.raises(ImageFormatError, match='too_large'):
        image_to_bgr('bgr8', 64, 48, step, data, max_pixels=64 * 48 - 1)
    converter = ImageConverter(max_pixels=64 * 48 - 1)
    with pytest.raises(ImageFormatError, match='too_large'):
        converter.image(message('bgr8', 64, 48, step, data))
    converter.max_pixels = 64 * 48  # changed at runtime by the node
    np.testing.assert_array_equal(converter.image(message('bgr8', 64, 48, step, data)), bgr)


def test_long_encoding_and_format_strings_are_echoed_cut_short(bgr):
    """A sender's 1 MB encoding or format string must not become a 1 MB log line."""
    step, data = encode(bgr, 'bgr8')
    huge = 'x' * 1_000_000
    with pytest.raises(ImageFormatError, match='unknown_encoding') as raised:
        image_to_bgr(huge, 64, 48, step, data)
    assert len(str(raised.value)) < 400 and '1000000 characters' in str(raised.value)
    png = cv2.imencode('.png', bgr)[1].tobytes()
    for format_field in (huge, huge + 'compressedDepth'):
        with pytest.raises(ImageFormatError, match='unknown_format') as raised:
            compressed_to_bgr(format_field, png)
        assert len(str(raised.value)) < 400


def test_jpeg_size_is_read_past_other_segments(bgr):
    """Progressive frames, fill bytes and an APP1 segment holding a thumbnail's SOF: the
    size that counts is the image's own."""
    progressive = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert compressed_to_bgr('jpeg', progressive, max_pixels=64 * 48).shape == bgr.shape
    with pytest.raises(ImageFormatError, match='too_large'):
        compressed_to_bgr('jpeg', progressive, max_pixels=64 * 48 - 1)
    baseline = cv2.imencode('.jpg', bgr)[1].tobytes()
    thumbnail_sof = b'\xff\xc0\x00\x11\x08' + struct.pack('>HH', 60000, 60000) + bytes(10)
    app1 = b'\xff\xe1' + struct.pack('>H', 2 + len(thumbnail_sof)) + thumbnail_sof
    with_app1 = baseline[:2] + app1 + b'\xff' + baseline[2:]
    np.testing.assert_array_equal(compressed_to_bgr('jpeg', with_app1, max_pixels=64 * 48),
                                  compressed_to_bgr('jpeg', baseline))


def message(encoding, width, height, step, data, is_bigendian=False):
    return types.SimpleNamespace(encoding=encoding, width=width, height=height, step=step,
                                 data=data, is_bigendian=is_bigendian)


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
def test_cv_bridge_gives_identical_results(bgr, encoding):
    pytest.importorskip('cv_bridge', reason='cv_bridge is not installed here (it is not on '
                        'PyPI; install ros-<distro>-cv-bridge) so there is nothing to compare')
    sensor_msgs = pytest.importorskip('sensor_msgs.msg')
    step, data = encode(bgr, encoding, padding=4)
    msg = sensor_msgs.Image(encoding=encoding, width=bgr.shape[1], height=bgr.shape[0],
                            step=step, data=data)
    ours = ImageConverter(use_cv_bridge=False).image(msg)
    bridged = ImageConverter(use_cv_bridge=True)
    assert bridged.backend == 'cv_bridge'
    np.testing.assert_array_equal(bridged.image(msg), ours)
    jpeg = sensor_msgs.CompressedImage(format='jpeg', data=cv2.imencode('.jpg', bgr)[1].tobytes())
    np.testing.assert_array_equal(bridged.compressed(jpeg),
                                  ImageConverter(use_cv_bridge=False).compressed(jpeg))


def test_converter_validates_before_any_backend(bgr):
    converter = ImageConverter()
    step, data = encode(bgr, 'rgb8')
    with pytest.raises(ImageFormatError, match='short_data'):
        converter.image(message('rgb8', 64, 48, step, data[:100]))
    np.testing.assert_array_equal(converter.image(message('rgb8', 64, 48, step, data)), bgr)


def test_view_has_message_layout(bgr):
    step, data = encode(bgr, 'mono16', padding=6)
    view = image_view('mono16', 64, 48, step, data)
    assert view.shape == (48, 64) and view.dtype == np.uint16
