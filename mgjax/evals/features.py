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
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging
from PIL import Image

from mgjax.data import records
from mgjax.models import vit
from mgjax.models.videomae import IMAGENET_MEAN, IMAGENET_STD


def window_indices(num_frames: int, frames: int, stride: int, num_clips: int) -> np.ndarray:
  """(num_clips, frames) frame indices: windows spread evenly over the segment from its first frame to its
  last (one window: the centre one), clipped at the segment's end."""
  span = (frames - 1) * stride + 1
  room = max(num_frames - span, 0)
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


def encoder_feature_fn(module, pretraining: bool, pooling: str = 'mean'):
  """jitted video uint8 (B,T,H,W,3) -> (B, D) features of a VideoMAE (pretraining) or VideoClassifier.

  Mean pooling of a classifier is its own features (mean, then fc_norm); otherwise the encoder's tokens
  (after the final norm of a pretraining model) are pooled by `pool_tokens`.
  """
  if not pretraining and pooling == 'mean':
    return jax.jit(module.features)
  cfg = module.cfg

  def f(video):
    x = (video.astype(jnp.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    tokens = module.encoder(vit.patchify(x, cfg.patch, cfg.tubelet))
    return pool_tokens(tokens, cfg.grid[0], pooling).astype(jnp.float32)
  return jax.jit(f)


def progress(n: int, desc: str):
  """range(n) with progress: a live bar on a terminal; in a log file (SLURM, nohup) a log line every 30 s
  and at the end, instead of a carriage-return redraw per clip."""
  if sys.stderr.isatty():
    yield from tqdm.trange(n, desc=desc, unit='clip', leave=False)
    return
  start = last = time.monotonic()
  for i in range(n):
    yield i
    now = time.monotonic()
    if now - last >= 30 or i + 1 == n:
      logging.info('%s: %d/%d clips, %.1f clips/s', desc, i + 1, n, (i + 1) / max(now - start, 1e-9))
      last = now


def extract(feature_fn, source, *, frames: int, stride: int, num_clips: int, size: int, batch: int = 16,
            desc: str = 'features') -> dict:
  """Features and labels of every clip record in `source`."""
  feats, meta = [], {'label': [], 'video_id': [], 'emotion': [], 'subject_id': []}
  pending, owners = [], []

  def flush():
    x = np.concatenate(pending)
    pad = (-len(x)) % batch
    out = np.asarray(feature_fn(jnp.asarray(np.concatenate([x, x[:pad]]) if pad else x)))[:len(x)]
    for i in range(len(owners)):
      feats.append(out[i * num_clips:(i + 1) * num_clips].mean(0))
    pending.clear()
    owners.clear()

  for i in progress(len(source), desc):
    r = source[i]
    pending.append(clip_views(r, frames, stride, num_clips, size))
    owners.append(i)
    for k in meta:
      meta[k].append(r[k].decode() if isinstance(r[k], bytes) else int(r[k]))
    if len(pending) * num_clips >= batch:
      flush()
  if pending:
    flush()
  return {'features': np.stack(feats).astype(np.float32), **{k: np.asarray(v) for k, v in meta.items()}}


def weights_fingerprint(module) -> str:
  """A short hash of a model's parameters (every leaf's path, shape and up to 4096 of its values, evenly
  strided): what the feature cache is keyed on, so a checkpoint path whose weights have changed (a workdir
  that trained on, an export written again) is not served the old features."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  h = hashlib.sha1()
  flat = nnx.state(module, nnx.Param).flat_state()
  for path, leaf in sorted(((tuple(map(str, p)), v) for p, v in flat), key=lambda kv: kv[0]):
    x = jnp.ravel(getattr(leaf, 'value', leaf))
    h.update(repr((path, x.shape)).encode())
    h.update(np.asarray(x[::max(1, x.size // 4096)], np.float32).tobytes())  # the stride on the device
  return h.hexdigest()[:16]


def cached(cache_dir: str, key: dict, compute) -> dict:
  """compute() once per key (checkpoint, split, sampling); later calls read the .npz."""
  name = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  path = os.path.join(cache_dir, f'{name}.npz')
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  out = compute()
  os.makedirs(cache_dir, exist_ok=True)
  tmp = path + '.tmp.npz'
  np.savez(tmp, **out)
  os.replace(tmp, path)
  with open(os.path.join(cache_dir, f'{name}.json'), 'w') as f:
    json.dump(key, f, indent=2)
  return out
