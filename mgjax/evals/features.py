"""Clip features from a frozen encoder, extracted once and cached for every frozen-feature task.

A clip record (one labelled segment) gives `num_clips` windows spread evenly over the segment (frames
repeat when the segment is shorter than a window), each resized so its short side is the model's image
size and centre-cropped (`clip_views`; the recognition test adds crops along the long side). A window's
feature pools the encoder's output tokens (`pool_tokens`: the mean over tokens, as VideoMAE, after the
final norm for a pretraining model and fc_norm for a classifier; or their temporal standard deviation);
a clip's is the mean over its windows.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging
from PIL import Image

from mgjax import errors
from mgjax import files
from mgjax.data import records
from mgjax.models import videomae


def window_indices(num_frames: int, frames: int, stride: int, num_clips: int) -> np.ndarray:
  """(num_clips, frames) frame indices: windows spread evenly over the segment from its first frame to its
  last (one window: the centre one), clipped at the segment's end."""
  room = max(num_frames - records.window_span(frames, stride), 0)
  starts = (np.linspace(0, room, num_clips) if num_clips > 1 else np.array([room / 2])).round().astype(int)
  return np.minimum(starts[:, None] + np.arange(frames) * stride, num_frames - 1)


def resize_crops(frames: np.ndarray, size: int, crops: int = 1) -> np.ndarray:
  """(T, H, W, 3) -> (crops, T, size, size, 3): the short side resized to `size`, then `crops` square
  crops spread evenly along the long side (one crop: the centre), as VideoMAE's three-crop test."""
  t, h, w, _ = frames.shape
  s = size / min(h, w)
  nh, nw = max(size, round(h * s)), max(size, round(w * s))
  resized = np.stack([np.asarray(Image.fromarray(f).resize((nw, nh), Image.BILINEAR)) for f in frames])
  offsets = (np.linspace(0, 1, crops) if crops > 1 else np.array([0.5]))
  out = []
  for o in offsets:
    y0, x0 = int(o * (nh - size)), int(o * (nw - size))  # the centre: (n - size) // 2
    out.append(resized[:, y0:y0 + size, x0:x0 + size])
  return np.stack(out)


def clip_views(record, frames: int, stride: int, num_clips: int, size: int, crops: int = 1) -> np.ndarray:
  """uint8 (num_clips * crops, frames, size, size, 3) for one clip record, window-major."""
  idx = window_indices(int(record['num_frames']), frames, stride, num_clips)
  needed = np.unique(idx)
  decoded = dict(zip(needed.tolist(), records.decode_jpegs([record['frames'][i] for i in needed])))
  return np.concatenate([resize_crops(np.stack([decoded[i] for i in row]), size, crops) for row in idx])


POOLINGS = ('mean', 'temporal_std', 'temporal_std_grid')


def pool_tokens(tokens, grid_t: int, pooling: str):
  """(B, N, D) encoder tokens in t-major order -> (B, D), or (B, P * D) for 'temporal_std_grid'.

  'mean': the mean over all tokens (VideoMAE's pooling). 'temporal_std': for each spatial position, the
  standard deviation of its token over the grid_t temporal slots, then the mean over positions: what
  changes during the clip, with the static scene and the person's look (constant over time) removed.
  'temporal_std_grid': the same deviations for the P = N / grid_t positions, kept in place (where the
  change is, as well as what it is). P * D numbers per clip: 2048 for the XS demo, 200,704 for ViT-L at
  224 px, too many to cache and probe on the full dataset; meant for small models.
  """
  if pooling == 'mean':
    return tokens.mean(axis=1)
  b, n, d = tokens.shape
  if pooling == 'temporal_std':
    return tokens.reshape(b, grid_t, n // grid_t, d).std(axis=1).mean(axis=1)
  if pooling == 'temporal_std_grid':
    return tokens.reshape(b, grid_t, n // grid_t, d).std(axis=1).reshape(b, -1)
  raise ValueError(f'unknown pooling {pooling!r}; known: {POOLINGS}')


def feature_fn(fns, pooling: str = 'mean', layer: int = -1):
  """f(params, video uint8 (B,T,H,W,3)) -> float32 (B, D) features of the model of `fns` (a ModelFns).

  Mean pooling of a classifier is its own features (mean, then fc_norm); otherwise the encoder's tokens
  (after the final norm of a pretraining model) are pooled by `pool_tokens`. `layer`: the encoder block
  whose tokens are pooled (-1, the last, as above; an earlier block's tokens without any norm).
  """
  if pooling not in POOLINGS:
    raise errors.ConfigError(f'config.pooling: unknown pooling {pooling!r}; known: {POOLINGS}')
  cfg = fns.cfg
  depth = videomae.SIZES[cfg.size].depth
  if not -depth <= layer < depth:
    raise errors.ConfigError(f'layer {layer}: the {cfg.size} encoder has blocks 0..{depth - 1} '
                             f'(or -{depth}..-1 from the last)')
  last = layer in (-1, depth - 1)

  def f(params, video):
    module = fns.module(params)
    if fns.num_classes and pooling == 'mean' and last:
      return module.features(video).astype(jnp.float32)
    return pool_tokens(_tokens(module, video, cfg, layer), cfg.grid[0], pooling).astype(jnp.float32)
  return f


def _tokens(module, video, cfg, layer: int = -1):
  return module.encoder.tokens_after(videomae.normalized_patches(video, cfg), layer)


def tokens_fn(fns):
  """f(params, video uint8 (B,T,H,W,3)) -> float32 (B, N, D): every token of the encoder's last block
  (after the final norm of a pretraining model; a classifier's, whose norm comes after pooling, without)."""
  return lambda params, video: _tokens(fns.module(params), video, fns.cfg).astype(jnp.float32)


def metadata(record) -> dict:
  return {k: record[k].decode() if isinstance(record[k], bytes) else int(record[k]) for k in META}


def progress(n: int, desc: str, unit: str = 'clip'):
  """range(n) with progress: a live bar on a terminal; in a log file (SLURM, nohup) a log line every 30 s
  and at the end, instead of a carriage-return redraw per clip."""
  if jax.process_index() != 0:
    yield from range(n)
    return
  if sys.stderr.isatty():
    yield from tqdm.trange(n, desc=desc, unit=unit, leave=False)
    return
  start = last = time.monotonic()
  for i in range(n):
    yield i
    now = time.monotonic()
    if now - last >= 30 or i + 1 == n:
      logging.info('%s: %d/%d %ss, %.1f %ss/s', desc, i + 1, n, unit, (i + 1) / max(now - start, 1e-9), unit)
      last = now


META = ('label', 'video_id', 'emotion', 'subject_id')


def weights_fingerprint(params: dict) -> str:
  """A short hash of a parameter dict (every leaf's path, shape and up to 4096 of its values, evenly
  strided): what the feature cache is keyed on, so a checkpoint path whose weights have changed (a workdir
  that trained on, an export written again) is not served the old features."""
  h = hashlib.sha1()
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda kv: str(kv[0])):
    x = jnp.ravel(leaf)
    h.update(repr((jax.tree_util.keystr(path), x.shape)).encode())
    h.update(np.asarray(x[::max(1, x.size // 4096)], np.float32).tobytes())  # the stride on the device
  return h.hexdigest()[:16]


def cached(cache_dir: str, key: dict, compute) -> dict:
  """compute() once per key (checkpoint, split, sampling); later calls read the .npz. With several
  processes, process 0 decides whether the file is there (compute is a collective) and writes it."""
  name = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  root = files.path(cache_dir)
  path = root / f'{name}.npz'
  there = path.exists()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    there = bool(multihost_utils.broadcast_one_to_all(np.int32(there)))
  if there:
    with path.open('rb') as f, np.load(f, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  out = compute()
  if jax.process_index() != 0:
    return out
  files.write_atomic(path, lambda f: np.savez(f, **out), binary=True)
  files.write_json(root / f'{name}.json', key)
  return out
