"""Camera-like videos made from real face images, for the personal chain's tests and demo.

ROS-free. There is no labelled video of one person in the shared data, so a video is
assembled the way a webcam would see a face: a real face image placed in a frame (640x480
by default) over a soft background, moving slowly (drift of a few pixels per frame, +-5 %
scale, +-4 degrees of roll), with a slow change of brightness and sensor noise, at a camera
rate. Each image is held for ``hold_s`` seconds, so neighbouring frames are near-copies,
as in a real recording.

Two kinds of face are used, and neither is a person's own recording:

- FER-2013 faces (48x48 grey web photos, one label each, no identities): one labelled
  segment per emotion shows a few images of that label. A "repertoire" is a fixed set
  of such images per label that several sessions draw from, standing in for one person
  whose expressions recur from one recording to the next.
- The astronaut portrait of scikit-image (one real person, one expression): used to
  measure how alike the neighbouring frames of a moving face are.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from mika_common.emotions import EMOTION_LABELS


@dataclass(frozen=True)
class Motion:
    """How the face moves and the camera behaves, per session (``seed``)."""

    fps: float = 10.0
    hold_s: float = 1.0          # each face image stays this long
    width: int = 640             # frame size
    height: int = 480
    face_px: int = 200           # side of the face image in the frame
    drift_px: float = 30.0       # amplitude of the slow drift of the head
    scale: float = 0.05          # +- relative size change
    roll_deg: float = 4.0        # +- rotation
    brightness: float = 0.08     # +- slow gain change
    noise: float = 2.0           # sensor noise, grey levels (standard deviation)
    seed: int = 0


@dataclass(frozen=True)
class Segment:
    """One labelled stretch of video: ``faces`` shown one after another, ``hold_s`` each."""

    label: str
    faces: Tuple[np.ndarray, ...]

    def duration(self, motion: Motion) -> float:
        return len(self.faces) * motion.hold_s


def _background(width: int, height: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = 95 + 40 * xs / width + 20 * ys / height
    return np.dstack([shade * 0.95, shade, shade * 1.05])


def render_frames(segments: Sequence[Segment], motion: Motion = Motion()
                  ) -> Iterator[Tuple[float, np.ndarray]]:
    """(seconds from the start, BGR uint8 frame) of the whole video, in time order."""
    rng = np.random.default_rng(motion.seed)
    frame_size = (motion.width, motion.height)
    background = _background(*frame_size)
    phases = rng.uniform(0, 2 * math.pi, 5)
    periods = rng.uniform(3.0, 7.0, 5)  # seconds: slow, like a person sitting
    centre = np.array(frame_size) / 2 + rng.uniform(-0.1, 0.1, 2) * motion.width
    shown: List[Tuple[float, np.ndarray]] = []
    start = 0.0
    for segment in segments:
        for number, face in enumerate(segment.faces):
            shown.append((start + number * motion.hold_s, face))
        start += segment.duration(motion)
    starts = [t for t, _ in shown]
    for frame_index in range(int(math.floor(start * motion.fps))):
        time_s = frame_index / motion.fps
        face = shown[int(np.searchsorted(starts, time_s, side='right')) - 1][1]
        wave = np.sin(2 * math.pi * time_s / periods + phases)
        position = centre + motion.drift_px * wave[:2]
        size = motion.face_px * (1 + motion.scale * wave[2])
        angle = motion.roll_deg * wave[3]
        gain = 1 + motion.brightness * wave[4]
        if face.ndim == 2:
            face = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
        side = face.shape[0]
        matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, size / side)
        matrix[:, 2] += position - side / 2
        frame = background.copy()
        cv2.warpAffine(face.astype(np.float32), matrix, frame_size, dst=frame,
                       flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_TRANSPARENT)
        frame *= gain
        frame += rng.standard_normal(frame.shape, dtype=np.float32) * motion.noise
        yield time_s, np.clip(frame, 0, 255).astype(np.uint8)


def intervals_of(segments: Sequence[Segment], motion: Motion) -> List[Tuple[float, float, str]]:
    """(start, end, label) of each segment, seconds from the start of the video."""
    intervals, start = [], 0.0
    for segment in segments:
        end = start + segment.duration(motion)
        intervals.append((start, end, segment.label))
        start = end
    return intervals


def shown_at(segments: Sequence[Segment], motion: Motion, time_s: float) -> Tuple[int, int]:
    """(segment index, image index in it) of the face image shown at ``time_s``."""
    start = 0.0
    for number, segment in enumerate(segments):
        end = start + segment.duration(motion)
        if time_s < end:
            return number, min(len(segment.faces) - 1, int((time_s - start) // motion.hold_s))
        start = end
    raise ValueError(f'{time_s} s is after the end of the video ({start} s)')


def write_labels_csv(path: Path, intervals: Sequence[Tuple[float, float, str]],
                     comment: str = '') -> Path:
    """The ``start,end,label`` file of the sessions (seconds from the start)."""
    lines = [f'# {comment}'] if comment else []
    lines.append('start,end,label')
    lines += [f'{start:.3f},{end:.3f},{label}' for start, end, label in intervals]
    Path(path).write_text('\n'.join(lines) + '\n')
    return Path(path)


def write_video(path: Path, frames: Iterator[Tuple[float, np.ndarray]], motion: Motion
                ) -> Path:
    """An MJPG ``.avi`` (or ``.mp4``, mp4v) file that OpenCV and FFmpeg read back."""
    path = Path(path)
    fourcc = cv2.VideoWriter_fourcc(*('mp4v' if path.suffix == '.mp4' else 'MJPG'))
    writer = cv2.VideoWriter(str(path), fourcc, motion.fps, (motion.width, motion.height))
    if not writer.isOpened():
        raise OSError(f'OpenCV cannot write video {path}')
    try:
        for _, frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path


# ----------------------------------------------------------------------------- faces
def fer2013_faces(path: Path, split: str = 'private_test', seed: int = 0
                  ) -> Dict[str, List[np.ndarray]]:
    """FER-2013 faces of one split by label, shuffled; blank images and test images that
    also occur in train are left out (the shipped model was trained on ``train``)."""
    with np.load(path) as data:
        names = [str(n) for n in data['label_names']]
        chosen = data['split'] == split
        if 'test_image_also_in_train' in data:
            chosen &= ~data['test_image_also_in_train'].astype(bool)
        images, labels = data['images'][chosen], data['labels'][chosen]
    usable = images.reshape(len(images), -1).std(axis=1) > 10.0
    order = np.random.default_rng(seed).permutation(np.flatnonzero(usable))
    faces: Dict[str, List[np.ndarray]] = {label: [] for label in EMOTION_LABELS}
    for index in order:
        faces[names[int(labels[index])]].append(images[index])
    return faces


def keep_detectable(faces: Dict[str, List[np.ndarray]], detector, motion: Motion,
                    limit: int) -> Dict[str, List[np.ndarray]]:
    """Up to ``limit`` images per label that ``detector`` finds when shown still in a frame.

    Many 48x48 web crops of FER-2013 (tight, cut foreheads and chins) are never found by a
    face detector, whereas a person sitting in front of the camera is: a repertoire meant
    to stand for such a person is drawn from the images the detector finds.
    """
    still = dataclasses.replace(motion, drift_px=0.0, scale=0.0, roll_deg=0.0,
                                brightness=0.0, hold_s=1.0, fps=1.0)
    kept: Dict[str, List[np.ndarray]] = {}
    for label, items in faces.items():
        kept[label] = []
        for face in items:
            _, frame = next(render_frames([Segment(label, (face,))], still))
            detector.reset()  # each image on its own, not looked for where the last one was
            if detector.detect(frame):
                kept[label].append(face)
                if len(kept[label]) == limit:
                    break
    return kept


def repertoire(faces: Dict[str, List[np.ndarray]], per_label: int, offset: int = 0
               ) -> Dict[str, List[np.ndarray]]:
    """``per_label`` images of each label, starting at ``offset`` in each label's list."""
    chosen = {label: items[offset:offset + per_label] for label, items in faces.items()}
    short = [label for label, items in chosen.items() if len(items) < per_label]
    if short:
        raise ValueError(f'fewer than {per_label} faces of {short} after offset {offset}')
    return chosen


def session_segments(pool: Dict[str, List[np.ndarray]], images_per_segment: int,
                     seed: int, labels: Optional[Sequence[str]] = None) -> List[Segment]:
    """One segment per label in a shuffled order, each a random draw from the pool."""
    rng = np.random.default_rng(seed)
    labels = list(labels or pool)
    segments = []
    for label in rng.permutation(labels):
        items = pool[str(label)]
        picks = rng.choice(len(items), size=images_per_segment,
                           replace=len(items) < images_per_segment)
        segments.append(Segment(str(label), tuple(items[i] for i in picks)))
    return segments


@dataclass(frozen=True)
class Recording:
    """A video file and its ``start,end,label`` file, to import as session ``session_id``."""

    session_id: str
    video: Path
    labels: Path


def render_recordings(out_dir: Path, pools: Dict[str, Dict[str, list]],
                      plan: Sequence[tuple], motion: Motion,
                      images_per_segment: int) -> List[Recording]:
    """One video file and label file per (session id, pool name, seed) of ``plan``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recordings = []
    for session_id, pool_name, seed in plan:
        session_motion = dataclasses.replace(motion, seed=seed)
        segments = session_segments(pools[pool_name], images_per_segment, seed)
        video = write_video(out_dir / f'{session_id}.avi',
                            render_frames(segments, session_motion), session_motion)
        labels = write_labels_csv(
            out_dir / f'{session_id}.csv', intervals_of(segments, session_motion),
            f'{session_id}: FER-2013 private-test faces of pool {pool_name!r}, seed {seed}')
        recordings.append(Recording(session_id, video, labels))
    return recordings


def astronaut_segments(seconds: float, label: str = 'happy') -> List[Segment]:
    """The astronaut's head (one real person, smiling) held for ``seconds``."""
    from mika_perception.sample_frames import portrait_bgr
    return [Segment(label, (portrait_bgr(),) * max(1, int(round(seconds))))]
