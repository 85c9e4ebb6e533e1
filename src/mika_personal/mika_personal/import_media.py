"""Import existing recordings as sessions: video and/or audio files plus their labels.

One recording (a video file, an audio file, or a video with its separately extracted
soundtrack) becomes one session, labelled by a ``start,end,label`` file (seconds from the
recording's start) or by one label for the whole file. Video: anything OpenCV reads
(``cv2.VideoCapture``); audio: anything libsndfile reads (WAV, FLAC, OGG). OpenCV does not
read soundtracks: extract one with ``ffmpeg -i take.mp4 -vn -ac 1 take.wav``.

Every file is opened and every label checked before the first session is written, so a
typo in the last label file does not leave half an import behind.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation.bag_format import BagError, Interval, read_truth_csv
from mika_personal.session_writer import IMAGE_STORAGES, check_session_id, write_session
from mika_personal.sessions import SessionError

#: Video and soundtrack of one recording may differ by this much (s) or by 2%.
DURATION_TOLERANCE_S = 0.5
#: A label may end this much (s) after the media does (rounding in hand-made label files).
LABEL_OVERRUN_S = 0.25


class MediaError(ValueError):
    """A media or label file that cannot be imported; the message says which and why."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    fps: float
    frame_count: int
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


def probe_video(path: Path, fps_override: Optional[float] = None) -> VideoInfo:
    """Frame rate, length and size of a video OpenCV can decode; MediaError if it cannot."""
    import cv2
    path = Path(path)
    if not path.is_file():
        raise MediaError(f'video {path} not found')
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise MediaError(f'video {path} cannot be opened by OpenCV (not a video, or a '
                             'codec this OpenCV build lacks: convert it with ffmpeg to MP4)')
        ok, frame = capture.read()
        if not ok or frame is None:
            raise MediaError(f'video {path}: OpenCV opens it but decodes no frame')
        fps = fps_override or capture.get(cv2.CAP_PROP_FPS)
        if not (fps and math.isfinite(fps) and 0 < fps <= 1000):
            raise MediaError(f'video {path} does not state a usable frame rate ({fps!r}): '
                             'pass --fps')
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:
            raise MediaError(f'video {path} does not state its length in frames')
        return VideoInfo(path, float(fps), count, frame.shape[1], frame.shape[0])
    finally:
        capture.release()


def video_frames(info: VideoInfo, step: int) -> Iterator[np.ndarray]:
    """Every ``step``-th BGR frame; MediaError when the video ends far short of its stated
    length (a damaged file: its labels would no longer match)."""
    import cv2
    capture = cv2.VideoCapture(str(info.path))
    read = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if read % step == 0:
                yield frame
            read += 1
    finally:
        capture.release()
    if read < info.frame_count - max(2, 0.02 * info.frame_count):
        raise MediaError(f'video {info.path} ends after {read} of the {info.frame_count} '
                         'frames it states: the file is damaged or truncated')


def read_audio(path: Path) -> Tuple[np.ndarray, int]:
    """(float32 samples, (n,) or (n, channels)), sample rate; MediaError if unreadable."""
    import soundfile
    path = Path(path)
    if not path.is_file():
        raise MediaError(f'audio {path} not found')
    try:
        samples, rate = soundfile.read(str(path), dtype='float32', always_2d=True)
    except (RuntimeError, TypeError, ValueError) as error:  # LibsndfileError is a RuntimeError
        raise MediaError(f'audio {path} cannot be read ({error}); WAV, FLAC and OGG are '
                         'supported: convert others with ffmpeg') from None
    if samples.shape[0] == 0:
        raise MediaError(f'audio {path} holds no samples')
    return (samples[:, 0] if samples.shape[1] == 1 else samples), int(rate)


def audio_duration(path: Path) -> float:
    """Seconds of audio in a file libsndfile reads (without decoding it)."""
    import soundfile
    path = Path(path)
    if not path.is_file():
        raise MediaError(f'audio {path} not found')
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, TypeError, ValueError) as error:
        raise MediaError(f'audio {path} cannot be read ({error}); WAV, FLAC and OGG are '
                         'supported: convert others with ffmpeg') from None
    if info.frames <= 0:
        raise MediaError(f'audio {path} holds no samples')
    return info.frames / info.samplerate


@dataclass
class Recording:
    """One recording to import, checked."""

    session_id: str
    video: Optional[VideoInfo]
    audio: Optional[Path]
    duration_s: float
    intervals: List[Interval]


def whole_file_label(label: str, duration_s: float) -> List[Interval]:
    if label not in EMOTION_LABELS:
        raise MediaError(f'label {label!r} is not one of {", ".join(EMOTION_LABELS)}')
    return [Interval(0.0, duration_s, label)]


def check_within(intervals: Sequence[Interval], duration_s: float, origin: str) -> None:
    for interval in intervals:
        if interval.start < 0 or interval.end > duration_s + LABEL_OVERRUN_S:
            raise MediaError(f'{origin}: interval {interval.start:g}-{interval.end:g} s '
                             f'({interval.label}) lies outside the recording '
                             f'(0-{duration_s:.2f} s)')


def plan_recordings(root: Path, person: str, videos: Sequence[Path], audios: Sequence[Path],
                    label_files: Sequence[Path], labels: Sequence[str],
                    session_ids: Sequence[str], fps: Optional[float] = None
                    ) -> List[Recording]:
    """Open every file and check every label; MediaError names the first problem."""
    count = max(len(videos), len(audios))
    if count == 0:
        raise MediaError('nothing to import: give --video and/or --audio files')
    if videos and audios and len(videos) != len(audios):
        raise MediaError(f'{len(videos)} videos but {len(audios)} audio files: with both, '
                         'each video needs its own soundtrack (paired in order)')
    if bool(label_files) == bool(labels):
        raise MediaError('give either --labels (a start,end,label file per recording) or '
                         '--label (one emotion per recording)')
    given = len(label_files) or len(labels)
    if given != count:
        raise MediaError(f'{count} recordings but {given} label entries: one per recording')
    if session_ids and len(session_ids) != count:
        raise MediaError(f'{count} recordings but {len(session_ids)} session ids')
    recordings = []
    for index in range(count):
        video = probe_video(videos[index], fps) if videos else None
        audio_path = Path(audios[index]) if audios else None
        durations = {}
        if video is not None:
            durations[f'video {video.path.name}'] = video.duration_s
        if audio_path is not None:
            durations[f'audio {audio_path.name}'] = audio_duration(audio_path)
        values = list(durations.values())
        if max(values) - min(values) > max(DURATION_TOLERANCE_S, 0.02 * max(values)):
            described = ', '.join(f'{name} {seconds:.2f} s' for name, seconds in durations.items())
            raise MediaError(f'recording {index + 1}: {described}: they are not one recording '
                             '(trim them to the same span, or import them separately)')
        duration = min(values)
        source = (video.path if video is not None else audio_path)
        if label_files:
            try:
                intervals = read_truth_csv(Path(label_files[index]), 0.0)
            except BagError as error:
                raise MediaError(str(error)) from None
            check_within(intervals, duration, f'label file {label_files[index]}')
        else:
            intervals = whole_file_label(labels[index], duration)
        session_id = session_ids[index] if session_ids else f'{person}-{source.stem}'
        try:
            check_session_id(session_id)
        except SessionError as error:
            raise MediaError(f'{error} (pass --session-id)') from None
        if (Path(root) / session_id).exists():
            raise MediaError(f'session {Path(root) / session_id} exists: pass another '
                             '--session-id (sessions are never overwritten)')
        recordings.append(Recording(session_id, video, audio_path, duration, intervals))
    ids = [r.session_id for r in recordings]
    if len(set(ids)) != len(ids):
        raise MediaError(f'two recordings would get the same session id ({ids}): '
                         'pass --session-id for each')
    return recordings


def import_recording(root: Path, person: str, recording: Recording, max_fps: float = 15.0,
                     image_storage: str = 'raw') -> Path:
    """Write one checked recording as a session; returns its folder."""
    frames, fps, notes = None, None, []
    if recording.video is not None:
        video = recording.video
        step = max(1, math.ceil(video.fps / max_fps)) if max_fps > 0 else 1
        frames, fps = video_frames(video, step), video.fps / step
        notes.append(f'video {video.path} ({video.width}x{video.height}, {video.fps:g} FPS, '
                     f'every {step}. frame kept)')
    audio, rate = (read_audio(recording.audio) if recording.audio is not None
                   else (None, None))
    if audio is not None:
        notes.append(f'audio {recording.audio} ({rate} Hz)')
    return write_session(root, recording.session_id, person, recording.intervals,
                         frames=frames, fps=fps, audio=audio, sample_rate=rate,
                         source='media', image_storage=image_storage, notes='; '.join(notes))


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(
        prog='import_session', description=__doc__.split('\n\n')[0],
        epilog='Examples: import_session --person alice --output ~/mika_sessions --video '
               'happy.mp4 sad.mp4 --label happy sad;  import_session --person alice --output '
               '~/mika_sessions --video take1.mp4 --audio take1.wav --labels take1.csv')
    parser.add_argument('--person', required=True, help='who is recorded (one id per person)')
    parser.add_argument('--output', type=Path, required=True,
                        help='sessions folder: each recording becomes <output>/<session id>/')
    parser.add_argument('--video', type=Path, nargs='+', default=[],
                        help='video files (any format OpenCV reads)')
    parser.add_argument('--audio', type=Path, nargs='+', default=[],
                        help='audio files (WAV, FLAC, OGG); with --video, one per video, '
                             'the same recording')
    parser.add_argument('--labels', type=Path, nargs='+', default=[],
                        help='one start,end,label CSV per recording (seconds from its start)')
    parser.add_argument('--label', nargs='+', default=[], choices=EMOTION_LABELS,
                        metavar='EMOTION',
                        help=f'one emotion per recording, for the whole file '
                             f'({", ".join(EMOTION_LABELS)})')
    parser.add_argument('--session-id', nargs='+', default=[],
                        help='session ids (default <person>-<file name>)')
    parser.add_argument('--fps', type=float, default=None,
                        help="video frame rate, where the file's own is missing or wrong")
    parser.add_argument('--max-fps', type=float, default=15.0,
                        help='keep at most this many frames per second (0: all)')
    parser.add_argument('--image-storage', choices=IMAGE_STORAGES, default='raw',
                        help='raw (bgr8 Image, exact pixels; 640x480: 922 kB a frame) or '
                             'jpeg (CompressedImage, quality 95; about 50 kB a frame)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        recordings = plan_recordings(args.output, args.person, args.video, args.audio, args.labels,
                                     args.label, args.session_id, args.fps)
        for recording in recordings:
            folder = import_recording(args.output, args.person, recording, args.max_fps,
                                      args.image_storage)
            labelled = sum(i.duration for i in recording.intervals)
            print(f'{folder}: {recording.duration_s:.1f} s, {len(recording.intervals)} '
                  f'labelled interval(s), {labelled:.1f} s labelled '
                  f'({", ".join(sorted({i.label for i in recording.intervals}))})')
    except (MediaError, SessionError, BagError, OSError) as error:
        print(f'import_session: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
