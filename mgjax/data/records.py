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


def read_window(source, index: int, offset: int, num_frames: int, stride: int, record=None) -> np.ndarray:
  """Decodes frames offset, offset + stride, ... of the chunk at `index`, continuing into later chunks.

  Returns uint8 (num_frames, H, W, 3). `record` may pass source[index] if the caller already read it.
  """
  rec = source[index] if record is None else record
  wanted = offset + window_frame_indices(num_frames, stride)
  jpegs, base = [], 0
  while True:
    n = int(rec['num_frames'])
    here = wanted[(wanted >= base) & (wanted < base + n)] - base
    jpegs.extend(rec['frames'][i] for i in here)
    if len(jpegs) == num_frames:
      return decode_jpegs(jpegs)
    nxt = source[index + 1] if index + 1 < len(source) else None
    if (nxt is None or nxt['video_id'] != rec['video_id']
        or int(nxt['chunk_index']) != int(rec['chunk_index']) + 1):
      raise ValueError(
          f'window of {num_frames} frames at stride {stride} from frame '
          f'{int(source[index]["start_frame"]) + offset} runs past the end of video '
          f'{rec["video_id"]!r} ({int(rec["video_num_frames"])} frames)')
    index, base, rec = index + 1, base + n, nxt
