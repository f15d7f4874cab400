"""Random access to the records the tfds_imigue3k builder writes, without TensorFlow.

A `pretrain` record is one chunk of a video: its JPEG frames plus metadata. Records keep video order, so
chunk k+1 of a video is the record after chunk k; a window that runs past its chunk continues there.
Only the frames a window needs are decoded.
"""

from __future__ import annotations

import glob
import io
import json
import os
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from mgjax import errors


# Builder versions whose records this code reads (tfds_imigue3k's VERSION and RELEASE_NOTES), oldest
# first; the last is the one this checkout's builder writes. 1.1.0 added the pretrain frame labels.
READABLE_VERSIONS = ('1.0.0', '1.1.0')
FRAME_LABELS_SINCE = '1.1.0'
NO_GESTURE = -1  # frame_label of a frame outside every segment (tfds_imigue3k.encode.NO_GESTURE)


def data_source(data_dir: str, config: str = 'pretrain', split: str = 'train'):
  """tfds.data_source over the built records; `split` may be any TFDS split spec ('all', 'train[:10%]').

  Needs neither TensorFlow nor the builder code: TFDS reads dataset_info.json / features.json. Records
  that are missing, of a builder version this code does not read, or without the split are a DataError
  that names the directory and says what to do.
  """
  root = os.path.join(os.path.abspath(data_dir), 'imigue3k', config)
  built = sorted(os.path.basename(os.path.dirname(p))
                 for p in glob.glob(os.path.join(root, '*', 'dataset_info.json')))
  if not built:
    raise errors.DataError(
        f'{data_dir}: no imigue3k/{config} records (no {root}/VERSION/dataset_info.json). Build them with '
        f'`tfds build imigue3k --imports=tfds_imigue3k --config={config} --data_dir={data_dir} '
        f'--manual_dir=M --file_format=array_record` (README, Data), or leave data_dir empty to train '
        f'on the generated demo sample.')
  readable = [v for v in built if v in READABLE_VERSIONS]
  if not readable:
    raise errors.DataError(
        f'{root}: records of builder version {", ".join(built)}; this mgjax reads version '
        f'{", ".join(READABLE_VERSIONS)}. Build them again with this checkout\'s tfds_imigue3k into a '
        f'new data_dir.')
  try:
    return tfds.data_source(f'imigue3k/{config}:{readable[-1]}', split=split, data_dir=data_dir)
  except ValueError as e:  # an unknown split
    raise errors.DataError(f'{root}/{readable[-1]}: {e}') from None


def require_frame_labels(source, data_dir: str, what: str) -> None:
  """A DataError naming the records and what needs them when `source` (pretrain) has no frame labels."""
  if 'frame_label' not in source.dataset_info.features:
    version = source.dataset_info.version
    raise errors.DataError(
        f'{os.path.join(os.path.abspath(data_dir), "imigue3k", "pretrain", str(version))}: records of '
        f'builder version {version} have no per-frame micro-gesture labels, which {what} needs (builder '
        f'version {FRAME_LABELS_SINCE} on). Build them again with this checkout\'s tfds_imigue3k into a '
        f'new data_dir; pretraining still reads these.')


def num_classes(source) -> int:
  """The number of classes of a `clips` source's labels, from the dataset's metadata."""
  return int(source.dataset_info.features['label'].num_classes)


def protocol(data_dir: str, config: str = 'clips') -> dict:
  """The protocol.json the builder writes beside the records (splits, emotion videos); {} if absent."""
  found = sorted(glob.glob(os.path.join(data_dir, 'imigue3k', config, '*', 'protocol.json')))
  if not found:
    return {}
  with open(found[-1]) as f:
    return json.load(f)


def open_jpegs(jpegs: Sequence[bytes]) -> list:
  """JPEG bytes -> decoded RGB PIL images (no copy when the JPEG is RGB already, as the builder writes)."""
  out = []
  for b in jpegs:
    img = Image.open(io.BytesIO(b))
    img.load()
    out.append(img if img.mode == 'RGB' else img.convert('RGB'))
  return out


def decode_jpegs(jpegs: Sequence[bytes]) -> np.ndarray:
  """JPEG bytes -> uint8 array (T, H, W, 3)."""
  return np.stack([np.asarray(img) for img in open_jpegs(jpegs)])


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
