"""grain pipeline for VideoMAE pretraining over the `pretrain` records.

    seeded global shuffle of the records, repeated (reshuffled each epoch)
      -> this process's slice of each global batch -> sample a window (quality-aware) -> decode once
      -> R augmented views + tube masks -> batch -> worker processes
      -> host batch {'video': uint8 (B, T, S, S, 3), 'mask': bool (B, N), or int8 with dual masking}

Every random choice comes from a generator seeded with (seed, global position), so the global stream is
the same for the same seed whatever the numbers of processes and workers, and resumes exactly from a
saved iterator state.
Pixels stay uint8 on the host; the model normalises them on the device (4x less to transfer).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import grain
import numpy as np
from PIL import Image

from mgjax.data import records
from mgjax.data import stream

MAX_TRIES = 64  # samples drawn before a chunk with no acceptable window gives up


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  frames: int = 16
  stride: int = 4
  sampling: str = 'quality'  # 'quality' or 'uniform' (the ablation)
  static_motion: float = 5e-5  # chunks with motion_energy below this are static ...
  static_keep: float = 0.1  # ... and kept with this probability ('quality' only)


def _resample_index(rng: np.random.Generator, n: int) -> int:
  return int(rng.integers(n))


class WindowSampler:
  """Chooses a window for a record index: the chunk where it starts and the offset in it.

  'quality': a static chunk (build-time motion energy below static_motion) is kept with probability
  static_keep, and a window never spans a shot cut; a chunk with no acceptable window is replaced by a
  random other chunk. 'uniform': any window that fits in the video.
  """

  def __init__(self, source, cfg: SamplingConfig):
    self.source, self.cfg = source, cfg
    self.span = records.window_span(cfg.frames, cfg.stride)

  def choose(self, index: int, rng: np.random.Generator):
    """Returns (records covering the window, offset in the first record)."""
    cfg = self.cfg
    for _ in range(MAX_TRIES):
      first = self.source[index]
      n_valid = records.valid_offsets(first, cfg.frames, cfg.stride)
      if n_valid == 0:
        index = _resample_index(rng, len(self.source))
        continue
      if cfg.sampling == 'uniform':
        offset = int(rng.integers(n_valid))
        return records.gather(self.source, index, offset + self.span, first), offset
      if float(first['motion_energy']) < cfg.static_motion and rng.random() >= cfg.static_keep:
        index = _resample_index(rng, len(self.source))
        continue
      recs = records.gather(self.source, index, n_valid - 1 + self.span, first)
      cuts = np.flatnonzero(records.concat(recs, 'cut'))  # cut at c: between frames c-1 and c
      offsets = np.arange(n_valid)
      # A window [o, o + span - 1] contains a cut c when o < c <= o + span - 1.
      ok = ~((cuts[None, :] > offsets[:, None]) & (cuts[None, :] <= offsets[:, None] + self.span - 1)).any(1)
      if ok.any():
        return recs, int(rng.choice(offsets[ok]))
      index = _resample_index(rng, len(self.source))
    raise RuntimeError(f'no acceptable window found in {MAX_TRIES} tries; are all chunks static or cut? '
                       f'Try sampling="uniform" or a lower static_motion.')


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  image_size: int = 224
  scales: tuple = (1.0, 0.875, 0.75, 0.66)  # multi-scale crop of the short side, as VideoMAE
  max_distort: int = 1  # crop width and height scales at most this many steps apart
  flip: bool = False  # the official pretraining recipe does not flip
  num_repeats: int = 1  # views per decoded clip (VideoMAEv2's repeated augmentation, num_sample)


def multiscale_crop_resize(frames: Sequence[Image.Image], cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
  """One crop (size from the scales, random position) for all frames (decoded PIL images,
  `records.open_jpegs`), resized to image_size square: uint8 (T, S, S, 3). Only the crop is ever copied
  out of a frame."""
  t, (w, h) = len(frames), frames[0].size
  base = min(h, w)
  sizes = [int(base * s) for s in cfg.scales]
  pairs = [(cw, ch) for i, ch in enumerate(sizes) for j, cw in enumerate(sizes) if abs(i - j) <= cfg.max_distort]
  cw, ch = pairs[int(rng.integers(len(pairs)))]
  x0, y0 = int(rng.integers(w - cw + 1)), int(rng.integers(h - ch + 1))
  flip = cfg.flip and rng.random() < 0.5
  out = np.empty((t, cfg.image_size, cfg.image_size, 3), np.uint8)
  for i, img in enumerate(frames):
    out[i] = np.asarray(img.crop((x0, y0, x0 + cw, y0 + ch)).resize((cfg.image_size, cfg.image_size),
                                                                    Image.BILINEAR))
  return out[:, :, ::-1] if flip else out


def tube_mask(rng: np.random.Generator, grid: tuple[int, int, int], ratio: float) -> np.ndarray:
  """bool (t*h*w,), True = masked: int(ratio * h * w) spatial positions, the same for every time slot."""
  t, h, w = grid
  spatial = np.zeros(h * w, bool)
  spatial[rng.permutation(h * w)[:int(ratio * h * w)]] = True
  return np.tile(spatial, t)


MASK_TYPES = ('tube', 'random')


def make_mask(rng: np.random.Generator, grid: tuple[int, int, int], ratio: float, kind: str = 'tube') -> np.ndarray:
  """bool (t*h*w,), True = masked. 'tube': `tube_mask`. 'random': as many masked tokens as tube masking
  (int(ratio * h * w) * t), anywhere in the clip (VideoMAE's ablation), so a position may be seen in one
  time slot and masked in another."""
  if kind == 'tube':
    return tube_mask(rng, grid, ratio)
  if kind == 'random':
    t, h, w = grid
    out = np.zeros(t * h * w, bool)
    out[rng.permutation(t * h * w)[:int(ratio * h * w) * t]] = True
    return out
  raise ValueError(f'unknown mask_type {kind!r}; known: {MASK_TYPES}')


def running_cell(grid: tuple[int, int, int], ratio: float, start: int) -> np.ndarray:
  """bool (t*h*w,), True = left out by the decoder: VideoMAE V2's running-cell mask. In every 2 x 2 cell,
  int(4 * ratio) of the 4 positions (taken in the order top-left, top-right, bottom-right, bottom-left),
  the window moving on by one position every time slot, from position `start`."""
  t, h, w = grid
  ring = np.array([(0, 0), (0, 1), (1, 1), (1, 0)])
  k = int(4 * ratio)
  out = np.zeros((t, h + 1, w + 1), bool)  # padded to whole cells, cut below
  for s in range(t):
    for r, c in ring[(start + s + np.arange(k)) % 4]:
      out[s, r::2, c::2] = True
  return out[:, :h, :w].reshape(-1)


def dual_mask(rng: np.random.Generator, mask: np.ndarray, grid: tuple[int, int, int], ratio: float,
              num_decoded: int) -> np.ndarray:
  """Dual masking (VideoMAE V2): int8 (t*h*w,), 0 = seen by the encoder (mask False), 1 = masked and
  decoded, 2 = masked and left out of the decoder. Exactly `num_decoded` tokens are 1, in every time slot
  alike where the encoder mask allows: the masked tokens a running-cell mask of `ratio` keeps for the
  decoder (`running_cell`, random start) come first, the others after, each group in random order."""
  t = grid[0]
  keep = ~running_cell(grid, ratio, int(rng.integers(4)))
  out = mask.astype(np.int8) * 2
  per_slot = mask.reshape(t, -1).sum(axis=1)
  rank = rng.permutation(mask.size)  # random tie-break
  order = np.lexsort((rank, ~keep, ~mask))  # masked and kept first, then masked, then visible
  if per_slot.min() == per_slot.max() and num_decoded % t == 0:  # tube: the same count in every slot
    slot = order // (mask.size // t)
    chosen = np.concatenate([order[slot == s][:num_decoded // t] for s in range(t)])
  else:
    chosen = order[:num_decoded]
  out[chosen] = 1
  return out


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  data_dir: str
  config: str = 'pretrain'
  split: str = 'train'
  seed: int = 0
  global_batch: int = 32
  micro_batches: int = 1  # host batches laid out as stream.batches says
  sampling: SamplingConfig = SamplingConfig()
  augment: AugmentConfig = AugmentConfig()
  grid: tuple = (8, 14, 14)  # token grid of the model: (frames / tubelet, size / patch, size / patch)
  mask_ratio: float = 0.9
  mask_type: str = 'tube'
  decoder_mask_ratio: float = 0.0  # dual masking: `dual_mask` with this ratio when above 0
  num_decoded: int = 0  # the masked tokens the decoder reconstructs (ModelConfig.num_decoded)
  workers: int = 0  # grain worker processes; 0: in this process
  prefetch: int = 2  # batches buffered per worker


class ClipMaker:
  """Global position g -> {'video': (R, T, S, S, 3) uint8, 'mask': (R, N) bool}: one decode, R views.

  The record comes from the global shuffled order, and every random choice from a generator seeded with
  (seed, g): a clip depends on its position in the global stream only, never on which process or worker
  makes it.
  """

  def __init__(self, source, cfg: PipelineConfig):
    self.sampler = WindowSampler(source, cfg.sampling)
    self.order = grain.MapDataset.range(len(source)).seed(cfg.seed).shuffle().repeat(None)
    self.cfg = cfg

  def __call__(self, g: int):
    cfg, s = self.cfg, self.cfg.sampling
    rng = np.random.default_rng((cfg.seed, int(g)))
    recs, offset = self.sampler.choose(int(self.order[int(g)]), rng)
    frames = records.open_jpegs(records.window_jpegs(recs, offset, s.frames, s.stride))
    views = [multiscale_crop_resize(frames, cfg.augment, rng) for _ in range(cfg.augment.num_repeats)]
    masks = [make_mask(rng, cfg.grid, cfg.mask_ratio, cfg.mask_type) for _ in range(cfg.augment.num_repeats)]
    if cfg.decoder_mask_ratio:
      masks = [dual_mask(rng, m, cfg.grid, cfg.decoder_mask_ratio, cfg.num_decoded) for m in masks]
    return {'video': np.stack(views), 'mask': np.stack(masks)}


def make_dataset(cfg: PipelineConfig, process_index: int = 0, process_count: int = 1,
                 source=None, start_batch: int = 0) -> grain.IterDataset:
  """The per-process stream of host batches of global_batch / process_count clips, from global batch
  `start_batch` on (a batch depends on its index only, so a run resumed with another number of processes
  or workers, whose saved iterator state does not fit, continues with the batches it would have had)."""
  if source is None:
    source = records.data_source(cfg.data_dir, cfg.config, cfg.split)
  return stream.batches(ClipMaker(source, cfg), global_batch=cfg.global_batch,
                        num_repeats=cfg.augment.num_repeats, process_index=process_index,
                        process_count=process_count, start_batch=start_batch, workers=cfg.workers,
                        micro_batches=cfg.micro_batches, prefetch=cfg.prefetch)
