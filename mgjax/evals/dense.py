"""Dense features of whole videos: a window every `hop` frames, each the frozen encoder's pooled tokens.

The `pretrain` records hold whole videos in order, chunk after chunk. Window w of a video starts at frame
w * hop and reads `frames` frames `stride` apart (a span of (frames - 1) * stride + 1 frames); windows
start while the span fits in the video (a video shorter than one span gets one window, its last frame
repeated). A window's centre frame is start + (span - 1) / 2. Each frame is resized so its short side is
the model's image size and centre-cropped, as the clip evaluators do (`features.resize_crops`), so a
window here and the same frames of a clip give the same feature.

What a window is labelled with (for spotting) is the micro-gesture class of its centre frame
(`frame_label`, -1 = none), and a video's ground truth is the union of its chunks' `segments`: both only
in records of builder version 1.1.0 on.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Optional

import numpy as np

from mgjax import errors
from mgjax.data import records
from mgjax.evals import features as features_lib


@dataclasses.dataclass
class Video:
  """One video of a pretrain source: its records are source[first : first + count]."""
  video_id: str
  first: int
  count: int
  num_frames: int
  fps: float
  subject_id: int
  emotion: int
  labelled: Optional[bool]  # None: records without frame labels (builder version 1.0.0)


def videos(source) -> list[Video]:
  """The videos of a pretrain source, in record order. A video whose chunks are not consecutive and
  complete (0, 1, ..., num_chunks - 1) is a DataError naming it and the record."""
  out: list[Video] = []
  for i in range(len(source)):
    r = source[i]
    vid = r['video_id'].decode()
    k = int(r['chunk_index'])
    if k == 0:
      labelled = bool(r['labelled']) if 'labelled' in r else None
      out.append(Video(vid, i, 0, int(r['video_num_frames']), float(r['fps']), int(r['subject_id']),
                       int(r['emotion']), labelled))
    if not out or out[-1].video_id != vid or out[-1].count != k:
      raise errors.DataError(f'pretrain record {i}: chunk {k} of video {vid!r} does not follow '
                             f'{"nothing" if not out else f"chunk {out[-1].count - 1} of video {out[-1].video_id!r}"}; '
                             'the records are damaged or were not written by tfds_imigue3k')
    out[-1].count += 1
  for v in out:
    n = int(source[v.first]['num_chunks'])
    if v.count != n:
      raise errors.DataError(f'pretrain records {v.first}..{v.first + v.count - 1}: video {v.video_id!r} '
                             f'has {v.count} of its {n} chunks')
  return out


def window_starts(num_frames: int, frames: int, stride: int, hop: int) -> np.ndarray:
  return np.arange(0, max(num_frames - records.window_span(frames, stride), 0) + 1, hop)


def window_centres(starts: np.ndarray, frames: int, stride: int) -> np.ndarray:
  return starts + (records.window_span(frames, stride) - 1) / 2


def _windows(source, video: Video, starts: np.ndarray, frames: int, stride: int, size: int,
             records_read: list) -> Iterator[np.ndarray]:
  """uint8 (frames, size, size, 3) per window, decoding each needed frame once, chunk by chunk. Each
  record's frame labels and segments (when it has them) go to `records_read` as it is read."""
  offsets = np.arange(frames) * stride
  wanted = np.unique(np.minimum(starts[:, None] + offsets, video.num_frames - 1))
  kept, w = {}, 0
  for i in range(video.first, video.first + video.count):
    r = source[i]
    if 'frame_label' in r:
      records_read.append((r['frame_label'], np.asarray(r['segments']).reshape(-1, 3)))
    a, n = int(r['start_frame']), int(r['num_frames'])
    need = wanted[(wanted >= a) & (wanted < a + n)]
    try:
      decoded = records.decode_jpegs([r['frames'][j - a] for j in need]) if len(need) else []
    except (OSError, ValueError) as e:
      raise errors.DataError(f'pretrain record {i} (video {video.video_id!r}, frames {a}..{a + n - 1}): '
                             f'cannot decode a frame: {e}') from None
    for j, frame in zip(need.tolist(), decoded):
      kept[j] = features_lib.resize_crops(frame[None], size)[0, 0]
    while w < len(starts) and min(starts[w] + offsets[-1], video.num_frames - 1) < a + n:
      idx = np.minimum(starts[w] + offsets, video.num_frames - 1)
      yield np.stack([kept[j] for j in idx.tolist()])
      w += 1
      for j in [j for j in kept if j < (starts[w] if w < len(starts) else video.num_frames)]:
        del kept[j]


def labels_and_segments(records_read: list, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """From a video's (frame_label, segments) per record: (class of each window's centre frame, -1 =
  none; the video's segments (n, 3): start, end, class)."""
  frame_label = np.concatenate([labels for labels, _ in records_read])
  segs = {tuple(s) for _, chunk in records_read for s in chunk.tolist()}
  return frame_label[np.round(centres).astype(int)], np.array(sorted(segs), np.int64).reshape(-1, 3)


def video_features(source, video: Video, fn: Callable, *, frames: int, stride: int, hop: int, size: int,
                   batch: int) -> dict:
  """fn(uint8 (batch, frames, size, size, 3)) -> (batch, D) over every window of `video`, `batch` at a
  time (the last batch padded, the padding dropped). Returns {'features' float32 (W, D), 'start' (W,),
  'centre' (W,)} and, for records with frame labels, 'label' (W,) and 'segments' (n, 3)."""
  starts = window_starts(video.num_frames, frames, stride, hop)
  outs, pending, records_read = [], [], []

  def flush():
    x = np.stack(pending)
    pad = batch - len(x)
    y = np.asarray(fn(np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x))[:len(x)]
    outs.append(y.astype(np.float32))
    pending.clear()

  for window in _windows(source, video, starts, frames, stride, size, records_read):
    pending.append(window)
    if len(pending) == batch:
      flush()
  if pending:
    flush()
  centres = window_centres(starts, frames, stride)
  out = {'features': np.concatenate(outs), 'start': starts, 'centre': centres}
  if video.labelled is not None:
    out['label'], out['segments'] = labels_and_segments(records_read, centres)
  return out
