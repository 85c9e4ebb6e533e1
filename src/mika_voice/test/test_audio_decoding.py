"""Every sample format decodes to the same real speech; every malformed input is refused."""
import numpy as np
import pytest

from mika_voice.audio_decoding import (
    MP3_HINT, SAMPLE_FORMATS, AudioDecoder, AudioFormatError, StreamFormat)


def encode(samples: np.ndarray, sample_format: str) -> bytes:
    """Reference encoder written independently of the decoder (stdlib-style scaling)."""
    x = np.clip(samples, -1.0, 1.0 - 1e-9)
    if sample_format == 'U8':
        return (np.round(x * 127) + 128).astype('u1').tobytes()
    if sample_format == 'S8':
        return np.round(x * 127).astype('i1').tobytes()
    if sample_format in ('S16LE', 'S16BE'):
        dtype = '<i2' if sample_format.endswith('LE') else '>i2'
        return np.round(x * 32767).astype(dtype).tobytes()
    if sample_format == 'S24LE':
        ints = np.round(x * 8388607).astype('<i4')
        return ints.view('u1').reshape(-1, 4)[:, :3].tobytes()
    if sample_format in ('S32LE', 'S32BE'):
        dtype = '<i4' if sample_format.endswith('LE') else '>i4'
        return np.round(x * 2147483647).astype(dtype).tobytes()
    dtype = {'F32LE': '<f4', 'F32BE': '>f4', 'F64LE': '<f8'}[sample_format]
    return samples.astype(dtype).tobytes()


TOLERANCE = {'U8': 1 / 64, 'S8': 1 / 64}


@pytest.mark.parametrize('sample_format', sorted(SAMPLE_FORMATS))
def test_every_sample_format_decodes_real_speech(ravdess_clip, sample_format):
    speech = ravdess_clip[:16000]
    decoder = AudioDecoder(StreamFormat.from_fields(16000, 1, sample_format), 16000)
    chunk = decoder.decode(encode(speech, sample_format))
    assert chunk.samples.dtype == np.float32
    assert chunk.samples.shape == speech.shape
    assert np.max(np.abs(chunk.samples - speech)) < TOLERANCE.get(sample_format, 1e-3)


def test_stereo_is_mixed_to_mono(ravdess_clip):
    left = ravdess_clip[:8000]
    right = 0.5 * left
    interleaved = np.stack([left, right], axis=1).reshape(-1)
    decoder = AudioDecoder(StreamFormat.from_fields(16000, 2, 'S16LE'), 16000)
    chunk = decoder.decode(encode(interleaved, 'S16LE'))
    np.testing.assert_allclose(chunk.samples, 0.75 * left, atol=1e-4)


def test_streamed_resampling_matches_the_whole_clip(ravdess_clip):
    """48 kHz in 100 ms chunks: no clicks at chunk boundaries, same as one-shot soxr."""
    import soxr
    clip48 = soxr.resample(ravdess_clip, 16000, 48000).astype(np.float32)
    decoder = AudioDecoder(StreamFormat.from_fields(48000, 1, 'F32LE'), 16000)
    pieces, indices = [], []
    for start in range(0, clip48.size, 4800):
        chunk = decoder.decode(encode(clip48[start:start + 4800], 'F32LE'))
        pieces.append(chunk.samples)
        indices.append(chunk.first_index)
    streamed = np.concatenate(pieces)
    whole = soxr.resample(clip48, 48000, 16000)
    n = streamed.size
    assert n > whole.size - 400
    assert np.max(np.abs(streamed - whole[:n])) < 2e-3
    assert indices[:3] == [0, 1600, 3200]


def test_full_scale_clipping_is_counted(ravdess_clip):
    loud = np.clip(ravdess_clip[16000:32000] * 20.0, -1.0, 1.0)
    decoder = AudioDecoder(StreamFormat.from_fields(16000, 1, 'S16LE'), 16000)
    clipped = decoder.decode(encode(loud, 'S16LE')).clipped
    assert clipped == int(np.sum(np.abs(loud) >= 1.0 - 1e-9))
    assert clipped > 100
    assert decoder.decode(encode(ravdess_clip[16000:32000], 'S16LE')).clipped == 0


@pytest.mark.parametrize('size,fmt', [(3201, ('S16LE', 1)), (3202, ('S16LE', 2)),
                                      (6, ('S32LE', 1)), (7, ('S24LE', 2))])
def test_byte_count_that_is_not_whole_frames_is_refused(size, fmt):
    decoder = AudioDecoder(StreamFormat.from_fields(16000, fmt[1], fmt[0]), 16000)
    with pytest.raises(AudioFormatError) as error:
        decoder.decode(bytes(size))
    assert error.value.reason == 'partial_frame'


def test_unknown_formats_are_echoed_cut_short():
    """An AudioInfo with a 1 MB sample or coding format must not make a 1 MB log line."""
    huge = 'x' * 1_000_000
    for fields in ((16000, 1, huge), (16000, 1, 'S16LE', huge)):
        with pytest.raises(AudioFormatError) as raised:
            StreamFormat.from_fields(*fields)
        assert len(str(raised.value)) < 400 and '1000000 characters' in str(raised.value)


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_nan_and_inf_in_float_data_are_refused(ravdess_clip, bad):
    samples = ravdess_clip[:1600].copy()
    samples[100] = bad
    decoder = AudioDecoder(StreamFormat.from_fields(16000, 1, 'F32LE'), 16000)
    with pytest.raises(AudioFormatError) as error:
        decoder.decode(samples.astype('<f4').tobytes())
    assert error.value.reason == 'not_finite'


def test_integer_bytes_declared_as_float_are_refused(ravdess_clip):
    """S16LE speech announced as F32LE: refused as a mismatch, never classified."""
    decoder = AudioDecoder(StreamFormat.from_fields(16000, 1, 'F32LE'), 16000)
    with pytest.raises(AudioFormatError) as error:
        decoder.decode(encode(ravdess_clip[8000:16000], 'S16LE'))
    assert error.value.reason in ('format_mismatch', 'not_finite')


def test_mp3_is_refused_with_the_driver_setting_that_gives_pcm():
    with pytest.raises(AudioFormatError) as error:
        StreamFormat.from_fields(16000, 1, 'S16LE', 'mp3')
    assert error.value.reason == 'mp3'
    assert 'format:=wave' in str(error.value) and 'S16LE' in str(error.value)
    assert str(error.value) == MP3_HINT


@pytest.mark.parametrize('fields,reason', [
    ((16000, 1, 'S12LE', 'wave'), 'unknown_sample_format'),
    ((16000, 1, 'S16LE', 'opus'), 'unknown_coding'),
    ((16000, 0, 'S16LE', 'wave'), 'bad_channels'),
    ((0, 1, 'S16LE', 'wave'), 'bad_sample_rate'),
])
def test_invalid_stream_formats_are_refused(fields, reason):
    with pytest.raises(AudioFormatError) as error:
        StreamFormat.from_fields(*fields)
    assert error.value.reason == reason


def test_format_names_are_normalised_like_audio_capture_sends_them():
    fmt = StreamFormat.from_fields(44100, 2, 's16le', 'WAVE')
    assert (fmt.sample_format, fmt.coding_format, fmt.bytes_per_frame) == ('S16LE', 'wave', 4)
