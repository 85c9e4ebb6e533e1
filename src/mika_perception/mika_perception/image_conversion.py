"""sensor_msgs/Image and CompressedImage contents to a BGR uint8 NumPy image.

ROS-free: the functions take the message fields (or any object that has them), so tests,
benchmarks and bag evaluation use exactly the conversion the node uses. Every malformed
input raises :class:`ImageFormatError` with a short ``reason`` the node counts in its
diagnostics; nothing is guessed. Where the layout allows it the result is a read-only view
of the message buffer (bgr8, with or without row padding): no copy. Images of more than
``max_pixels`` pixels are refused before anything is allocated for them; for JPEG and PNG
the size is read from the header (SOF, IHDR), so a few hundred bytes declaring 20000x20000
pixels (an image bomb) are never decoded.

The results equal ``cv_bridge``'s ``imgmsg_to_cv2(msg, 'bgr8')`` (16-bit grey is scaled by
255/65535 as cv_bridge does); :class:`ImageConverter` uses cv_bridge where it is installed.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from mika_common.echo import echo


class ImageFormatError(ValueError):
    """An image message that cannot be converted; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f'{reason}: {detail}')
        self.reason = reason


@dataclass(frozen=True)
class _Layout:
    channels: int
    dtype: np.dtype
    to_bgr: Optional[Callable[[np.ndarray], np.ndarray]]  # None: already BGR
    even_width: bool = False


def _scale_16_to_8(image: np.ndarray) -> np.ndarray:
    # cv_bridge: convertTo(CV_8U, 255/65535) with rounding
    return cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)


_LAYOUTS: Dict[str, _Layout] = {
    'bgr8': _Layout(3, np.dtype(np.uint8), None),
    'rgb8': _Layout(3, np.dtype(np.uint8), lambda v: cv2.cvtColor(v, cv2.COLOR_RGB2BGR)),
    'bgra8': _Layout(4, np.dtype(np.uint8), lambda v: cv2.cvtColor(v, cv2.COLOR_BGRA2BGR)),
    'rgba8': _Layout(4, np.dtype(np.uint8), lambda v: cv2.cvtColor(v, cv2.COLOR_RGBA2BGR)),
    'mono8': _Layout(1, np.dtype(np.uint8), lambda v: cv2.cvtColor(v, cv2.COLOR_GRAY2BGR)),
    'mono16': _Layout(1, np.dtype(np.uint16),
                      lambda v: cv2.cvtColor(_scale_16_to_8(v), cv2.COLOR_GRAY2BGR)),
    # ROS: 'yuv422' (deprecated name) and 'uyvy' are UYVY; 'yuv422_yuy2' and 'yuyv' are YUYV.
    'uyvy': _Layout(2, np.dtype(np.uint8),
                    lambda v: cv2.cvtColor(v, cv2.COLOR_YUV2BGR_UYVY), even_width=True),
    'yuyv': _Layout(2, np.dtype(np.uint8),
                    lambda v: cv2.cvtColor(v, cv2.COLOR_YUV2BGR_YUYV), even_width=True),
}
_ALIASES = {'yuv422': 'uyvy', 'yuv422_yuy2': 'yuyv'}

#: Every ``sensor_msgs/Image`` encoding accepted.
SUPPORTED_ENCODINGS = tuple(sorted(set(_LAYOUTS) | set(_ALIASES)))
#: Compressed formats accepted (matched inside ``CompressedImage.format``).
SUPPORTED_COMPRESSED = ('jpeg', 'png')

_JPEG_START = b'\xff\xd8'
_JPEG_END = b'\xff\xd9'
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_END = b'IEND'
#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry
#: the size. C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length field (TEM, RST0-7).
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))
#: Default most pixels of one image (4096 x 4096: a 4K camera frame fits twice); a decoded
#: BGR image of this size takes 48 MiB.
DEFAULT_MAX_PIXELS = 4096 * 4096


def _layout(encoding: str) -> _Layout:
    layout = _LAYOUTS.get(_ALIASES.get(encoding, encoding))
    if layout is None:
        raise ImageFormatError(
            'unknown_encoding',
            f'encoding {echo(encoding)} is not supported '
            f'(supported: {", ".join(SUPPORTED_ENCODINGS)})')
    return layout


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageFormatError('zero_size', f'image is {width}x{height}')
    if width * height > max_pixels:
        raise ImageFormatError(
            'too_large', f'image is {width}x{height}, more than {max_pixels} pixels')


def image_view(encoding: str, width: int, height: int, step: int, data,
               is_bigendian: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
               ) -> np.ndarray:
    """The pixels of an Image message as a (height, width[, channels]) view of ``data``.

    Validates like cv_bridge (step covers a row, data is exactly height * step bytes) and
    more: zero size, more than ``max_pixels`` pixels, odd width for packed YUV, a step that
    splits a 16-bit sample. Big-endian 16-bit data is the only case that is copied.
    """
    layout = _layout(encoding)
    _check_size(width, height, max_pixels)
    if layout.even_width and width % 2:
        raise ImageFormatError('odd_width', f'{encoding} needs an even width, got {width}')
    row_bytes = width * layout.channels * layout.dtype.itemsize
    if step < row_bytes:
        raise ImageFormatError(
            'wrong_step', f'step {step} is less than width {width} x {layout.channels} '
                          f'channel(s) x {layout.dtype.itemsize} byte(s) = {row_bytes}')
    if step % layout.dtype.itemsize:
        raise ImageFormatError(
            'wrong_step', f'step {step} is not a multiple of the {layout.dtype.itemsize}-byte '
                          f'sample of {encoding}')
    buffer = np.frombuffer(data, dtype=np.uint8)
    expected = height * step
    if buffer.size != expected:
        reason = 'short_data' if buffer.size < expected else 'long_data'
        raise ImageFormatError(
            reason, f'{buffer.size} data bytes, expected height {height} x step {step} '
                    f'= {expected}')
    rows = buffer.reshape(height, step)[:, :row_bytes]
    samples = rows.view(layout.dtype)  # last axis is contiguous: still a view
    swap = layout.dtype.itemsize > 1 and bool(is_bigendian) != (sys.byteorder == 'big')
    if swap:
        samples = samples.byteswap()
    if layout.channels > 1:
        samples = samples.reshape(height, width, layout.channels)
    if not swap:
        samples.flags.writeable = False  # a view of the message: never draw on it
    return samples


def image_to_bgr(encoding: str, width: int, height: int, step: int, data,
                 is_bigendian: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
                 ) -> np.ndarray:
    """A BGR uint8 (height, width, 3) image from the fields of a sensor_msgs/Image.

    Raises :class:`ImageFormatError` for anything malformed. bgr8 comes back as a
    read-only view of ``data``; copy it before drawing.
    """
    layout = _layout(encoding)
    view = image_view(encoding, width, height, step, data, is_bigendian, max_pixels)
    return view if layout.to_bgr is None else layout.to_bgr(view)


def image_msg_to_bgr(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """:func:`image_to_bgr` of a sensor_msgs/Image (or anything with its fields)."""
    return image_to_bgr(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                        msg.is_bigendian, max_pixels)


def _compressed_kind(format_field: str, data: bytes) -> str:
    declared = format_field.lower()
    if 'compresseddepth' in declared.replace(' ', ''):
        raise ImageFormatError('unknown_format',
                               f'format {echo(format_field)} is a depth image, not a camera image')
    named = [kind for kind in SUPPORTED_COMPRESSED
             if kind in declared or (kind == 'jpeg' and 'jpg' in declared)]
    if not named:
        raise ImageFormatError(
            'unknown_format', f'format {echo(format_field)} names neither jpeg nor png')
    if data[:2] == _JPEG_START:
        actual = 'jpeg'
    elif data[:8] == _PNG_SIGNATURE:
        actual = 'png'
    else:
        raise ImageFormatError(
            'broken_data', f'data ({len(data)} bytes) starts like neither a JPEG nor a PNG')
    return actual


def _check_complete(kind: str, data: bytes) -> None:
    """A truncated JPEG still decodes (grey bottom rows): refuse it instead."""
    tail = data[-32:].rstrip(b'\x00')  # some encoders pad the buffer with zeros
    if kind == 'jpeg' and not tail.endswith(_JPEG_END):
        raise ImageFormatError('broken_data', 'JPEG data is truncated (no end-of-image marker)')
    if kind == 'png' and _PNG_END not in tail:
        raise ImageFormatError('broken_data', 'PNG data is truncated (no IEND chunk)')


def _jpeg_size(data: memoryview) -> Tuple[int, int]:
    """(width, height) from the first start-of-frame segment; segments before it (APPn,
    DQT, DHT, ...) are skipped by their length, so this reads a few dozen bytes."""
    i = 2  # after SOI
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ImageFormatError('broken_data', f'JPEG header has no marker at byte {i}')
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _JPEG_STANDALONE:
            i += 2
        elif marker in (0xD9, 0xDA):  # image end or scan start before any frame header
            break
        elif marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            return (int.from_bytes(data[i + 7:i + 9], 'big'),
                    int.from_bytes(data[i + 5:i + 7], 'big'))
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], 'big')
    raise ImageFormatError('broken_data', 'JPEG data has no frame header (SOF)')


def _png_size(data: memoryview) -> Tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG standard puts first."""
    if len(data) < 24 or bytes(data[12:16]) != b'IHDR':
        raise ImageFormatError('broken_data', 'PNG data does not start with an IHDR chunk')
    return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')


def _check_compressed(format_field: str, buffer: np.ndarray, max_pixels: int) -> str:
    """The kind ('jpeg' or 'png') of complete data whose declared size is allowed."""
    if buffer.size == 0:
        raise ImageFormatError('zero_size', 'compressed image has no data')
    kind = _compressed_kind(format_field, buffer[:8].tobytes())
    _check_complete(kind, buffer[-32:].tobytes())
    width, height = (_jpeg_size if kind == 'jpeg' else _png_size)(buffer.data)
    _check_size(width, height, max_pixels)
    return kind


def decoded_to_bgr(image: np.ndarray) -> np.ndarray:
    """What ``cv2.imdecode(..., IMREAD_UNCHANGED)`` gives, as BGR uint8."""
    if image.dtype == np.uint16:
        image = _scale_16_to_8(image)
    elif image.dtype != np.uint8:
        raise ImageFormatError('unknown_format', f'decoded image has samples of {image.dtype}')
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def compressed_to_bgr(format_field: str, data,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A BGR uint8 image from the fields of a sensor_msgs/CompressedImage (JPEG or PNG)."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    kind = _check_compressed(format_field, buffer, max_pixels)
    decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ImageFormatError('broken_data', f'{kind} data ({buffer.size} bytes) does not decode')
    return decoded_to_bgr(decoded)


def compressed_msg_to_bgr(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """:func:`compressed_to_bgr` of a sensor_msgs/CompressedImage."""
    return compressed_to_bgr(msg.format, msg.data, max_pixels)


#: Encodings every cv_bridge release converts to bgr8 (the 'uyvy'/'yuyv' names are newer
#: than some releases: those are always converted here).
_CV_BRIDGE_ENCODINGS = frozenset(
    ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', 'yuv422', 'yuv422_yuy2'))


class ImageConverter:
    """Message -> BGR conversion, through cv_bridge where it is installed.

    Validation is always ours (cv_bridge's Python side does not check the data length);
    cv_bridge then does the pixel conversion. ``backend`` says which one converts. Images
    of more than ``max_pixels`` pixels (an attribute: the node changes it at runtime) are
    refused before they are converted or decoded.
    """

    def __init__(self, use_cv_bridge: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.max_pixels = max_pixels
        self._bridge = None
        if use_cv_bridge:
            try:
                from cv_bridge import CvBridge
                self._bridge = CvBridge()
            except ImportError:
                self._bridge = None
        self.backend = 'cv_bridge' if self._bridge is not None else 'numpy'

    def image(self, msg) -> np.ndarray:
        if self._bridge is None or msg.encoding not in _CV_BRIDGE_ENCODINGS:
            return image_msg_to_bgr(msg, self.max_pixels)
        image_view(msg.encoding, msg.width, msg.height, msg.step, msg.data, msg.is_bigendian,
                   self.max_pixels)
        from cv_bridge import CvBridgeError
        try:
            return self._bridge.imgmsg_to_cv2(msg, desired_encoding='bgr8')
        except (CvBridgeError, TypeError, ValueError) as error:
            raise ImageFormatError('conversion_failed', str(error)) from None

    def compressed(self, msg) -> np.ndarray:
        if self._bridge is None:
            return compressed_msg_to_bgr(msg, self.max_pixels)
        kind = _check_compressed(msg.format, np.frombuffer(msg.data, dtype=np.uint8),
                                 self.max_pixels)
        decoded = self._bridge.compressed_imgmsg_to_cv2(msg, desired_encoding='passthrough')
        if decoded is None or decoded.size == 0:
            raise ImageFormatError('broken_data', f'{kind} data does not decode')
        return decoded_to_bgr(decoded)
