"""Evaluators as plug-ins: one interface for every task, built from the config's list.

Every task module (`knn`, `linear_probe`, `retrieval`, `emotion`, `recognition`) defines

    Evaluator(clips, predict_fns, **cfg)
      .run(params)       -> iterator of (metric, value): what training logs every eval_every steps
      .evaluate(params)  -> the task's whole result, a JSON-able dict (its entry of results.json)
      .predictions       -> after evaluate: (predicted class, label, subject id) per test clip, or None

`clips` (a `Clips`) is the labelled clip records the task reads and their frozen features; `predict_fns`
maps 'features' to f(params, video) -> (B, D) pooled features, 'tokens' to f(params, video) -> (B, N, D)
the encoder's tokens and, for a classifier, 'logits' to f(params, video) -> (B, num_classes).
`build(config.evals, ...)` makes the evaluators a config lists:

    config.evals.knn = dict(type='knn', k=20, temperature=0.07)

both in `mgjax.evaluate` and, every `eval_every` steps, in the trainer (written as eval/NAME/METRIC).
"""

from __future__ import annotations

import importlib
from typing import Callable, Iterator, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from mgjax import errors
from mgjax.data import records
from mgjax.evals import features as features_lib

TYPES = ('knn', 'linear_probe', 'attentive_probe', 'retrieval', 'emotion', 'recognition', 'spotting')
SPLITS = ('train', 'test')


class Clips:
  """Labelled clip records (train and test splits) as evaluators read them: windows, metadata, the
  number of classes (from the dataset's metadata), the protocol, and per-clip outputs of a model.

  limit > 0 takes that many clips per split, evenly spaced over it, and keeps their decoded windows in
  memory: the fixed subset evaluated again and again during training. cache_dir keeps features on disk,
  keyed on cache_key (checkpoint, weights, sampling) and the split: the evaluation binary's cache.

  shard_processes: each process of a multi-process run computes a contiguous share of the clips, and
  the per-clip outputs are gathered to every process in the records' order (the evaluation binary).
  Without it every process computes every clip with the same inputs (training, whose predict functions
  are collectives over the sharded parameters).
  """

  def __init__(self, sources: dict, num_classes: int, *, frames: int, size: int, stride: int = 4,
               num_clips: int = 2, batch: int = 16, limit: int = 0, cache_dir: Optional[str] = None,
               cache_key: Optional[dict] = None, protocol: Optional[dict] = None,
               shard_processes: bool = False, data_dir: Optional[str] = None):
    self.sources, self.num_classes, self.protocol = sources, num_classes, protocol or {}
    self.data_dir = data_dir  # where the records are: evaluators of whole videos read its pretrain records
    self.frames, self.size, self.stride, self.num_clips, self.batch = frames, size, stride, num_clips, batch
    self.limit, self.cache_dir, self.cache_key = limit, cache_dir, cache_key
    self.shard = shard_processes and jax.process_count() > 1
    self._kept = {}  # (split, windows, crops) -> [(views, meta)] when limit > 0
    self._memo = (None, None)  # (params, features) of the last call

  @classmethod
  def from_records(cls, data_dir: str, name: str = 'clips', **kw) -> 'Clips':
    """The train and test splits of data_dir's `name` records, with the builder's protocol."""
    sources = {s: records.data_source(data_dir, name, s) for s in SPLITS}
    return cls(sources, records.num_classes(sources['train']), protocol=records.protocol(data_dir, name),
               data_dir=data_dir, **kw)

  def indices(self, split: str) -> np.ndarray:
    n = len(self.sources[split])
    if not self.limit or self.limit >= n:
      return np.arange(n)
    return np.unique(np.linspace(0, n - 1, self.limit).round().astype(int))

  def _share(self, idx: np.ndarray) -> tuple[np.ndarray, int]:
    """(this process's clips, padded to the same count on every process by repeating one, how many are
    its own): contiguous blocks, block p for process p."""
    if not self.shard:
      return idx, len(idx)
    per = -(-len(idx) // jax.process_count())
    mine = idx[jax.process_index() * per:(jax.process_index() + 1) * per]
    return np.concatenate([mine, np.repeat(idx[-1:], per - len(mine))]), len(mine)

  def _views(self, split: str, idx: np.ndarray, windows: int, crops: int):
    key = (split, windows, crops)
    if key in self._kept:
      yield from self._kept[key]
      return
    kept = [] if self.limit else None
    source = self.sources[split]
    for j in features_lib.progress(len(idx), f'{split} clips'):
      r = source[int(idx[j])]
      item = (features_lib.clip_views(r, self.frames, self.stride, windows, self.size, crops),
              features_lib.metadata(r))
      if kept is not None:
        kept.append(item)
      yield item
    if kept is not None:
      self._kept[key] = kept

  def per_clip(self, split: str, windows: int, crops: int, fn: Callable,
               reduce: str = 'mean') -> tuple[np.ndarray, dict]:
    """fn(uint8 views (V, frames, size, size, 3)) -> (V, ...) outputs, `batch` views at a time (the last
    batch padded, the padding dropped); per clip the mean over its windows * crops views (reduce='mean'),
    or their outputs joined along the first axis after the view (reduce='concat': tokens side by side).
    Returns (outputs (clips, ...) in the records' order, metadata {key: (clips,)}) of every clip of the split."""
    idx = self.indices(split)
    mine, own = self._share(idx)
    views_per_clip = windows * crops
    outs, metas, pending = [], [], []

    def flush():
      x = np.concatenate([v for v, _ in pending])
      pad = (-len(x)) % self.batch
      y = np.asarray(fn(np.concatenate([x, x[:pad]]) if pad else x))[:len(x)]
      for i in range(len(pending)):
        mine = y[i * views_per_clip:(i + 1) * views_per_clip]
        outs.append(mine.mean(0) if reduce == 'mean' else mine.reshape(-1, *mine.shape[2:]))
      metas.extend(m for _, m in pending)
      pending.clear()

    for item in self._views(split, mine, windows, crops):
      pending.append(item)
      if len(pending) * views_per_clip >= self.batch:
        flush()
    if pending:
      flush()
    out = np.stack(outs)
    if self.shard:  # every process's block, in order, without the padding
      blocks = multihost_utils.process_allgather(out)
      counts = multihost_utils.process_allgather(np.int32(own))
      out = np.concatenate([blocks[q][:counts[q]] for q in range(len(counts))])
      metas = [features_lib.metadata(self.sources[split][int(i)]) for i in idx]
    meta = {k: np.asarray([m[k] for m in metas[:len(idx)]]) for k in features_lib.META}
    return out, meta

  def features(self, feature_fn: Callable, params) -> dict:
    """{'train': ..., 'test': ...}, each {'features': (clips, D), 'label', 'video_id', 'emotion',
    'subject_id'}; computed once per params object (the evaluators of one evaluation share them)."""
    if self._memo[0] is params:
      return self._memo[1]
    out = {}
    for split in SPLITS:
      def compute(split=split):
        f, meta = self.per_clip(split, self.num_clips, 1, lambda v: feature_fn(params, v))
        return {'features': f.astype(np.float32), **meta}
      if self.cache_dir:
        out[split] = features_lib.cached(self.cache_dir, {**(self.cache_key or {}), 'split': split}, compute)
      else:
        out[split] = compute()
    self._memo = (params, out)
    return out


class Evaluator:
  """The common part: `run` yields the float entries of `evaluate`'s result (settings aside)."""

  predictions = None
  settings = ()  # float entries of the result that are settings, not measurements

  def evaluate(self, params) -> dict:
    raise NotImplementedError

  def run(self, params) -> Iterator[tuple[str, float]]:
    for k, v in self.evaluate(params).items():
      if isinstance(v, float) and k not in self.settings:
        yield k, v
      elif isinstance(v, dict) and k.startswith('from_'):  # emotion's two readouts
        yield from ((f'{k}/{kk}', vv) for kk, vv in v.items() if isinstance(vv, float))


def build(evals_config, clips: Clips, predict_fns: dict, names=None, **extra) -> dict:
  """{name: Evaluator} for config.evals (name -> dict(type=..., **its settings)), optionally only `names`;
  `extra` goes to every evaluator that takes it (workdir: where recognition writes its confusion matrix)."""
  out = {}
  for name in (names if names is not None else evals_config.keys()):
    if name not in evals_config:
      raise errors.ConfigError(f'config.evals has no evaluator {name!r}; '
                               f'it has {sorted(evals_config.keys())}')
    cfg = dict(evals_config[name])
    kind = cfg.pop('type', name)
    if kind not in TYPES:
      raise errors.ConfigError(f'config.evals.{name}.type: unknown evaluator {kind!r}; known: {TYPES}')
    cls = importlib.import_module(f'mgjax.evals.{kind}').Evaluator
    takes = getattr(cls, 'EXTRA', ())
    out[name] = cls(clips, predict_fns, **cfg, **{k: v for k, v in extra.items() if k in takes})
  return out
