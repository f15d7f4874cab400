"""Random access to the records the tfds_imigue3k builder writes, without TensorFlow.

A `pretrain` record is one chunk of a video: its JPEG frames plus metadata. Records keep video order, so
chunk k+1 of a video is the record after chunk k; a window that runs past its chunk continues there.
Only the frames a window needs are decoded.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image


def data_source(data_dir: str, config: str = 'pretrain', split: str = 'train'):
  """tfds.data_source over the built records; `split` may be any TFDS split spec ('all', 'train[:10%]').

  Needs neither TensorFlow nor the builder code: TFDS reads dataset_info.json / features.json.
  """
  return tfds.data_source(f'imigue3k/{config}', split=split, data_dir=data_dir)


def decode_jpegs(jpegs: Sequence[bytes]) -> np.ndarray:
  """JPEG bytes -> uint8 array (T, H, W, 3)."""
  return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert('RGB')) for b in jpegs])


def window_frame_indices(num_frames: int, stride: int) -> np.ndarray:
  return np.arange(num_frames) * stride


def window_span(num_frames: int, stride: int) -> int:
  """Frames from the first to the last frame of a window, both included."""
  return (num_frames - 1) * stride + 1


def valid_offsets(record: dict, num_frames: int, stride: int) -> int:
  """How many start offsets in this chunk leave room for the whole window in the video."""
  span = window_span(num_frames, stride)
  last_start = int(record['video_num_frames']) - span  # last valid start frame in the video
  return int(np.clip(last_start - int(record['start_frame']) + 1, 0, int(record['num_frames'])))


def gather(source, index: int, num_frames: int, first=None) -> list:
  """Records from chunk `index` on, same video, until they hold `num_frames` frames or the video ends.
  `first` may pass source[index] when the caller has already read it."""
  recs = [source[index] if first is None else first]
  have = int(recs[0]['num_frames'])
  while have < num_frames:
    if index + len(recs) >= len(source):
      break
    nxt = source[index + len(recs)]
    last = recs[-1]
    if nxt['video_id'] != last['video_id'] or int(nxt['chunk_index']) != int(last['chunk_index']) + 1:
      break
    recs.append(nxt)
    have += int(nxt['num_frames'])
  return recs


def concat(recs: list, feature: str) -> np.ndarray:
  return np.concatenate([np.asarray(r[feature]) for r in recs])


def window_jpegs(recs: list, offset: int, num_frames: int, stride: int) -> list:
  """JPEG bytes of frames offset, offset + stride, ... counted from the start of recs[0]."""
  frames = [f for r in recs for f in r['frames']]
  wanted = offset + window_frame_indices(num_frames, stride)
  if wanted[-1] >= len(frames):
    r = recs[0]
    raise ValueError(
        f'window of {num_frames} frames at stride {stride} from frame {int(r["start_frame"]) + offset} '
        f'runs past the end of video {r["video_id"]!r} ({int(r["video_num_frames"])} frames)')
  return [frames[i] for i in wanted]


def read_window(source, index: int, offset: int, num_frames: int, stride: int) -> np.ndarray:
  """Decodes frames offset, offset + stride, ... of the chunk at `index`, continuing into later chunks.

  Returns uint8 (num_frames, H, W, 3).
  """
  recs = gather(source, index, offset + window_span(num_frames, stride))
  return decode_jpegs(window_jpegs(recs, offset, num_frames, stride))
