"""Worker side of the build: one source video -> a staging file of examples (pickled dicts, in order).

Kept apart from the builder module so that worker processes import PyAV, numpy and Pillow only, not
tensorflow_datasets. A job's output depends on the job alone, so the records do not depend on how many
workers ran.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Optional

import av
import numpy as np

from tfds_imigue3k import labels as labels_lib
from tfds_imigue3k import video as video_lib


NO_GESTURE = -1  # pretrain frame_label of a frame outside every segment


@dataclasses.dataclass(frozen=True)
class Settings:
  kind: str  # 'clips' or 'pretrain'
  short_side: int
  chunk_frames: int
  jpeg_quality: int


@dataclasses.dataclass(frozen=True)
class VideoJob:
  """What a worker needs to turn one video into examples."""
  settings: Settings
  video_id: str
  path: str
  meta: labels_lib.VideoMeta
  info: video_lib.VideoInfo
  segments: list  # this video's usable segments of labels.csv
  out_path: str


def process_video(job: VideoJob) -> Optional[labels_lib.Problem]:
  """Writes job.out_path atomically. Returns None, or the problem that stopped this video."""
  tmp = job.out_path + '.tmp'
  try:
    with open(tmp, 'wb') as out:
      write = _write_clips if job.settings.kind == 'clips' else _write_chunks
      for example in write(job):
        pickle.dump(example, out, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, job.out_path)
    return None
  except (video_lib.VideoError, av.FFmpegError, OSError, ValueError) as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    return labels_lib.Problem(f'videos/{os.path.basename(job.path)}', None, job.video_id,
                              f'failed while decoding: {type(e).__name__}: {e}')


def probe_task(path: str):
  """(VideoInfo, None) or (None, what is wrong)."""
  try:
    return video_lib.probe(path), None
  except video_lib.VideoError as e:
    return None, str(e)


def read_staged(path: str):
  with open(path, 'rb') as f:
    while True:
      try:
        yield pickle.load(f)
      except EOFError:
        return


def _common(job: VideoJob, width: int, height: int) -> dict:
  return {'video_id': job.video_id, 'subject_id': job.meta.subject_id, 'emotion': job.meta.emotion,
          'fps': np.float32(job.info.fps), 'height': height, 'width': width}


def _write_clips(job: VideoJob):
  info, segments, st = job.info, job.segments, job.settings
  w, h = video_lib.output_size(info.width, info.height, st.short_side)
  needed = np.zeros(info.num_frames, bool)
  for s in segments:
    needed[s.start_frame:s.end_frame + 1] = True
  last = max(s.end_frame for s in segments)
  jpegs = {}
  for i, rgb, _ in video_lib.decode(job.path, w, h, wanted=needed.__getitem__, stop=last + 1):
    if rgb is not None:
      jpegs[i] = video_lib.encode_jpeg(rgb, st.jpeg_quality)
  if len(jpegs) < needed.sum():
    raise video_lib.VideoError(f'decoded only up to frame {max(jpegs, default=-1)}, segments need {last}')
  for s in sorted(segments, key=lambda s: s.label_id):
    ex = _common(job, w, h)
    ex.update({
        'frames': np.array([jpegs[i] for i in range(s.start_frame, s.end_frame + 1)], dtype=object),
        'label': s.label, 'raw_class': s.raw_class, 'label_id': s.label_id,
        'start_frame': s.start_frame, 'end_frame': s.end_frame,
        'num_frames': s.end_frame - s.start_frame + 1,
    })
    yield ex


def frame_labels(segments, num_frames: int) -> np.ndarray:
  """Per frame: the class of the segment covering it, NO_GESTURE outside every segment. Where segments
  overlap (iMiGUE's rows do, often by a frame or more) the one that started last holds the frame: the
  gesture in progress is the newest one."""
  out = np.full(num_frames, NO_GESTURE, np.int64)
  for s in _in_order(segments):
    out[s.start_frame:s.end_frame + 1] = s.label
  return out


def _in_order(segments) -> list:
  return sorted(segments, key=lambda s: (s.start_frame, s.label_id))


def _write_chunks(job: VideoJob):
  info, st = job.info, job.settings
  labelled = job.meta.source == 'labels.csv'
  labels = frame_labels(job.segments, info.num_frames)
  segs = np.array([[s.start_frame, s.end_frame, s.label] for s in _in_order(job.segments)],
                  np.int64).reshape(-1, 3)
  w, h = video_lib.output_size(info.width, info.height, st.short_side)
  n, size = info.num_frames, st.chunk_frames
  num_chunks = -(-n // size)
  scorer = video_lib.QualityScorer()
  frames, motion, cut = [], [], []
  count = 0
  for i, rgb, thumb in video_lib.decode(job.path, w, h, stop=n):
    count = i + 1
    frames.append(video_lib.encode_jpeg(rgb, st.jpeg_quality))
    m, c = scorer(thumb)
    motion.append(m)
    cut.append(c)
    if len(frames) == size or count == n:
      motion_a, cut_a = np.array(motion, np.float32), np.array(cut, bool)
      steady = motion_a[~cut_a]
      ex = _common(job, w, h)
      start = (i // size) * size
      ex.update({
          'frames': np.array(frames, dtype=object), 'start_frame': start,
          'num_frames': len(frames), 'chunk_index': i // size, 'num_chunks': num_chunks,
          'video_num_frames': n, 'motion': motion_a, 'cut': cut_a,
          'motion_energy': np.float32(steady.mean() if steady.size else 0.0),
          'has_cut': bool(cut_a[1:].any()),  # cut_a[0] is a cut just before the chunk, not inside it
          'labelled': labelled,
          'frame_label': labels[start:start + len(frames)],
          'segments': segs[(segs[:, 1] >= start) & (segs[:, 0] < start + len(frames))],
      })
      yield ex
      frames, motion, cut = [], [], []
  if count < n:
    raise video_lib.VideoError(f'decoded {count} frames, probe counted {n}')
