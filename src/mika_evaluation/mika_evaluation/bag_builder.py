"""Build a labelled evaluation bag from labelled media: timed segments of one emotion each.

Camera: faces from FER-2013 (``fer2013.npz``, one split) or from image folders (one
sub-folder per emotion), each upscaled into a 640x480 frame and held for a while at a
camera rate, with sensor noise and a small jitter, as ``sensor_msgs/Image`` bgr8 or, as
robots usually record a camera, ``sensor_msgs/CompressedImage`` JPEG on ``<topic>/compressed``.
Microphone: utterances from a corpus folder with ``labels.csv`` (``path,label,
speaker_or_subject``; the RAVDESS/EmoDB layout), laid end to end over a low noise floor
and cut into 100 ms ``AudioDataStamped`` S16LE chunks, with a latched ``AudioInfo``.
In each segment, the faces and the utterances carry the same label. Ground truth goes into
the bag (``/emotion/ground_truth``) and into a ``start,end,label`` CSV; where the media
came from (split, speakers) goes into the bag's metadata and the CSV header.

ROS-free: ``rosbags`` writes MCAP or sqlite3 rosbag2 bags.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from mika_common.emotions import EMOTION_LABELS
from mika_evaluation.bag_format import (
    AUDIO_INFO_TOPIC, AUDIO_INFO_TYPE, AUDIO_TOPIC, AUDIO_TYPE, CAMERA_TOPIC, COMPRESSED_SUFFIX,
    COMPRESSED_TYPE, IMAGE_TYPE, TRUTH_TOPIC, TRUTH_TYPE, Interval, make_typestore, offered_qos,
    write_truth_csv)

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.pgm')
IMAGE_FORMATS = ('raw', 'jpeg')
JPEG_QUALITY = 90
SAMPLE_RATE = 16000
CHUNK_S = 0.1
FRAME_WIDTH, FRAME_HEIGHT = 640, 480
#: A realistic epoch (2023-11-14): stamps must be positive for the fusion core.
DEFAULT_START_S = 1_700_000_000.0
MANIFEST_KEY = 'mika_evaluation.manifest'


# ----------------------------------------------------------------------------- sources
class FaceSource:
    """Face images by label: ``images[label]`` is a list of (id, grey or BGR uint8)."""

    def __init__(self, images: Dict[str, List[Tuple[str, np.ndarray]]], description: str):
        self.images = {label: items for label, items in images.items() if items}
        self.description = description

    @classmethod
    def from_fer2013(cls, path: Path, split: str = 'private_test',
                     exclude_train_duplicates: bool = True) -> 'FaceSource':
        with np.load(path) as data:  # each field read once: npz fields load on access
            names = [str(n) for n in data['label_names']]
            split_of, labels = data['split'], data['labels']
            pixels, filenames = data['images'], data['filename']
            duplicated = data['test_image_also_in_train'].astype(bool)
        keep = split_of == split
        if not np.any(keep):
            raise ValueError(f'{path} has no split {split!r}')
        if exclude_train_duplicates:
            keep &= ~duplicated
        candidates = np.flatnonzero(keep)
        blank = pixels[candidates].reshape(len(candidates), -1).std(axis=1) <= 1.0
        images: Dict[str, List[Tuple[str, np.ndarray]]] = {label: [] for label in EMOTION_LABELS}
        for index in candidates[~blank]:
            images[names[int(labels[index])]].append(
                (f'fer2013:{filenames[index]}', pixels[index]))
        described = (f'FER-2013 {split} split'
                     + (' without images duplicated in train' if exclude_train_duplicates else '')
                     + f' ({path.name})')
        return cls(images, described)

    @classmethod
    def from_folders(cls, root: Path) -> 'FaceSource':
        images: Dict[str, List[Tuple[str, np.ndarray]]] = {}
        for label in EMOTION_LABELS:
            folder = root / label
            files = sorted(p for p in folder.glob('*') if p.suffix.lower() in IMAGE_EXTENSIONS) \
                if folder.is_dir() else []
            loaded = []
            for file in files:
                image = cv2.imread(str(file), cv2.IMREAD_COLOR)
                if image is None:
                    raise ValueError(f'{file} is not a readable image')
                loaded.append((str(file.relative_to(root)), image))
            images[label] = loaded
        if not any(images.values()):
            raise ValueError(f'{root} has no image sub-folders named after the emotions '
                             f'({", ".join(EMOTION_LABELS)})')
        return cls(images, f'image folders under {root}')


@dataclass(frozen=True)
class Clip:
    clip_id: str
    path: Path
    label: str
    speaker: str


class VoiceSource:
    """Utterances by label from a corpus folder with ``labels.csv``."""

    def __init__(self, clips: Sequence[Clip], description: str):
        self.clips: Dict[str, List[Clip]] = {}
        for clip in clips:
            self.clips.setdefault(clip.label, []).append(clip)
        self.speakers = sorted({clip.speaker for clip in clips})
        self.description = description

    @classmethod
    def from_corpus(cls, folder: Path, speakers: Optional[Sequence[str]] = None
                    ) -> 'VoiceSource':
        table = folder / 'labels.csv'
        if not table.is_file():
            raise ValueError(f'{table} not found (expected path,label,speaker_or_subject)')
        with table.open(newline='') as handle:
            rows = list(csv.DictReader(handle))
        wanted = set(speakers) if speakers else None
        clips = [Clip(f'{folder.name}:{row["path"]}', folder / row['path'], row['label'],
                      row.get('speaker_or_subject', ''))
                 for row in rows if row['label'] in EMOTION_LABELS
                 and (wanted is None or row.get('speaker_or_subject', '') in wanted)]
        if wanted:
            missing = wanted - {clip.speaker for clip in clips}
            if missing:
                raise ValueError(f'{table}: no labelled clips of speakers {sorted(missing)}')
        if not clips:
            raise ValueError(f'{table}: no clips with one of the seven labels')
        source = cls(clips, '')
        source.description = (f'{folder.name} ({folder}), speakers '
                              f'{", ".join(source.speakers)}')
        return source

    @staticmethod
    def load(clip: Clip) -> np.ndarray:
        import soundfile
        samples, rate = soundfile.read(str(clip.path), dtype='float32', always_2d=True)
        samples = samples.mean(axis=1)
        if rate != SAMPLE_RATE:
            import librosa
            samples = librosa.resample(samples, orig_sr=rate, target_sr=SAMPLE_RATE)
        return np.asarray(samples, dtype=np.float32)


# ----------------------------------------------------------------------------- layout
@dataclass
class Segment:
    label: str
    start: float
    end: float
    faces: List[Tuple[str, np.ndarray]]
    utterances: List[Tuple[Clip, np.ndarray, float]]  # clip, samples, start time


@dataclass(frozen=True)
class LayoutConfig:
    segments: int = 8
    utterances_per_segment: int = 2
    lead_silence_s: float = 0.4     # silence before the first utterance of a segment
    gap_s: float = 0.6              # silence between utterances
    face_hold_s: float = 1.0        # each face image stays this long
    fps: float = 15.0
    face_px: int = 200              # the 48x48 (or any) face is shown this large
    image_format: str = 'raw'       # raw (Image bgr8) or jpeg (CompressedImage)
    seed: int = 0
    start_s: float = DEFAULT_START_S


def plan_segments(faces: FaceSource, voices: VoiceSource, config: LayoutConfig
                  ) -> List[Segment]:
    """Labels present in both sources, each segment a fresh draw, labels in a shuffled
    round-robin so consecutive segments differ."""
    labels = [label for label in EMOTION_LABELS if label in faces.images and label in voices.clips]
    if not labels:
        raise ValueError('the face and voice media share no label')
    rng = np.random.default_rng(config.seed)
    order: List[str] = []
    while len(order) < config.segments:
        batch = list(rng.permutation(labels))
        if order and len(batch) > 1 and batch[0] == order[-1]:
            batch.append(batch.pop(0))
        order.extend(batch)
    used_faces: Dict[str, set] = {}
    used_clips: Dict[str, set] = {}
    segments = []
    time_s = config.start_s
    for label in order[:config.segments]:
        clips = _draw(voices.clips[label], config.utterances_per_segment, rng,
                      used_clips.setdefault(label, set()))
        utterances = []
        cursor = time_s + config.lead_silence_s
        for clip in clips:
            samples = VoiceSource.load(clip)
            utterances.append((clip, samples, cursor))
            cursor += len(samples) / SAMPLE_RATE + config.gap_s
        end = cursor - config.gap_s + config.lead_silence_s
        count = max(1, math.ceil((end - time_s) / config.face_hold_s))
        face_items = _draw(faces.images[label], count, rng, used_faces.setdefault(label, set()))
        segments.append(Segment(label, time_s, end, face_items, utterances))
        time_s = end
    return segments


def _draw(items: Sequence, count: int, rng: np.random.Generator, used: set) -> List:
    """``count`` items, without repeats until all have been used."""
    chosen = []
    for _ in range(count):
        fresh = [i for i in range(len(items)) if i not in used]
        if not fresh:
            used.clear()
            fresh = list(range(len(items)))
        index = int(rng.choice(fresh))
        used.add(index)
        chosen.append(items[index])
    return chosen


# ----------------------------------------------------------------------------- rendering
class FrameRenderer:
    """A face image shown large in a 640x480 frame over a soft background, with noise."""

    def __init__(self, face_px: int, seed: int):
        self.face_px = face_px
        self.rng = np.random.default_rng(seed + 1)
        ys, xs = np.mgrid[0:FRAME_HEIGHT, 0:FRAME_WIDTH].astype(np.float32)
        shade = 95 + 40 * xs / FRAME_WIDTH + 20 * ys / FRAME_HEIGHT
        self.background = np.dstack([shade * 0.95, shade, shade * 1.05])

    def render(self, face: np.ndarray, centre: Tuple[int, int]) -> np.ndarray:
        frame = self.background.copy()
        if face.ndim == 2:
            face = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
        size = self.face_px
        big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        x0 = int(np.clip(centre[0] - size // 2, 0, FRAME_WIDTH - size))
        y0 = int(np.clip(centre[1] - size // 2, 0, FRAME_HEIGHT - size))
        frame[y0:y0 + size, x0:x0 + size] = big
        frame += self.rng.normal(0.0, 2.0, frame.shape).astype(np.float32)  # sensor noise
        return np.clip(frame, 0, 255).astype(np.uint8)


def audio_track(segments: Sequence[Segment], start_s: float, end_s: float,
                seed: int) -> np.ndarray:
    """All utterances in place over a -60 dBFS noise floor, 16 kHz mono float32."""
    total = int(round((end_s - start_s) * SAMPLE_RATE))
    rng = np.random.default_rng(seed + 2)
    track = (rng.normal(0.0, 1e-3, total)).astype(np.float32)
    for segment in segments:
        for _, samples, at in segment.utterances:
            first = int(round((at - start_s) * SAMPLE_RATE))
            piece = samples[:max(0, total - first)]
            track[first:first + len(piece)] += piece
    return np.clip(track, -1.0, 32767 / 32768)


# ----------------------------------------------------------------------------- writing
def write_bag(path: Path, segments: Sequence[Segment], config: LayoutConfig,
              storage: str, manifest: Dict) -> List[Interval]:
    """Write the bag; returns the ground-truth intervals (bag time)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    typestore = make_typestore()
    Header = typestore.types['std_msgs/msg/Header']
    Time = typestore.types['builtin_interfaces/msg/Time']
    Image = typestore.types[IMAGE_TYPE]
    CompressedImage = typestore.types[COMPRESSED_TYPE]
    String = typestore.types[TRUTH_TYPE]
    AudioData = typestore.types['audio_common_msgs/msg/AudioData']
    AudioDataStamped = typestore.types[AUDIO_TYPE]
    AudioInfo = typestore.types[AUDIO_INFO_TYPE]

    def header(time_s: float, frame_id: str):
        ns = int(round(time_s * 1e9))
        return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame_id)

    start, end = segments[0].start, segments[-1].end
    intervals = [Interval(s.start, s.end, s.label) for s in segments]
    plugin = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}[storage]
    renderer = FrameRenderer(config.face_px, config.seed)
    rng = np.random.default_rng(config.seed + 3)
    track = audio_track(segments, start, end, config.seed)
    chunk = int(round(CHUNK_S * SAMPLE_RATE))
    raw_frames = config.image_format == 'raw'

    events: List[Tuple[float, int, object]] = []  # (time, order, what); frames drawn later
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        image_conn = writer.add_connection(
            camera_topic(config), IMAGE_TYPE if raw_frames else COMPRESSED_TYPE,
            typestore=typestore, offered_qos_profiles=[offered_qos(False, False)])
        audio_conn = writer.add_connection(AUDIO_TOPIC, AUDIO_TYPE, typestore=typestore,
                                           offered_qos_profiles=[offered_qos(False, True)])
        info_conn = writer.add_connection(AUDIO_INFO_TOPIC, AUDIO_INFO_TYPE,
                                          typestore=typestore,
                                          offered_qos_profiles=[offered_qos(True, True)])
        truth_conn = writer.add_connection(TRUTH_TOPIC, TRUTH_TYPE, typestore=typestore,
                                           offered_qos_profiles=[offered_qos(True, True)])
        writer.set_custom_data(MANIFEST_KEY, json.dumps(manifest))

        def put(connection, time_s, message):
            writer.write(connection, int(round(time_s * 1e9)),
                         typestore.serialize_cdr(message, connection.msgtype))

        put(info_conn, start, AudioInfo(channels=1, sample_rate=SAMPLE_RATE,
                                        sample_format='S16LE', bitrate=SAMPLE_RATE * 16,
                                        coding_format='wave'))
        for interval in intervals:
            events.append((interval.start, 0, ('truth', interval.label)))
        events.append((end, 0, ('truth', '')))
        for index in range(0, len(track) - chunk + 1, chunk):
            events.append((start + index / SAMPLE_RATE, 1, ('audio', index)))
        frame_count = int(math.floor((end - start) * config.fps))
        for number in range(frame_count):
            events.append((start + number / config.fps, 2, ('frame', number)))
        events.sort(key=lambda e: (e[0], e[1]))

        face_plan = _face_schedule(segments, config, rng)
        for time_s, _, (kind, value) in events:
            if kind == 'truth':
                put(truth_conn, time_s, String(data=value))
            elif kind == 'audio':
                pcm = np.round(track[value:value + chunk] * 32768).astype('<i2')
                put(audio_conn, time_s, AudioDataStamped(
                    header=header(time_s, 'microphone'),
                    audio=AudioData(data=np.frombuffer(pcm.tobytes(), np.uint8))))
            else:
                face, centre = face_plan(time_s)
                frame = renderer.render(face, centre)
                if raw_frames:
                    put(image_conn, time_s, Image(
                        header=header(time_s, 'camera'), height=FRAME_HEIGHT,
                        width=FRAME_WIDTH, encoding='bgr8', is_bigendian=0,
                        step=FRAME_WIDTH * 3, data=frame.reshape(-1)))
                else:
                    jpeg = cv2.imencode('.jpg', frame,
                                        [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]
                    put(image_conn, time_s, CompressedImage(
                        header=header(time_s, 'camera'), format='bgr8; jpeg compressed bgr8',
                        data=jpeg.reshape(-1)))
    return intervals


def _face_schedule(segments: Sequence[Segment], config: LayoutConfig,
                   rng: np.random.Generator):
    """time -> (face image, centre): each image held ``face_hold_s``; the head rests at one
    place per segment (one person, one track) with a pixel or two of jitter per frame."""
    places = [(int(rng.integers(FRAME_WIDTH // 2 - 120, FRAME_WIDTH // 2 + 121)),
               int(rng.integers(FRAME_HEIGHT // 2 - 60, FRAME_HEIGHT // 2 + 61)))
              for _ in segments]
    starts = [s.start for s in segments]

    def at(time_s: float):
        s_index = max(0, int(np.searchsorted(starts, time_s, side='right')) - 1)
        segment = segments[s_index]
        f_index = min(len(segment.faces) - 1,
                      int((time_s - segment.start) // config.face_hold_s))
        cx, cy = places[s_index]
        jitter = rng.integers(-2, 3, size=2)
        return segment.faces[f_index][1], (cx + int(jitter[0]), cy + int(jitter[1]))
    return at


def build(output: Path, faces: FaceSource, voices: VoiceSource, config: LayoutConfig,
          storage: str = 'mcap', labels_csv: Optional[Path] = None) -> Dict:
    """Plan, write the bag and its label CSV; returns the manifest."""
    output = Path(output)
    if config.image_format not in IMAGE_FORMATS:
        raise ValueError(f'image_format {config.image_format!r} is not one of '
                         f'{", ".join(IMAGE_FORMATS)}')
    if output.exists():
        raise FileExistsError(f'{output} exists: choose a new bag path')
    segments = plan_segments(faces, voices, config)
    start, end = segments[0].start, segments[-1].end
    manifest = {
        'format': 'mika-eval-bag/1',
        'face_source': faces.description,
        'voice_source': voices.description,
        'voice_speakers': voices.speakers,
        'segments': len(segments),
        'duration_s': round(end - start, 3),
        'fps': config.fps, 'face_px': config.face_px, 'face_hold_s': config.face_hold_s,
        'utterances_per_segment': config.utterances_per_segment,
        'audio': f'S16LE {SAMPLE_RATE} Hz mono, {CHUNK_S * 1000:.0f} ms chunks',
        'seed': config.seed, 'start_time_s': start,
        'truth_topic': TRUTH_TOPIC, 'camera_topic': camera_topic(config),
        'labels': [s.label for s in segments],
        'face_items': [[item_id for item_id, _ in s.faces] for s in segments],
        'voice_items': [[clip.clip_id for clip, _, _ in s.utterances] for s in segments],
    }
    intervals = write_bag(output, segments, config, storage, manifest)
    labels_csv = Path(labels_csv) if labels_csv else default_labels_path(output)
    write_truth_csv(labels_csv, intervals, start, comments=[
        f'ground truth of bag {output.name}: seconds from the bag start ({start:.3f} s bag time)',
        f'faces: {faces.description}',
        f'voices: {voices.description}',
        f'seed {config.seed}, {len(segments)} segments, {config.fps:g} FPS'])
    manifest['labels_csv'] = str(labels_csv)
    return manifest


def camera_topic(config: LayoutConfig) -> str:
    return CAMERA_TOPIC + ('' if config.image_format == 'raw' else COMPRESSED_SUFFIX)


def default_labels_path(bag: Path) -> Path:
    bag = Path(bag)
    return bag.parent / f'{bag.name}_labels.csv'


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('output', help='bag directory to create')
    faces = parser.add_mutually_exclusive_group(required=True)
    faces.add_argument('--fer2013', type=Path, help='fer2013.npz (faces of one split)')
    faces.add_argument('--face-folders', type=Path,
                       help='folder with one sub-folder of face images per emotion')
    parser.add_argument('--fer-split', default='private_test',
                        help='FER-2013 split (default private_test: never used in training)')
    parser.add_argument('--voice-corpus', type=Path, required=True,
                        help='folder with labels.csv (path,label,speaker_or_subject)')
    parser.add_argument('--speakers', nargs='*', default=None,
                        help='use only these speaker ids (held-out speakers of the model)')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    parser.add_argument('--labels-csv', type=Path, default=None,
                        help='ground-truth CSV (default <bag>_labels.csv beside the bag)')
    parser.add_argument('--segments', type=int, default=8)
    parser.add_argument('--utterances-per-segment', type=int, default=2)
    parser.add_argument('--fps', type=float, default=15.0, help='camera rate (15-30)')
    parser.add_argument('--face-hold-s', type=float, default=1.0,
                        help='each face image is shown this long')
    parser.add_argument('--face-px', type=int, default=200)
    parser.add_argument('--image-format', choices=IMAGE_FORMATS, default='raw',
                        help=f'raw: sensor_msgs/Image bgr8 on {CAMERA_TOPIC}; jpeg: '
                        f'CompressedImage (quality {JPEG_QUALITY}) on {CAMERA_TOPIC}'
                        f'{COMPRESSED_SUFFIX}, about 20x smaller')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        faces = (FaceSource.from_fer2013(args.fer2013, args.fer_split) if args.fer2013
                 else FaceSource.from_folders(args.face_folders))
        voices = VoiceSource.from_corpus(args.voice_corpus, args.speakers)
        config = LayoutConfig(segments=args.segments,
                              utterances_per_segment=args.utterances_per_segment,
                              fps=args.fps, face_hold_s=args.face_hold_s,
                              face_px=args.face_px, image_format=args.image_format,
                              seed=args.seed)
        manifest = build(Path(args.output), faces, voices, config, args.storage,
                         args.labels_csv)
    except (ValueError, OSError) as error:
        print(f'build_eval_bag: {error}', file=sys.stderr)
        return 2
    print(f'{args.output}: {manifest["segments"]} segments, {manifest["duration_s"]:.1f} s '
          f'({args.storage}); labels in {manifest["labels_csv"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
