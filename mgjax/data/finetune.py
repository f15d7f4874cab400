"""grain pipeline for fine-tuning on the `clips` records (one record per labelled segment).

Per clip: a random window of the segment (frames repeat when it is shorter), random resized crop,
flip, RandAugment with the same operations and magnitudes for every frame, random erasing of the same box
in every frame; repeated augmentation (R views of one decode). Mixup / cutmix and label smoothing happen
on the device, in the step. Global positions map to records through a seeded order: a plain shuffle, or
class-balanced sampling for the long tail. Every random choice is seeded by (seed, global position).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from mgjax.data import records
from mgjax.data import stream


@dataclasses.dataclass(frozen=True)
class FinetuneInputConfig:
  frames: int = 16
  stride: int = 4
  image_size: int = 224
  scale: tuple = (0.08, 1.0)  # random resized crop: area fraction ...
  ratio: tuple = (3 / 4, 4 / 3)  # ... and aspect ratio
  flip: bool = True
  randaug_n: int = 4  # RandAugment m7 n4, as the VideoMAE fine-tuning recipe
  randaug_m: int = 7
  erase_prob: float = 0.25
  num_repeats: int = 2
  class_balanced: bool = False
  seed: int = 0
  global_batch: int = 32
  micro_batches: int = 1  # host batches laid out as stream.batches says
  workers: int = 0


def _rotate(img, m, s):
  return img.rotate(s * 30 * m / 10, resample=Image.BILINEAR)


def _shear(img, m, s):
  return img.transform(img.size, Image.AFFINE, (1, s * 0.3 * m / 10, 0, 0, 1, 0), Image.BILINEAR)


def _translate(img, m, s):
  return img.transform(img.size, Image.AFFINE, (1, 0, s * 0.45 * m / 10 * img.size[0], 0, 1, 0), Image.BILINEAR)


# name -> f(image, magnitude 0..10, sign +-1)
RAND_OPS = {
    'identity': lambda img, m, s: img,
    'autocontrast': lambda img, m, s: ImageOps.autocontrast(img),
    'equalize': lambda img, m, s: ImageOps.equalize(img),
    'rotate': _rotate,
    'solarize': lambda img, m, s: ImageOps.solarize(img, 256 - int(25.6 * m)),
    'color': lambda img, m, s: ImageEnhance.Color(img).enhance(1 + s * 0.09 * m),
    'posterize': lambda img, m, s: ImageOps.posterize(img, max(1, 8 - int(0.4 * m))),
    'contrast': lambda img, m, s: ImageEnhance.Contrast(img).enhance(1 + s * 0.09 * m),
    'brightness': lambda img, m, s: ImageEnhance.Brightness(img).enhance(1 + s * 0.09 * m),
    'sharpness': lambda img, m, s: ImageEnhance.Sharpness(img).enhance(1 + s * 0.09 * m),
    'shear_x': _shear,
    'translate_x': _translate,
}


def rand_augment(frames: np.ndarray, n: int, m: int, rng: np.random.Generator) -> np.ndarray:
  """n operations of magnitude m, chosen once and applied identically to every frame of the clip."""
  names = sorted(RAND_OPS)
  ops = [(RAND_OPS[names[int(rng.integers(len(names)))]], 1 if rng.random() < 0.5 else -1) for _ in range(n)]
  out = []
  for f in frames:
    img = Image.fromarray(f)
    for op, sign in ops:
      img = op(img, m, sign)
    out.append(np.asarray(img))
  return np.stack(out)


def random_resized_crop(frames: np.ndarray, size: int, scale, ratio, flip: bool, rng) -> np.ndarray:
  t, h, w, _ = frames.shape
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      break
  else:
    cw = ch = min(h, w)
  x0, y0 = int(rng.integers(w - cw + 1)), int(rng.integers(h - ch + 1))
  out = np.stack([np.asarray(Image.fromarray(f[y0:y0 + ch, x0:x0 + cw]).resize((size, size), Image.BILINEAR))
                  for f in frames])
  return out[:, :, ::-1] if flip and rng.random() < 0.5 else out


def random_erase(frames: np.ndarray, prob: float, rng) -> np.ndarray:
  """With probability prob, one box (2% to 33% of the area) of random pixels, the same in every frame."""
  if rng.random() >= prob:
    return frames
  t, h, w, _ = frames.shape
  for _ in range(10):
    area = h * w * rng.uniform(0.02, 1 / 3)
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3)))
    eh, ew = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
    if 0 < eh < h and 0 < ew < w:
      y0, x0 = int(rng.integers(h - eh)), int(rng.integers(w - ew))
      out = frames.copy()
      out[:, y0:y0 + eh, x0:x0 + ew] = rng.integers(0, 256, (eh, ew, 3), dtype=np.uint8)
      return out
  return frames


def random_window(num_frames: int, frames: int, stride: int, rng) -> np.ndarray:
  start = int(rng.integers(max(num_frames - records.window_span(frames, stride), 0) + 1))
  return np.minimum(start + np.arange(frames) * stride, num_frames - 1)


class ClipAugmenter:
  """global position g -> {'video': (R, T, S, S, 3) uint8, 'label': (R,) int32}."""

  def __init__(self, source, indices: np.ndarray, labels: np.ndarray, cfg: FinetuneInputConfig):
    self.source, self.indices, self.cfg = source, indices, cfg
    n = len(indices)
    if cfg.class_balanced:
      counts = np.bincount(labels, minlength=labels.max() + 1)
      self.weights = 1.0 / counts[labels]
      self.weights /= self.weights.sum()
    else:
      self.weights = None
    self.n = n
    self._epoch, self._order = None, None

  def record_index(self, g: int) -> int:
    epoch, pos = divmod(g, self.n)
    if epoch != self._epoch:  # one order per epoch, drawn once per process
      rng = np.random.default_rng((self.cfg.seed, 1, epoch))
      self._order = (rng.choice(self.n, self.n, p=self.weights) if self.weights is not None
                     else rng.permutation(self.n))
      self._epoch = epoch
    return int(self.indices[self._order[pos]])

  def __call__(self, g: int):
    cfg = self.cfg
    rng = np.random.default_rng((cfg.seed, 2, int(g)))
    rec = self.source[self.record_index(int(g))]
    idx = random_window(int(rec['num_frames']), cfg.frames, cfg.stride, rng)
    frames = records.decode_jpegs([rec['frames'][i] for i in idx])
    views = []
    for _ in range(cfg.num_repeats):
      v = random_resized_crop(frames, cfg.image_size, cfg.scale, cfg.ratio, cfg.flip, rng)
      v = rand_augment(v, cfg.randaug_n, cfg.randaug_m, rng)
      views.append(random_erase(v, cfg.erase_prob, rng))
    return {'video': np.stack(views), 'label': np.full(cfg.num_repeats, int(rec['label']), np.int32)}


def labelled_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """Indices of a seeded, class-stratified `fraction` of the clips, at least one of each class present."""
  rng = np.random.default_rng((seed, 3))
  keep = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    k = max(1, int(round(fraction * len(members))))
    keep.extend(rng.choice(members, k, replace=False).tolist())
  return np.sort(np.asarray(keep))


def make_dataset(source, indices: Sequence[int], labels: np.ndarray, cfg: FinetuneInputConfig,
                 process_index: int = 0, process_count: int = 1, start_batch: int = 0) -> grain.IterDataset:
  """As the pretraining pipeline's make_dataset: per-process host batches from global batch start_batch."""
  return stream.batches(ClipAugmenter(source, np.asarray(indices), np.asarray(labels), cfg),
                        global_batch=cfg.global_batch, num_repeats=cfg.num_repeats, process_index=process_index,
                        process_count=process_count, start_batch=start_batch, workers=cfg.workers,
                        micro_batches=cfg.micro_batches)


def read_labels(data_dir: str, config: str, split: str, source) -> np.ndarray:
  """Every clip's label, from the index the builder writes beside the records (no frames read); older
  builds without it are read record by record."""
  import glob  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  found = sorted(glob.glob(os.path.join(data_dir, 'imigue3k', config, '*', f'index-{split}.json')))
  if found:
    labels = np.asarray(json.load(open(found[-1]))['label'])
    if len(labels) == len(source):
      return labels
  return np.asarray([int(source[i]['label']) for i in range(len(source))])


# ---- Mixing clips, on the device inside the train step --------------------------------------------------

def mix(video, labels, key, num_classes: int, *, mixup: float, cutmix: float, smoothing: float,
        switch_prob: float = 0.5):
  """timm-style Mixup: per batch, mixup (Beta(mixup)) or cutmix (Beta(cutmix), one box for all frames),
  pairing each clip with the batch reversed; smoothed one-hot targets mixed with the same lambda."""
  off = smoothing / num_classes
  onehot = jax.nn.one_hot(labels, num_classes) * (1 - smoothing) + off
  if mixup <= 0 and cutmix <= 0:
    return video.astype(jnp.float32), onehot
  k1, k2, k3, k4 = jax.random.split(key, 4)
  use_cut = (jax.random.uniform(k1) < switch_prob) if (mixup > 0 and cutmix > 0) else jnp.asarray(cutmix > 0)
  lam_mix = jax.random.beta(k2, max(mixup, 1e-3), max(mixup, 1e-3))
  lam_cut = jax.random.beta(k3, max(cutmix, 1e-3), max(cutmix, 1e-3))
  x = video.astype(jnp.float32)
  other = x[::-1]
  _, _, h, w, _ = x.shape
  ch, cw = (jnp.sqrt(1 - lam_cut) * h).astype(jnp.int32), (jnp.sqrt(1 - lam_cut) * w).astype(jnp.int32)
  cy, cx = jax.random.randint(k4, (2,), 0, jnp.array([h, w]))
  y0, y1 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + ch // 2, 0, h)
  x0, x1 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + cw // 2, 0, w)
  ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  box = ((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1))[None, None, :, :, None]
  lam_box = 1 - ((y1 - y0) * (x1 - x0)) / (h * w)
  mixed = jnp.where(use_cut, jnp.where(box, other, x), lam_mix * x + (1 - lam_mix) * other)
  lam = jnp.where(use_cut, lam_box, lam_mix)
  return mixed, lam * onehot + (1 - lam) * onehot[::-1]
